package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
	"github.com/comfyui-auth/comfyui-auth/middleware"
)

// outputFile is one file a history entry's outputs list.
type outputFile struct{ Filename, Subfolder, Type string }

func (f outputFile) query() string {
	return url.Values{"filename": {f.Filename}, "subfolder": {f.Subfolder}, "type": {f.Type}}.Encode()
}

// runAll advances the held queue until every id is in ComfyUI's history.
func (c class) runAll(t *testing.T, ids ...string) {
	t.Helper()
	for i := 0; i < 4*len(ids)+2; i++ {
		done := true
		for _, id := range ids {
			done = done && c.Fake.HasHistory(id)
		}
		if done {
			return
		}
		c.Fake.Advance()
	}
	t.Fatalf("prompts %v did not all reach history", ids)
}

// outputsOf are the files prompt id's history entry lists, read from
// ComfyUI itself.
func (c class) outputsOf(t *testing.T, id string) []outputFile {
	t.Helper()
	resp, err := http.Get(c.Upstream.URL + "/history/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h map[string]struct {
		Outputs map[string]map[string][]outputFile `json:"outputs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	var out []outputFile
	for _, node := range h[id].Outputs {
		out = append(out, node["images"]...)
	}
	if len(out) == 0 {
		t.Fatalf("prompt %s has no outputs", id)
	}
	return out
}

// queueImage queues EmptyImage into output node (SaveImage with prefix,
// or PreviewImage when prefix is "") as who.
func (c class) queueImage(t *testing.T, who, prefix string) string {
	t.Helper()
	out := `{"class_type":"PreviewImage","inputs":{"images":["1",0]}}`
	if prefix != "" {
		out = `{"class_type":"SaveImage","inputs":{"images":["1",0],"filename_prefix":"` + prefix + `"}}`
	}
	st, b := c.post(t, "/prompt", `{"prompt":{"1":{"class_type":"EmptyImage","inputs":{"width":8,"height":8,"batch_size":1,"color":0}},"2":`+out+`}}`, who)
	var m struct {
		PromptID string `json:"prompt_id"`
	}
	if st != 200 || json.Unmarshal([]byte(b), &m) != nil || m.PromptID == "" {
		t.Fatalf("queue %s: %d %s", prefix, st, b)
	}
	return m.PromptID
}

// view asks for path?query as who and returns the status, the refusal
// code (if any) and the body.
func (c class) view(t *testing.T, method, pathAndQuery, who string) (int, middleware.RefusalCode, []byte) {
	t.Helper()
	resp := c.do(t, method, pathAndQuery, nil, who)
	b, _ := io.ReadAll(resp.Body)
	var code middleware.RefusalCode
	if method != "HEAD" && resp.StatusCode >= 400 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		code = refusalCode(t, "application/json", b)
	}
	return resp.StatusCode, code, b
}

// try is view for many goroutines: "status code" or the error.
func (c class) try(method, pathAndQuery, who string) string {
	req, err := http.NewRequest(method, c.URL+pathAndQuery, nil)
	if err != nil {
		return err.Error()
	}
	k, v, _ := strings.Cut(who, ":")
	req.Header.Set(k, strings.TrimSpace(v))
	resp, err := noRedirect.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(b, &body)
	return strings.TrimSpace(fmt.Sprint(resp.StatusCode, " ", body.Code))
}

var pngMagic = []byte("\x89PNG\r\n\x1a\n")

// TestStudentsViewOnlyTheirOwnOutputs: with prompts tagged per user, GET
// and HEAD /view (and /api/view) serve a named user or a guest the output
// and temp files of their own prompts only; another user's answer 404
// not_your_output, the same as a file that does not exist; the operator
// views all. Input files stay shared.
func TestStudentsViewOnlyTheirOwnOutputs(t *testing.T) {
	for _, mode := range classModes {
		t.Run(mode.name, func(t *testing.T) {
			c := startClass(t, mode.configure)
			a1 := c.queue(t, c.alice, "A") // the generic node: ComfyUI_NNNNN_.png
			a2 := c.queueImage(t, c.alice, "alice/pic")
			b1 := c.queueImage(t, c.bob, "bob/pic")
			g1 := c.queueImage(t, c.guest, "") // PreviewImage: a temp file
			c.runAll(t, a1, a2, b1, g1)
			owned := map[string][]outputFile{
				c.alice: append(c.outputsOf(t, a1), c.outputsOf(t, a2)...),
				c.bob:   c.outputsOf(t, b1),
				c.guest: c.outputsOf(t, g1),
			}
			if g := owned[c.guest][0]; g.Type != "temp" {
				t.Fatalf("the guest's PreviewImage made %+v, want a temp file", g)
			}
			// No one has read /history through the gateway: the first view
			// of each file is a miss the gateway answers from ComfyUI.
			for owner, files := range owned {
				for _, f := range files {
					for _, who := range []string{c.alice, c.bob, c.guest, c.operator} {
						for _, p := range []string{"/view?", "/api/view?"} {
							for _, method := range []string{"GET", "HEAD"} {
								st, code, body := c.view(t, method, p+f.query(), who)
								mine := who == owner || who == c.operator
								switch {
								case mine && (st != 200 || method == "GET" && !bytes.HasPrefix(body, pngMagic)):
									t.Errorf("%s %s%s by its owner or the operator: %d %.60q", method, p, f.query(), st, body)
								case !mine && (st != 404 || method == "GET" && code != middleware.CodeNotYourOutput):
									t.Errorf("%s %s%s by another user: %d %q %.60q, want 404 %s", method, p, f.query(), st, code, body, middleware.CodeNotYourOutput)
								}
							}
						}
					}
				}
			}
			// Uploads (type input) are everyone's, as /object_info lists them.
			if st, _, _ := c.view(t, "GET", "/view?filename=size-100.png&type=input", c.bob); st != 200 {
				t.Errorf("an input file: %d, want 200", st)
			}
		})
	}
}

// TestViewTricksDoNotReachAnotherUsersOutput: spellings of a /view query
// that ComfyUI resolves to alice's file (a subfolder through bob's own, a
// filename with a path, the "[output]" annotation under type=input, a
// `;` ComfyUI's parser may split on, another case, percent-escapes, an
// escaped path) are refused to bob; ComfyUI is asked for the file the
// gateway checked, spelt as the gateway spells it.
func TestViewTricksDoNotReachAnotherUsersOutput(t *testing.T) {
	c := startClass(t, func(cfg *Config) { cfg.ComfyMultiUser = true })
	a1 := c.queue(t, c.alice, "A")
	a2 := c.queueImage(t, c.alice, "alice/pic")
	b1 := c.queueImage(t, c.bob, "bob/pic")
	c.runAll(t, a1, a2, b1)
	aRoot, aSub, bSub := c.outputsOf(t, a1)[0], c.outputsOf(t, a2)[0], c.outputsOf(t, b1)[0]
	if aRoot.Subfolder != "" || aSub.Subfolder != "alice" || bSub.Subfolder != "bob" || aSub.Filename != bSub.Filename {
		t.Fatalf("outputs %+v %+v %+v, want alice's in the root and alice/, bob's under the same name in bob/", aRoot, aSub, bSub)
	}
	var tricks []string
	for _, q := range []string{
		"filename=" + aRoot.Filename,
		"filename=" + aRoot.Filename + "&type=output&subfolder=",
		"filename=" + aRoot.Filename + "&subfolder=bob/..",
		"filename=" + aRoot.Filename + "&subfolder=bob%2F..",
		"filename=" + aRoot.Filename + "&subfolder=..",
		"filename=" + aRoot.Filename + "&subfolder=.",
		"filename=" + aRoot.Filename + "&subfolder=./",
		"filename=bob/" + aRoot.Filename,
		"filename=bob%2F" + aRoot.Filename,
		"filename=../" + aRoot.Filename + "&subfolder=bob",
		"filename=..%2F" + aRoot.Filename + "&subfolder=bob",
		"filename=" + url.QueryEscape(aRoot.Filename+" [output]") + "&type=input",
		"filename=" + url.QueryEscape(aRoot.Filename+" [output]") + "&type=temp",
		"type=input;type=output&filename=" + aRoot.Filename,
		"filename=size-1.png&type=input;filename=" + aRoot.Filename,
		"filename=" + strings.ToLower(aRoot.Filename),
		"filename=" + strings.ToUpper(aRoot.Filename),
		"filename=" + strings.Replace(aRoot.Filename, "C", "%43", 1),
		"filename=" + aRoot.Filename + "&filename=" + bSub.Filename + "&subfolder=bob",
		"filename=" + aSub.Filename + "&subfolder=bob/../alice",
		"filename=" + aSub.Filename + "&subfolder=alice/",
		"filename=" + aSub.Filename + "&subfolder=%2Fabs%2Foutput%2Falice",
		"filename=alice%2F" + aSub.Filename + "&subfolder=bob%2F..",
		"filename=" + aSub.Filename + "&subfolder=alice%00",
		"filename=%ff" + aSub.Filename + "&subfolder=alice",
		"filename=%zz" + aSub.Filename + "&subfolder=alice",
	} {
		for _, p := range []string{"/view?", "/api/view?", "/api/vi%65w?"} {
			tricks = append(tricks, p+q)
		}
	}
	// At once: misses of names the index does not know wait for a whole
	// read, and share it.
	answers := make([]string, len(tricks))
	var wg sync.WaitGroup
	for i, pq := range tricks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = c.try("GET", pq, c.bob)
		}()
	}
	wg.Wait()
	for i, got := range answers {
		if want := "404 " + string(middleware.CodeNotYourOutput); got != want {
			t.Errorf("bob: GET %s: %s, want %s", tricks[i], got, want)
		}
	}
	// Bob's own file, in spellings ComfyUI resolves to it, reaches
	// ComfyUI as one plain query.
	for _, q := range []string{
		"filename=" + bSub.Filename + "&subfolder=bob/.",
		"filename=x/" + bSub.Filename + "&subfolder=./bob&preview=webp;90",
		"filename=" + bSub.Filename + "&subfolder=bob&filename=" + aRoot.Filename,
		"filename=" + bSub.Filename + "&subfolder=bob&subfolder=alice",
		"filename=" + url.QueryEscape(bSub.Filename+" [output]") + "&type=input&subfolder=bob",
	} {
		st, code, body := c.view(t, "GET", "/view?"+q, c.bob)
		if st != 200 || !bytes.HasPrefix(body, pngMagic) {
			t.Errorf("bob's own file as %s: %d %q %.60q", q, st, code, body)
			continue
		}
		got, _ := c.Fake.LastRequest("/view")
		v, err := url.ParseQuery(got.RawQuery)
		if err != nil || len(v["filename"]) != 1 || v.Get("filename") != bSub.Filename || v.Get("subfolder") != "bob" || v.Get("type") != "output" {
			t.Errorf("bob's own file as %s reached ComfyUI as %q", q, got.RawQuery)
		}
	}
}

// TestViewIsSharedWithoutOwnPrompts: without --comfy-multi-user or
// --max-queued-prompts the gateway does not tag prompts, and /view is
// ComfyUI's: every logged-in user views every output.
func TestViewIsSharedWithoutOwnPrompts(t *testing.T) {
	c := startClass(t, func(*Config) {})
	a1 := c.queue(t, c.alice, "A")
	c.runAll(t, a1)
	f := c.outputsOf(t, a1)[0]
	for _, who := range []string{c.alice, c.bob, c.operator} {
		if st, code, _ := c.view(t, "GET", "/view?"+f.query(), who); st != 200 {
			t.Errorf("without own prompts: %d %s, want 200", st, code)
		}
	}
}

// historyReads counts the GET /history requests ComfyUI got from the
// gateway itself (clients here use /api/history): of its newest entries
// (max_items) and of all of it.
func historyReads(g *gateway) (recent, full int) {
	for _, r := range g.Fake.Requests() {
		if r.Method == "GET" && r.Path == "/history" {
			if strings.Contains(r.RawQuery, "max_items=") {
				recent++
			} else {
				full++
			}
		}
	}
	return recent, full
}

// TestViewChecksCostBoundedHistoryReads: a page of a user's own outputs
// costs ComfyUI one read of its newest history entries, then none; many
// /view misses at once share reads (at most one of each kind in flight,
// and whole reads at least FullHistoryGap apart).
func TestViewChecksCostBoundedHistoryReads(t *testing.T) {
	var holding atomic.Bool
	gate := make(chan struct{})
	c := startClass(t, func(cfg *Config) { cfg.ComfyMultiUser = true }, func(o *fakecomfy.Options) {
		o.Delay = func(r *http.Request) time.Duration {
			if holding.Load() && r.URL.Path == "/history" {
				select {
				case <-gate:
				case <-r.Context().Done():
				}
			}
			return 0
		}
	})
	a1 := c.queueImage(t, c.alice, "page")
	c.runAll(t, a1)
	f := c.outputsOf(t, a1)[0]
	for i := 0; i < 100; i++ {
		if st, code, _ := c.view(t, "GET", "/view?"+f.query()+fmt.Sprintf("&rand=%d", i), c.alice); st != 200 {
			t.Fatalf("alice's view %d: %d %s", i, st, code)
		}
	}
	if recent, full := historyReads(c.gateway); recent != 1 || full != 0 {
		t.Fatalf("100 views of one own file read ComfyUI's history %d times (newest entries) and %d times (whole), want 1 and 0", recent, full)
	}
	// The frontend reads its history (the queue sidebar) before it shows
	// the images: the gateway learns them from that answer.
	a2 := c.queueImage(t, c.alice, "page")
	c.runAll(t, a2)
	f2 := c.outputsOf(t, a2)[0]
	c.get(t, "/api/history?max_items=64", c.alice)
	for i := 0; i < 50; i++ {
		if st, code, _ := c.view(t, "GET", "/api/view?"+f2.query(), c.alice); st != 200 {
			t.Fatalf("alice's view %d of her new file: %d %s", i, st, code)
		}
	}
	if recent, full := historyReads(c.gateway); recent != 1 || full != 0 {
		t.Fatalf("after alice's history view, 50 views of the file it lists made the gateway read ComfyUI's history: %d and %d reads in all, want still 1 and 0", recent, full)
	}

	// Misses at once: all arrive while the first read is held.
	const n = 40
	holding.Store(true)
	start := time.Now()
	var wg sync.WaitGroup
	statuses := make(chan string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses <- c.try("GET", fmt.Sprintf("/view?filename=ComfyUI_%05d_.png", 90000+i), c.bob)
		}()
	}
	eventually(t, 30*time.Second, "every miss waits for a history read", func() bool { return c.Server.outputOwners.Waiting() == n })
	close(gate)
	wg.Wait()
	elapsed := time.Since(start)
	close(statuses)
	for st := range statuses {
		if st != "404 "+string(middleware.CodeNotYourOutput) {
			t.Fatalf("bob's guess: %s, want 404 %s", st, middleware.CodeNotYourOutput)
		}
	}
	recent, full := historyReads(c.gateway)
	recent--
	if maxFull := 1 + int(elapsed/middleware.FullHistoryGap); recent > 2 || full > maxFull {
		t.Fatalf("%d misses at once read the newest entries %d times (want at most 2) and the whole history %d times in %s (want at most %d)",
			n, recent, full, elapsed, maxFull)
	}
	t.Logf("%d misses at once: %d reads of the newest entries, %d whole reads, in %s", n, recent, full, elapsed)
}

// TestOwnOutputOfARunningPromptIsServedWhenItFinishes: the frontend asks
// for a node's image as soon as the node ran, before its prompt is in
// ComfyUI's history; while the caller's prompt runs the view waits for
// it (up to RunningOutputWait) and then serves it. Another user asking
// for that name meanwhile gets the 404 without waiting on alice's prompt.
func TestOwnOutputOfARunningPromptIsServedWhenItFinishes(t *testing.T) {
	c := startClass(t, func(cfg *Config) { cfg.ComfyMultiUser = true })
	id := c.queueImage(t, c.alice, "alice/live")
	if c.Fake.Advance() != id {
		t.Fatal("alice's prompt does not run")
	}
	// The name SaveImage will give it; the file does not exist yet.
	q := "/view?filename=live_00001_.png&subfolder=alice&type=output"
	if got := c.try("GET", q, c.bob); got != "404 "+string(middleware.CodeNotYourOutput) {
		t.Fatalf("bob, while alice's prompt runs: %s", got)
	}
	queueReads := func() int {
		n := 0
		for _, r := range c.Fake.Requests() {
			if r.Method == "GET" && r.Path == "/queue" {
				n++
			}
		}
		return n
	}
	before := queueReads()
	answer := make(chan string, 1)
	go func() { answer <- c.try("GET", q, c.alice) }()
	// Polling the queue every RunningPollGap: by the sixth read the view
	// has waited longer than a whole read's FullHistoryGap.
	eventually(t, 30*time.Second, "alice's view waits on her running prompt", func() bool { return queueReads() >= before+6 })
	select {
	case got := <-answer:
		t.Fatalf("alice's view answered %s before her prompt finished", got)
	default:
	}
	c.Fake.Advance() // alice's prompt finishes: its image is in the history
	if got := <-answer; got != "200" {
		t.Fatalf("alice's view of her running prompt's image: %s, want 200 once it finished", got)
	}
	if got := c.try("GET", q, c.bob); got != "404 "+string(middleware.CodeNotYourOutput) {
		t.Fatalf("bob, once alice's prompt finished: %s", got)
	}
}

// TestPromptsLoadOnlyTheirUsersOutputs: ComfyUI's loaders read
// "name.png [output]" from the output folder (the Load Image (from
// Outputs) node lists every user's files), and a path with ".." or an
// absolute one from anywhere; a named user's or guest's prompt naming
// another user's output that way, or any such path, is refused 403
// not_your_file, and never reaches ComfyUI. Their own outputs, uploads,
// links and text with paths in it pass; the operator's prompts pass.
func TestPromptsLoadOnlyTheirUsersOutputs(t *testing.T) {
	c := startClass(t, func(cfg *Config) { cfg.ComfyMultiUser = true })
	a1 := c.queueImage(t, c.alice, "alice/pic")
	c.runAll(t, a1)
	f := c.outputsOf(t, a1)[0]
	annotated := f.Subfolder + "/" + f.Filename + " [output]"
	prompt := func(node, input, value string) string {
		v, _ := json.Marshal(value)
		return `{"prompt":{"1":{"class_type":"` + node + `","inputs":{"` + input + `":` + string(v) + `}}}}`
	}
	queued := func() int { return len(ids(t, c.gateway)) }
	for _, tc := range []struct {
		who, body string
		refused   bool
	}{
		{c.bob, prompt("LoadImageOutput", "image", annotated), true},
		{c.guest, prompt("LoadImageOutput", "image", annotated), true},
		{c.bob, prompt("LoadImage", "image", "ComfyUI_99999_.png[temp]"), true},
		{c.bob, prompt("LoadImage", "image", "../output/"+f.Subfolder+"/"+f.Filename), true},
		{c.bob, prompt("LoadImage", "image", "/root/ComfyUI/output/"+f.Subfolder+"/"+f.Filename), true},
		{c.bob, prompt("LoadAudio", "audio", "x/../../output/a.flac [input]"), true},
		{c.bob, prompt("LoadImage", "image", "bob/../"+annotated), true},
		{c.alice, prompt("LoadImageOutput", "image", annotated), false},
		{c.alice, prompt("LoadImageOutput", "image", "./"+annotated), false},
		{c.bob, prompt("LoadImage", "image", "example.png"), false},
		{c.bob, prompt("LoadImage", "image", "pasted/image.png [input]"), false},
		{c.bob, prompt("CLIPTextEncode", "text", "a cat in /root/ComfyUI/output/ and ../ beyond"), false},
		{c.bob, prompt("HoldUntilFile", "path", "/tmp/release"), false}, // a custom node's path: its own to judge
		{c.bob, prompt("SomeCustomLoader", "path", "../output/x.png [output]"), true},
		{c.bob, `{"prompt":{"1":{"class_type":"Load3D","inputs":{"image":{"image":"/etc/passwd","mask":""}}}}}`, true},
		{c.bob, `{"prompt":{"1":{"class_type":"LoadImage","inputs":{"image":["2",0]}},"2":{"class_type":"X","inputs":{}}}}`, false},
		{c.operator, prompt("LoadImageOutput", "image", annotated), false},
		{c.operator, prompt("LoadImage", "image", "../output/"+f.Filename), false},
	} {
		before := queued()
		st, b := c.post(t, "/prompt", tc.body, tc.who)
		switch {
		case tc.refused && (st != 403 || refusalCode(t, "application/json", []byte(b)) != middleware.CodeNotYourFile):
			t.Errorf("%s: %d %s, want 403 %s", tc.body, st, b, middleware.CodeNotYourFile)
		case tc.refused && queued() != before:
			t.Errorf("%s: refused, yet it reached ComfyUI's queue", tc.body)
		case !tc.refused && st != 200:
			t.Errorf("%s: %d %s, want 200", tc.body, st, b)
		}
	}
}
