package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
	"github.com/comfyui-auth/comfyui-auth/middleware"
)

const onePrompt = `{"prompt":{"1":{"class_type":"X","inputs":{}}}}`

// shareGateway runs a gateway with --max-queued-prompts max, guests on and
// a state directory, before a fake ComfyUI whose queue moves only when the
// test calls Advance.
func shareGateway(t *testing.T, max int, multiUser bool) *gateway {
	t.Helper()
	content := lowCostHash(t, muToken)
	stateDir := t.TempDir()
	return startGateway(t, gatewayOpts{hashContent: &content,
		fake: fakecomfy.Options{HoldQueue: true, MultiUser: multiUser},
		configure: func(c *Config) {
			c.MaxQueuedPrompts = max
			c.ComfyMultiUser = multiUser
			c.GuestMode = true
			c.StateDir = stateDir
		}})
}

// prompt posts body to path as the holder of the credential lines
// (headers) and returns the status and the code of a refusal.
func (g *gateway) prompt(t *testing.T, path, body string, headers ...string) (int, middleware.RefusalCode) {
	t.Helper()
	resp := g.do(t, "POST", path, []byte(body), append(headers, "Content-Type: application/json", "Origin: "+g.URL)...)
	b, _ := io.ReadAll(resp.Body)
	var m struct {
		Code middleware.RefusalCode `json:"code"`
	}
	if resp.StatusCode != 200 {
		_ = json.Unmarshal(b, &m)
		if resp.StatusCode == 429 && resp.Header.Get("Retry-After") == "" {
			t.Errorf("429 without Retry-After: %s", b)
		}
	}
	return resp.StatusCode, m.Code
}

// queued reads ComfyUI's queue straight from the fake: each item's prompt
// id and extra_data, running first.
func queued(t *testing.T, g *gateway) []queueItem {
	t.Helper()
	resp, err := http.Get(g.Upstream.URL + "/queue")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var q map[string][][]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&q); err != nil {
		t.Fatal(err)
	}
	var out []queueItem
	for _, k := range []string{"queue_running", "queue_pending"} {
		for _, it := range q[k] {
			var item queueItem
			_ = json.Unmarshal(it[1], &item.id)
			_ = json.Unmarshal(it[3], &item.extra)
			out = append(out, item)
		}
	}
	return out
}

type queueItem struct {
	id    string
	extra map[string]json.RawMessage
}

// TestQueueShareStopsAUserAtTheirShareOnly: with --max-queued-prompts 2 a
// user's third prompt is refused 429 queue_share while two are pending or
// running, on /prompt and /api/prompt alike; other users queue on; guests
// share one count; a prompt finishing frees a place. With and without
// --comfy-multi-user.
func TestQueueShareStopsAUserAtTheirShareOnly(t *testing.T) {
	for _, multiUser := range []bool{false, true} {
		t.Run(map[bool]string{false: "single", true: "multi-user"}[multiUser], func(t *testing.T) {
			g := shareGateway(t, 2, multiUser)
			for i := 0; i < 2; i++ {
				if st, code := g.prompt(t, "/prompt", onePrompt, bearer); st != 200 {
					t.Fatalf("prompt %d: %d %s", i+1, st, code)
				}
			}
			for _, p := range []string{"/prompt", "/api/prompt"} {
				if st, code := g.prompt(t, p, onePrompt, bearer); st != 429 || code != middleware.CodeQueueShare {
					t.Fatalf("third prompt on %s: %d %q, want 429 queue_share", p, st, code)
				}
			}
			guest := guestCookie(t, g)
			for i := 0; i < 2; i++ {
				if st, code := g.prompt(t, "/api/prompt", onePrompt, guest); st != 200 {
					t.Fatalf("guest prompt %d while the bare user is at their share: %d %s", i+1, st, code)
				}
			}
			if st, code := g.prompt(t, "/prompt", onePrompt, guestCookie(t, g)); st != 429 || code != middleware.CodeQueueShare {
				t.Fatalf("another guest's prompt: %d %q, want 429: guests share one count", st, code)
			}
			g.Fake.Advance() // the bare user's first runs: still two
			if st, _ := g.prompt(t, "/prompt", onePrompt, bearer); st != 429 {
				t.Fatalf("while the first runs: %d, want 429", st)
			}
			g.Fake.Advance() // the first is done
			if st, code := g.prompt(t, "/prompt", onePrompt, bearer); st != 200 {
				t.Fatalf("after one finished: %d %s", st, code)
			}
			// The bare user's second (running), two guests', its third.
			if len(queued(t, g)) != 4 {
				t.Fatalf("ComfyUI's queue: %v", queued(t, g))
			}
		})
	}
}

