package server

import (
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"encoding/json"
	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
	"net/http"
	"slices"
	"testing"
)

// TestStudentsCannotJumpTheQueue: a named user's or a guest's `front` and
// `number` (ComfyUI's "Queue (Front)" and a prompt's explicit place) are
// dropped, so their prompt goes behind the prompts already pending; with
// them a student holding two prompts, one running and one at the front,
// would keep the GPU to themselves whatever --max-queued-prompts says.
// The operator (the bare hash lines) keeps both.
func TestStudentsCannotJumpTheQueue(t *testing.T) {
	for _, mode := range classModes {
		t.Run(mode.name, func(t *testing.T) {
			c := startClass(t, mode.configure)
			b1 := c.queue(t, c.bob, "B")
			jumps := []struct{ who, body string }{
				{c.alice, `{"prompt":{"1":{"class_type":"A","inputs":{}}},"front":true}`},
				{c.alice, `{"prompt":{"1":{"class_type":"A","inputs":{}}},"number":-1e9}`},
				{c.alice, `{"number":-5,"prompt":{"1":{"class_type":"A","inputs":{}}},"front":true,"front":true}`},
				{c.guest, `{"prompt":{"1":{"class_type":"G","inputs":{}}},"front":true}`},
			}
			var late []string
			for _, j := range jumps {
				st, b := c.post(t, "/prompt", j.body, j.who)
				if st != 200 {
					t.Fatalf("POST /prompt %s: %d %s", j.body, st, b)
				}
				late = append(late, promptID(t, b))
			}
			want := append([]string{b1}, late...)
			if got := ids(t, c.gateway); !slices.Equal(got, want) {
				t.Fatalf("queue %v, want %v: a student's front or number put their prompt ahead of bob's", got, want)
			}
			st, b := c.post(t, "/prompt", `{"prompt":{"1":{"class_type":"O","inputs":{}}},"front":true}`, c.operator)
			if st != 200 {
				t.Fatalf("operator's front prompt: %d %s", st, b)
			}
			if got := ids(t, c.gateway); len(got) == 0 || got[0] != promptID(t, b) {
				t.Fatalf("queue %v: the operator's front prompt is not first", got)
			}
		})
	}
}

// promptID is the prompt_id of ComfyUI's POST /prompt answer.
func promptID(t *testing.T, answer string) string {
	t.Helper()
	var m struct {
		PromptID string `json:"prompt_id"`
	}
	if json.Unmarshal([]byte(answer), &m) != nil || m.PromptID == "" {
		t.Fatalf("no prompt_id in %s", answer)
	}
	return m.PromptID
}

// TestOneChosenPromptIDDoesNotMultiplyTheShare: the queue share counts a
// user's distinct prompt ids, and a client may choose its prompt_id, so a
// user sending every prompt under one id of their own would be counted
// once however many ComfyUI queues. A prompt whose chosen id is already in
// ComfyUI's queue is refused 409 prompt_id_taken, for a named user and
// for the bare-line holder alike, so the share holds.
func TestOneChosenPromptIDDoesNotMultiplyTheShare(t *testing.T) {
	c := startClass(t, func(cfg *Config) { cfg.MaxQueuedPrompts = 2 })
	for _, who := range []struct{ name, header, id string }{
		{"alice", c.alice, "aaaaaaaa-0000-4000-8000-000000000001"},
		{"operator", c.operator, "bbbbbbbb-0000-4000-8000-000000000002"},
	} {
		body := `{"prompt":{"1":{"class_type":"A","inputs":{}}},"prompt_id":"` + who.id + `"}`
		var statuses []int
		for i := 0; i < 5; i++ {
			st, _ := c.post(t, "/prompt", body, who.header)
			statuses = append(statuses, st)
		}
		n := 0
		for _, id := range ids(t, c.gateway) {
			if id == who.id {
				n++
			}
		}
		if n != 1 || statuses[0] != 200 || statuses[1] != http.StatusConflict {
			t.Fatalf("%s sent 5 prompts under one prompt_id with a share of 2: statuses %v, %d queued under it; want 200 then 409 and one queued",
				who.name, statuses, n)
		}
	}
}

// TestManyQueueViewsAtOnceAreHeldFewAtATime: each student's GET /queue
// view holds that student's own items (up to 64 MiB) while other users'
// are read past, so one client opening many connections to ask for a
// view of their large prompts together would make the gateway hold that
// many copies of them. Sixteen views asked at once by
// one student reach ComfyUI one at a time, the others wait their turn
// while another student's view passes beside them, and all are answered.
// (The gateway-wide bound, maxWholeReads, caps the users served at once.)
func TestManyQueueViewsAtOnceAreHeldFewAtATime(t *testing.T) {
	const views = 16
	var inFlight, most atomic.Int64
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	t.Cleanup(open)
	c := newClassFile(t)
	g := startGateway(t, gatewayOpts{hashContent: ptr(c.content()),
		fake: fakecomfy.Options{MultiUser: true, HoldQueue: true, Delay: func(r *http.Request) time.Duration {
			if r.Method == http.MethodGet && (r.URL.Path == "/queue" || r.URL.Path == "/api/queue") {
				n := inFlight.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				select {
				case <-release:
				case <-r.Context().Done():
				}
				inFlight.Add(-1)
			}
			return 0
		}},
		configure: func(cfg *Config) { cfg.ComfyMultiUser = true; cfg.MaxLoginAttempts = 0 }})
	alice := "Authorization: Bearer alice:" + c.alice
	statuses := make(chan int, views)
	for i := 0; i < views; i++ {
		go func() {
			req, _ := http.NewRequest("GET", g.URL+"/queue", nil)
			req.Header.Set("Authorization", strings.TrimPrefix(alice, "Authorization: "))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				statuses <- 0
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	eventually(t, 20*time.Second, "every view at ComfyUI or waiting its turn", func() bool {
		return inFlight.Load()+g.Server.wholeReads.Waiting() == views
	})
	if m := most.Load(); m > 1 {
		t.Fatalf("%d of one student's views of the queue reached ComfyUI at once, want one at a time", m)
	}
	// Another student is not kept waiting behind the first one's flood.
	bob := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("GET", g.URL+"/api/queue", nil)
		req.SetBasicAuth("bob", c.bob)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			bob <- 0
			return
		}
		resp.Body.Close()
		bob <- resp.StatusCode
	}()
	eventually(t, 20*time.Second, "bob's view at ComfyUI beside alice's", func() bool { return inFlight.Load() == 2 })
	open()
	if st := <-bob; st != 200 {
		t.Fatalf("bob's view answered %d", st)
	}
	for i := 0; i < views; i++ {
		if st := <-statuses; st != 200 {
			t.Fatalf("a view answered %d, want 200", st)
		}
	}
}
