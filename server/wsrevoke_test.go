package server

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/comfyui-auth/comfyui-auth/middleware"
)

// TestRevokingAUserClosesTheirOpenWebsockets: through the real server,
// alice and bob each hold two websockets, one admitted by a Bearer token and
// one by a session cookie from the login form. Once bob's line is removed
// from the hash file, the reload closes both of bob's websockets (he stops
// receiving progress and previews), logs one line per socket naming bob,
// and alice's websockets go on echoing. A bad file the gateway refuses
// before that closes nothing.
func TestRevokingAUserClosesTheirOpenWebsockets(t *testing.T) {
	const aliceTok, bobTok = "alice-secret-0123456789abcdefghij", "bob-secret-0123456789abcdefghijk"
	aliceLine := "alice:" + lowCostHash(t, aliceTok) + "\n"
	bobLine := "bob:" + lowCostHash(t, bobTok) + "\n"
	g := startGateway(t, gatewayOpts{hashContent: ptr(aliceLine + bobLine)})

	open := func(name, tok string, bySession bool) *websocket.Conn {
		t.Helper()
		h := http.Header{"Origin": {g.URL}}
		if bySession {
			resp := g.do(t, "POST", "/login", form(url.Values{"username": {name}, "password": {tok}}), formType)
			var cookie string
			for _, ck := range resp.Cookies() {
				if ck.Name == middleware.SessionCookie && ck.Value != "" {
					rememberSecret(ck.Value)
					cookie = ck.Value
				}
			}
			if cookie == "" {
				t.Fatalf("%s: login answered %d with no session", name, resp.StatusCode)
			}
			h.Set("Cookie", middleware.SessionCookie+"="+cookie)
		} else {
			h.Set("Authorization", "Bearer "+name+":"+tok)
		}
		conn, resp, err := dialWS(t, g, "/ws?clientId="+name, h)
		if err != nil {
			t.Fatalf("%s websocket (session %v): %v (response %v)", name, bySession, err, resp)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	echoes := func(conn *websocket.Conn, what string) error {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := conn.WriteMessage(websocket.TextMessage, []byte(what)); err != nil {
			return err
		}
		for {
			var frame struct {
				Type string          `json:"type"`
				Data json.RawMessage `json:"data"`
			}
			if err := conn.ReadJSON(&frame); err != nil {
				return err
			}
			if frame.Type == "echo" && strings.Contains(string(frame.Data), what) {
				return nil
			}
		}
	}
	alice := []*websocket.Conn{open("alice", aliceTok, false), open("alice", aliceTok, true)}
	bob := []*websocket.Conn{open("bob", bobTok, false), open("bob", bobTok, true)}
	for i, c := range append(append([]*websocket.Conn{}, alice...), bob...) {
		if err := echoes(c, "before"); err != nil {
			t.Fatalf("websocket %d before the revoke: %v", i, err)
		}
	}

	// A file the gateway refuses keeps the credentials in force: it
	// closes nothing.
	store := g.Server.Store()
	if err := os.WriteFile(g.HashFile, []byte("bob:not-a-hash\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the bad file refused", func() bool { return store.Status().LastError != "" })
	for i, c := range append(append([]*websocket.Conn{}, alice...), bob...) {
		if err := echoes(c, "refused-file"); err != nil {
			t.Fatalf("websocket %d after a refused file: %v", i, err)
		}
	}

	changed := store.Changed()
	if err := os.WriteFile(g.HashFile, []byte(aliceLine), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("the hash file without bob's line was not reloaded")
	}
	for i, c := range bob {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
					t.Fatalf("bob's websocket %d is still open 10 s after his line was removed", i)
				}
				break // closed, as wanted
			}
		}
	}
	for i, c := range alice {
		if err := echoes(c, "after"); err != nil {
			t.Fatalf("alice's websocket %d after bob's revoke: %v", i, err)
		}
	}
	eventually(t, 10*time.Second, "two websockets open", func() bool { return g.Server.OpenWebsockets() == 2 })
	closed := 0
	for _, line := range strings.Split(g.Logs.String(), "\n") {
		if strings.Contains(line, "websocket closed: the credential line") {
			if !strings.Contains(line, `"user":"bob"`) {
				t.Fatalf("a websocket closed for someone else: %s", line)
			}
			if strings.Contains(line, bobTok) {
				t.Fatalf("the log holds bob's secret: %s", line)
			}
			closed++
		}
	}
	if closed != 2 {
		t.Fatalf("%d log lines for closed websockets, want 2", closed)
	}
}
