package server

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
	"github.com/comfyui-auth/comfyui-auth/middleware"
)

// class is a gateway for a class (alice, bob, the bare-line operator and
// guests) before a fake ComfyUI whose queue moves only on Advance, with
// the credentials' request headers.
type class struct {
	*gateway
	alice, bob, operator, guest string
}

// classModes are the two ways prompts get tagged per user.
var classModes = []struct {
	name      string
	configure func(*Config)
}{
	{"comfy-multi-user", func(c *Config) { c.ComfyMultiUser = true }},
	{"max-queued-prompts", func(c *Config) { c.MaxQueuedPrompts = 10 }},
}

func startClass(t *testing.T, configure func(*Config), fake ...func(*fakecomfy.Options)) class {
	t.Helper()
	c := newClassFile(t)
	stateDir := t.TempDir()
	opts := fakecomfy.Options{MultiUser: true, HoldQueue: true}
	for _, f := range fake {
		f(&opts)
	}
	g := startGateway(t, gatewayOpts{hashContent: ptr(c.content()),
		fake: opts,
		configure: func(cfg *Config) {
			cfg.GuestMode = true
			cfg.StateDir = stateDir
			cfg.MaxLoginAttempts = 0
			configure(cfg)
		}})
	return class{gateway: g,
		alice:    "Authorization: Bearer alice:" + c.alice,
		bob:      basic("bob", c.bob),
		operator: "Authorization: Bearer " + c.bare,
		guest:    guestCookie(t, g),
	}
}