// TestQueueShareCountsPromptsQueuedBeforeARestart: the count is read from
// ComfyUI's queue and the tags' key lives in the state directory, so a
// restarted gateway still counts the prompts queued before it stopped.
func TestQueueShareCountsPromptsQueuedBeforeARestart(t *testing.T) {
	g := shareGateway(t, 2, false)
	for i := 0; i < 2; i++ {
		if st, code := g.prompt(t, "/prompt", onePrompt, bearer); st != 200 {
			t.Fatalf("prompt %d: %d %s", i+1, st, code)
		}
	}
	g.Stop()
	again := startGateway(t, gatewayOpts{hashContent: ptr(""), configure: func(c *Config) {
		*c = g.Server.cfg
		c.Listen = "127.0.0.1:0"
	}})
	if st, code := again.prompt(t, "/prompt", onePrompt, bearer); st != 429 || code != middleware.CodeQueueShare {
		t.Fatalf("after the restart: %d %q, want 429 queue_share", st, code)
	}
}

// TestForgedQueueTagsCountForNoOne: a client's own comfyui_auth in
// extra_data is replaced by the gateway's, so it can neither charge
// another user nor hide its prompt; and tags that reach ComfyUI's queue
// without the gateway (copied from another prompt, or made up) verify for
// no one.
func TestForgedQueueTagsCountForNoOne(t *testing.T) {
	g := shareGateway(t, 2, false)
	if st, code := g.prompt(t, "/prompt", onePrompt, bearer); st != 200 {
		t.Fatalf("first: %d %s", st, code)
	}
	items := queued(t, g)
	if len(items) != 1 {
		t.Fatalf("queue: %v", items)
	}
	realTag, realID := items[0].extra[middleware.QueueTagKey], items[0].id
	var tag struct{ User, MAC string }
	if json.Unmarshal(realTag, &tag) != nil || tag.User != middleware.UserDefault || tag.MAC == "" {
		t.Fatalf("tag %s", realTag)
	}

	// Against the bare user: prompts in ComfyUI's queue, not sent through
	// the gateway, carrying a copy of its tag under new ids, its own id
	// again, and a made-up tag.
	for _, body := range []string{
		`{"prompt":{"1":{"class_type":"X"}},"extra_data":{"comfyui_auth":` + string(realTag) + `}}`,
		`{"prompt":{"1":{"class_type":"X"}},"prompt_id":"` + realID + `","extra_data":{"comfyui_auth":` + string(realTag) + `}}`,
		`{"prompt":{"1":{"class_type":"X"}},"extra_data":{"comfyui_auth":{"user":"default","mac":"00000000000000000000000000000000"}}}`,
	} {
		resp, err := http.Post(g.Upstream.URL+"/prompt", "application/json", strings.NewReader(body))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("straight to ComfyUI: %v %v", err, resp)
		}
		resp.Body.Close()
	}
	if st, code := g.prompt(t, "/prompt", onePrompt, bearer); st != 200 {
		t.Fatalf("second prompt with forged ones in the queue: %d %s, want 200 (the forgeries count for no one)", st, code)
	}
	if st, _ := g.prompt(t, "/prompt", onePrompt, bearer); st != 429 {
		t.Fatalf("third: %d, want 429", st)
	}

	// For the guest: a guest's prompts naming the bare user in their tag
	// still count as the guest's.
	guest := guestCookie(t, g)
	forged := `{"prompt":{"1":{"class_type":"X"}},"extra_data":{"comfyui_auth":` + string(realTag) + `}}`
	for i := 0; i < 2; i++ {
		if st, code := g.prompt(t, "/prompt", forged, guest); st != 200 {
			t.Fatalf("guest %d: %d %s", i, st, code)
		}
	}
	if st, code := g.prompt(t, "/prompt", forged, guest); st != 429 || code != middleware.CodeQueueShare {
		t.Fatalf("guest's third: %d %q: a forged tag let it past its share", st, code)
	}
	items = queued(t, g)
	if len(items) != 7 {
		t.Fatalf("queue holds %d prompts, want 7", len(items))
	}
	for _, it := range items[5:] {
		if !bytes.Contains(it.extra[middleware.QueueTagKey], []byte(`"user":"guest"`)) {
			t.Errorf("guest's prompt went to ComfyUI tagged %s", it.extra[middleware.QueueTagKey])
		}
	}
}

