package server

import (
	"bytes"
	"net/url"
	"testing"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
	"github.com/comfyui-auth/comfyui-auth/middleware"
)

// TestNamedUsersAreComfyUsersAndQueueApart: in a class file, each named
// user is the ComfyUI user of their name, by token and by login form
// alike; one's files never land in another's directory even when the
// client names the other's id; each has their own queue share, and the
// queue says who queued what.
func TestNamedUsersAreComfyUsersAndQueueApart(t *testing.T) {
	c := newClassFile(t)
	stateDir := t.TempDir()
	g := startGateway(t, gatewayOpts{hashContent: ptr(c.content()),
		fake: fakecomfy.Options{MultiUser: true, HoldQueue: true},
		configure: func(cfg *Config) {
			cfg.ComfyMultiUser = true
			cfg.MaxQueuedPrompts = 1
			cfg.StateDir = stateDir
		}})
	asBob := "Authorization: Bearer bob:" + c.bob
	if resp := g.do(t, "POST", "/userdata/workflows%2Fw.json", []byte("bob's"), asBob); resp.StatusCode != 200 {
		t.Fatalf("bob saves: %d", resp.StatusCode)
	}
	bob := registered(g, "bob")
	if len(bob) != 1 {
		t.Fatalf("registry: %v", g.Fake.Users())
	}
	// Alice names bob's id; her file still lands in her own directory.
	if resp := g.do(t, "POST", "/api/userdata/workflows%2Fw.json", []byte("alice's"), basic("alice", c.alice), "Comfy-User: "+bob[0]); resp.StatusCode != 200 {
		t.Fatalf("alice saves: %d", resp.StatusCode)
	}
	alice := registered(g, "alice")
	if len(alice) != 1 || alice[0] == bob[0] {
		t.Fatalf("registry: %v", g.Fake.Users())
	}
	if b, _ := g.Fake.UserDataOf(bob[0], "workflows/w.json"); string(b) != "bob's" {
		t.Fatalf("bob's file holds %q", b)
	}
	if b, _ := g.Fake.UserDataOf(alice[0], "workflows/w.json"); string(b) != "alice's" {
		t.Fatalf("alice's file holds %q", b)
	}

	// A browser session logged in with the username is that user.
	resp := g.do(t, "POST", "/login", form(url.Values{"username": {"alice"}, "password": {c.alice}}), formType)
	var cookie string
	for _, ck := range resp.Cookies() {
		if ck.Name == middleware.SessionCookie && ck.Value != "" {
			rememberSecret(ck.Value)
			cookie = cookieHeader(ck.Value)
		}
	}
	if cookie == "" {
		t.Fatalf("no session for alice: %d", resp.StatusCode)
	}
	g.do(t, "GET", "/settings", nil, cookie, "Comfy-User: "+bob[0])
	if got := sentComfyUser(t, g, "/settings"); len(got) != 1 || got[0] != alice[0] {
		t.Fatalf("alice's session sent Comfy-User %q, want %s", got, alice[0])
	}

	// Each has a share of one.
	if st, code := g.prompt(t, "/prompt", onePrompt, cookie); st != 200 {
		t.Fatalf("alice's first: %d %s", st, code)
	}
	if st, code := g.prompt(t, "/prompt", onePrompt, "Authorization: Bearer alice:"+c.alice); st != 429 || code != middleware.CodeQueueShare {
		t.Fatalf("alice's second: %d %q", st, code)
	}
	if st, code := g.prompt(t, "/prompt", onePrompt, asBob); st != 200 {
		t.Fatalf("bob's first while alice is at her share: %d %s", st, code)
	}
	items := queued(t, g)
	if len(items) != 2 || !bytes.Contains(items[0].extra[middleware.QueueTagKey], []byte(`"user":"alice"`)) ||
		!bytes.Contains(items[1].extra[middleware.QueueTagKey], []byte(`"user":"bob"`)) {
		t.Fatalf("the queue does not say who queued what: %v", items)
	}
	if rec, _ := g.Fake.LastRequest("/prompt"); len(rec.Header["Comfy-User"]) != 1 || rec.Header["Comfy-User"][0] != bob[0] {
		t.Fatalf("bob's prompt carried Comfy-User %q", rec.Header["Comfy-User"])
	}
}