// post sends a JSON body as who and returns the status and answer.
func (c class) post(t *testing.T, path, body, who string) (int, string) {
	t.Helper()
	resp := c.do(t, "POST", path, []byte(body), who, "Content-Type: application/json", "Origin: "+c.URL)
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// get reads path as who; it must answer 200.
func (c class) get(t *testing.T, path, who string) string {
	t.Helper()
	resp := c.do(t, "GET", path, nil, who)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return string(b)
}

// queue queues a one-node prompt whose node type is node, as who, and
// returns its id.
func (c class) queue(t *testing.T, who, node string) string {
	t.Helper()
	st, b := c.post(t, "/prompt", `{"prompt":{"1":{"class_type":"`+node+`","inputs":{}}}}`, who)
	var m struct {
		PromptID string `json:"prompt_id"`
	}
	if st != 200 || json.Unmarshal([]byte(b), &m) != nil || m.PromptID == "" {
		t.Fatalf("queue %s: %d %s", node, st, b)
	}
	return m.PromptID
}

// ids are the prompt ids in ComfyUI's queue, running first.
func ids(t *testing.T, g *gateway) []string {
	t.Helper()
	var out []string
	for _, it := range queued(t, g) {
		out = append(out, it.id)
	}
	return out
}

// TestStudentsDeleteAndClearOnlyTheirOwnQueuedPrompts: a named user's
// POST /queue delete and clear (the frontend's delete and clear-queue
// buttons) reach their own pending prompts only; the operator's reach
// every prompt. In both modes that tag prompts.
func TestStudentsDeleteAndClearOnlyTheirOwnQueuedPrompts(t *testing.T) {
	for _, mode := range classModes {
		t.Run(mode.name, func(t *testing.T) {
			c := startClass(t, mode.configure)
			a1, a2 := c.queue(t, c.alice, "A"), c.queue(t, c.alice, "A")
			b1, b2 := c.queue(t, c.bob, "B"), c.queue(t, c.bob, "B")
			if st, b := c.post(t, "/queue", `{"delete":["`+b1+`"]}`, c.alice); st != 200 {
				t.Fatalf("alice deletes bob's: %d %s, want 200 with nothing done", st, b)
			}
			if !slices.Contains(ids(t, c.gateway), b1) {
				t.Fatalf("alice deleted bob's queued prompt: %v", ids(t, c.gateway))
			}
			if st, b := c.post(t, "/api/queue", `{"delete":["`+a1+`","`+b2+`"]}`, c.alice); st != 200 {
				t.Fatalf("alice deletes hers and bob's: %d %s", st, b)
			}
			if got, want := ids(t, c.gateway), []string{a2, b1, b2}; !slices.Equal(got, want) {
				t.Fatalf("after alice deleted [a1 b2]: %v, want %v (hers gone, bob's kept)", got, want)
			}
			// Judged on the path as ComfyUI's router decodes it.
			if st, b := c.post(t, "/api/queu%65", `{"clear":1}`, c.alice); st != 200 {
				t.Fatalf("alice clears: %d %s", st, b)
			}
			if got, want := ids(t, c.gateway), []string{b1, b2}; !slices.Equal(got, want) {
				t.Fatalf("after alice's clear: %v, want %v (her pending gone, bob's kept)", got, want)
			}
			if st, _ := c.post(t, "/queue", `{"clear":true}`, c.operator); st != 200 {
				t.Fatalf("operator clears: %d", st)
			}
			if got := ids(t, c.gateway); len(got) != 0 {
				t.Fatalf("after the operator's clear: %v, want an empty queue", got)
			}
		})
	}
}

// TestStudentsInterruptOnlyTheirOwnRunningPrompt: POST /interrupt from a
// named user, global or naming another's prompt, does not reach another
// user's running prompt; a global one reaches their own; the operator's
// reaches anyone's.
func TestStudentsInterruptOnlyTheirOwnRunningPrompt(t *testing.T) {
	for _, mode := range classModes {
		t.Run(mode.name, func(t *testing.T) {
			c := startClass(t, mode.configure)
			b1 := c.queue(t, c.bob, "B")
			a1 := c.queue(t, c.alice, "A")
			if c.Fake.Advance() != b1 {
				t.Fatal("bob's prompt does not run first")
			}
			for _, body := range []string{"", `{}`, `{"prompt_id":"` + b1 + `"}`, `not json`} {
				if st, b := c.post(t, "/interrupt", body, c.alice); st != 200 {
					t.Fatalf("alice's interrupt %q: %d %s", body, st, b)
				}
			}
			if got := c.Fake.Interrupted(); len(got) != 0 {
				t.Fatalf("alice interrupted bob's running prompt: %v", got)
			}
			if st, _ := c.post(t, "/interrupt", "", c.bob); st != 200 {
				t.Fatalf("bob's interrupt: %d", st)
			}
			if got := c.Fake.Interrupted(); !slices.Equal(got, []string{b1}) {
				t.Fatalf("bob's global interrupt reached %v, want his own %s", got, b1)
			}
			if c.Fake.Advance() != a1 {
				t.Fatal("alice's prompt does not run next")
			}
			c.post(t, "/interrupt", `{"prompt_id":"`+a1+`"}`, c.bob)
			c.post(t, "/api/interrupt", `{}`, c.alice)
			c.post(t, "/interrupt", "", c.operator)
			if got, want := c.Fake.Interrupted(), []string{b1, a1, a1}; !slices.Equal(got, want) {
				t.Fatalf("interrupts reached %v, want %v (not bob's of alice's, alice's own, the operator's)", got, want)
			}
		})
	}
}

// TestStudentsSeeOnlyTheirOwnPromptsInQueueAndHistory: GET /queue shows a
// named user or a guest the other users' prompts only as placeholders
// (the queue's length stays), and GET /history and /history/{id} only
// their own entries; the operator sees everything.
func TestStudentsSeeOnlyTheirOwnPromptsInQueueAndHistory(t *testing.T) {
	for _, mode := range classModes {
		t.Run(mode.name, func(t *testing.T) {
			c := startClass(t, mode.configure)
			a1 := c.queue(t, c.alice, "AliceSecretNode")
			b1 := c.queue(t, c.bob, "BobSecretNode")
			g1 := c.queue(t, c.guest, "GuestSecretNode")
			c.Fake.Advance() // alice's runs
			secrets := map[string][]string{
				c.alice: {"AliceSecretNode", a1},
				c.bob:   {"BobSecretNode", b1},
				c.guest: {"GuestSecretNode", g1},
			}
			checkView := func(what, body, who string) {
				t.Helper()
				for owner, s := range secrets {
					for _, secret := range s {
						if shown := strings.Contains(body, secret); shown != (owner == who || who == c.operator) {
							t.Errorf("%s: %q shown=%v:\n%s", what, secret, shown, body)
						}
					}
				}
			}
			for _, who := range []string{c.alice, c.bob, c.guest, c.operator} {
				for _, path := range []string{"/queue", "/api/queue"} {
					body := c.get(t, path, who)
					checkView(path, body, who)
					var q map[string][]json.RawMessage
					if err := json.Unmarshal([]byte(body), &q); err != nil || len(q["queue_running"])+len(q["queue_pending"]) != 3 {
						t.Errorf("%s does not show the queue's length: %v %s", path, err, body)
					}
				}
			}
			for i := 0; i < 3; i++ {
				c.Fake.Advance()
			}
			for _, id := range []string{a1, b1, g1} {
				if !c.Fake.HasHistory(id) {
					t.Fatalf("%s is not in history", id)
				}
			}
			for _, who := range []string{c.alice, c.bob, c.guest, c.operator} {
				for _, path := range []string{"/history", "/api/history?max_items=10"} {
					checkView(path, c.get(t, path, who), who)
				}
			}
			if body := c.get(t, "/history/"+b1, c.alice); body != "{}" {
				t.Errorf("alice reads bob's /history/{id}: %s, want {}", body)
			}
			if body := c.get(t, "/api/history/"+a1, c.alice); !strings.Contains(body, "AliceSecretNode") {
				t.Errorf("alice cannot read her own /history/{id}: %s", body)
			}
			if body := c.get(t, "/history/"+b1, c.operator); !strings.Contains(body, "BobSecretNode") {
				t.Errorf("the operator cannot read bob's /history/{id}: %s", body)
			}
		})
	}
}

// TestStudentsDeleteAndClearOnlyTheirOwnHistory: POST /history delete and
// clear from a named user reach their own entries only; the operator's
// reach all.
func TestStudentsDeleteAndClearOnlyTheirOwnHistory(t *testing.T) {
	for _, mode := range classModes {
		t.Run(mode.name, func(t *testing.T) {
			c := startClass(t, mode.configure)
			a1, a2 := c.queue(t, c.alice, "A"), c.queue(t, c.alice, "A")
			b1, b2 := c.queue(t, c.bob, "B"), c.queue(t, c.bob, "B")
			for i := 0; i < 5; i++ {
				c.Fake.Advance()
			}
			in := func(id string) bool { return c.Fake.HasHistory(id) }
			if !in(a1) || !in(a2) || !in(b1) || !in(b2) {
				t.Fatal("the prompts did not all reach history")
			}
			c.post(t, "/history", `{"delete":["`+b1+`","`+a1+`"]}`, c.alice)
			if !in(b1) || in(a1) {
				t.Fatalf("alice's delete [b1 a1]: b1 kept %v (want true), a1 kept %v (want false)", in(b1), in(a1))
			}
			c.post(t, "/api/history", `{"clear":true}`, c.alice)
			if !in(b1) || !in(b2) || in(a2) {
				t.Fatalf("alice's clear: bob's kept %v %v (want true), hers kept %v (want false)", in(b1), in(b2), in(a2))
			}
			c.post(t, "/history", `{"clear":true}`, c.operator)
			if in(b1) || in(b2) {
				t.Fatal("the operator's clear left bob's history")
			}
		})
	}
}

// TestForgedOwnershipGivesNoRights: prompts that reach ComfyUI's queue
// with a copy of alice's tag or a made-up one are not alice's to delete
// or see; bob cannot queue a prompt under the id of alice's queued or
// finished prompt (its result would replace hers in history), though he
// may reuse his own.
func TestForgedOwnershipGivesNoRights(t *testing.T) {
	c := startClass(t, func(cfg *Config) { cfg.ComfyMultiUser = true })
	done := c.queue(t, c.alice, "A")
	c.Fake.Advance()
	c.Fake.Advance() // alice's first is in history
	a1 := c.queue(t, c.alice, "A")
	var realTag json.RawMessage
	for _, it := range queued(t, c.gateway) {
		realTag = it.extra[middleware.QueueTagKey]
	}
	for _, body := range []string{
		`{"prompt":{"1":{"class_type":"CopiedTagNode"}},"prompt_id":"copied","extra_data":{"comfyui_auth":` + string(realTag) + `}}`,
		`{"prompt":{"1":{"class_type":"MadeUpTagNode"}},"prompt_id":"made-up","extra_data":{"comfyui_auth":{"user":"alice","mac":"00000000000000000000000000000000"}}}`,
	} {
		resp, err := http.Post(c.Upstream.URL+"/prompt", "application/json", strings.NewReader(body))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("straight to ComfyUI: %v %v", err, resp)
		}
		resp.Body.Close()
	}
	if body := c.get(t, "/queue", c.alice); strings.Contains(body, "CopiedTagNode") || strings.Contains(body, "MadeUpTagNode") {
		t.Fatalf("alice sees forged prompts as hers: %s", body)
	}
	c.post(t, "/queue", `{"delete":["copied","made-up"]}`, c.alice)
	if got := ids(t, c.gateway); len(got) != 3 {
		t.Fatalf("a forged tag let alice delete a prompt: %v", got)
	}
	// Bob names alice's ids, with her tag.
	for _, id := range []string{a1, done} {
		body := `{"prompt":{"1":{"class_type":"B"}},"prompt_id":"` + id + `","extra_data":{"comfyui_auth":` + string(realTag) + `}}`
		for _, path := range []string{"/prompt", "/api/prompt"} {
			st, b := c.post(t, path, body, c.bob)
			if st != 409 || refusalCode(t, "application/json", []byte(b)) != middleware.CodePromptIDTaken {
				t.Fatalf("bob queues under alice's id %s on %s: %d %s, want 409 prompt_id_taken", id, path, st, b)
			}
		}
	}
	if got := ids(t, c.gateway); len(got) != 3 || !c.Fake.HasHistory(done) {
		t.Fatalf("queue %v, alice's history kept %v", got, c.Fake.HasHistory(done))
	}
	own := `{"prompt":{"1":{"class_type":"B"}},"prompt_id":"bobs-own-id"}`
	for i := 0; i < 2; i++ {
		if st, b := c.post(t, "/prompt", own, c.bob); st != 200 {
			t.Fatalf("bob's own id, time %d: %d %s", i+1, st, b)
		}
	}
	if st, b := c.post(t, "/prompt", own, c.alice); st != 409 {
		t.Fatalf("alice under bob's id: %d %s, want 409", st, b)
	}
	if st, b := c.post(t, "/prompt", `{"prompt":{"1":{"class_type":"X"}},"prompt_id":"`+a1+`"}`, c.operator); st != 200 {
		t.Fatalf("the operator chooses any id: %d %s", st, b)
	}
}