// TestSimultaneousPromptsPassOneAtATime: a user one prompt short of their
// share sends several at once; exactly one is queued.
func TestSimultaneousPromptsPassOneAtATime(t *testing.T) {
	g := shareGateway(t, 2, false)
	if st, _ := g.prompt(t, "/prompt", onePrompt, bearer); st != 200 {
		t.Fatal("first prompt refused")
	}
	const n = 8
	var wg sync.WaitGroup
	statuses := make(chan int, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", g.URL+"/prompt", strings.NewReader(onePrompt))
			req.Header.Set("Authorization", "Bearer "+muToken)
			req.Header.Set("Content-Type", "application/json")
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(statuses)
	passed := 0
	for st := range statuses {
		switch st {
		case 200:
			passed++
		case 429:
		default:
			t.Errorf("status %d", st)
		}
	}
	if passed != 1 || len(queued(t, g)) != 2 {
		t.Fatalf("%d of %d simultaneous prompts passed, queue holds %d; want 1 and 2", passed, n, len(queued(t, g)))
	}
}

// TestQueueSharePromptRewriting: the client's prompt_id is kept, one is
// set when missing, other keys keep their bytes, and a body the gateway
// cannot tag (not an object, or a prompt_id over MaxPromptIDBytes) is
// refused rather than passed on untagged.
func TestQueueSharePromptRewriting(t *testing.T) {
	g := shareGateway(t, 5, false)
	if st, _ := g.prompt(t, "/prompt", `{"prompt":{"1":{"class_type":"X"}},"prompt_id":"mine","client_id":"c1","extra_data":{"x":"kept"}}`, bearer); st != 200 {
		t.Fatal("refused")
	}
	it := queued(t, g)[0]
	if it.id != "mine" || string(it.extra["x"]) != `"kept"` || string(it.extra["client_id"]) != `"c1"` || it.extra[middleware.QueueTagKey] == nil {
		t.Fatalf("ComfyUI got id %q extra %v", it.id, it.extra)
	}
	// A prompt_id over 256 bytes would be longer than the queue's reader
	// reads an id, so its prompt would count for no one: refused.
	longID := `{"prompt":{"1":{"class_type":"X"}},"prompt_id":"` + strings.Repeat("i", middleware.MaxPromptIDBytes+1) + `"}`
	for _, body := range []string{`not json`, `{"prompt":{},"extra_data":"x"}`, `[1]`, `{"a":1} {}`, longID} {
		if st, code := g.prompt(t, "/prompt", body, bearer); st != 400 || code != middleware.CodePromptUnreadable {
			t.Errorf("%s: %d %q, want 400 prompt_unreadable", body, st, code)
		}
	}
	if n := len(queued(t, g)); n != 1 {
		t.Fatalf("refused prompts reached ComfyUI: %d queued", n)
	}
}

func TestCountQueued(t *testing.T) {
	key := []byte("k")
	tagged := func(user, id string) string {
		out, err := middleware.TagPrompt([]byte(`{"prompt":{},"prompt_id":"`+id+`"}`), key, user)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		_ = json.Unmarshal(out, &m)
		return `[1,"` + id + `",{},` + string(m["extra_data"]) + `,[]]`
	}
	raw := `{"queue_running":[` + tagged("a", "p1") + `],"queue_pending":[` + tagged("a", "p2") + `,` + tagged("a", "p2") + `,` +
		tagged("b", "p3") + `,[2,"p4",{},{},[]],[3,"p5",{},{"comfyui_auth":{"user":"b","mac":"x"}},[]]]}`
	counts, err := middleware.CountQueued(strings.NewReader(raw), key)
	if err != nil || counts["a"] != 2 || counts["b"] != 1 || len(counts) != 2 {
		t.Fatalf("%v %v", counts, err)
	}
	if c, _ := middleware.CountQueued(strings.NewReader(raw), []byte("other key")); len(c) != 0 {
		t.Fatalf("another key's tags counted: %v", c)
	}
	if _, err := middleware.CountQueued(strings.NewReader(`{"queue_running":[]}`), key); err == nil {
		t.Fatal("an answer without queue_pending was read as a queue")
	}
}
