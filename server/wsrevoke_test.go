package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
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
// and alice's websockets go on echoing, as does one opened with the bare
// line's hash as the token (ComfyUI-Login's compatibility), until that
// line is removed in turn. A bad file the gateway refuses
// before that closes nothing.
func TestRevokingAUserClosesTheirOpenWebsockets(t *testing.T) {
	const aliceTok, bobTok = "alice-secret-0123456789abcdefghij", "bob-secret-0123456789abcdefghijk"
	aliceLine := "alice:" + lowCostHash(t, aliceTok) + "\n"
	bobLine := "bob:" + lowCostHash(t, bobTok) + "\n"
	bareHash := lowCostHash(t, "bare-secret-0123456789abcdefghij")
	g := startGateway(t, gatewayOpts{hashContent: ptr(aliceLine + bobLine + bareHash + "\n")})
	if !g.Server.cfg.AcceptHashToken {
		t.Fatal("the test needs the hash-as-token compatibility on")
	}

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
		} else if name == "" {
			h.Set("Authorization", "Bearer "+tok) // the bare line's hash as the token
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
	alice := []*websocket.Conn{open("alice", aliceTok, false), open("alice", aliceTok, true), open("", bareHash, false)}
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
	if err := os.WriteFile(g.HashFile, []byte(aliceLine+bareHash+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("the hash file without bob's line was not reloaded")
	}
	closedByServer := func(c *websocket.Conn, what string) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
					t.Fatalf("%s is still open 10 s after its line was removed", what)
				}
				return // closed, as wanted
			}
		}
	}
	closedByServer(bob[0], "bob's token websocket")
	closedByServer(bob[1], "bob's session websocket")
	for i, c := range alice {
		if err := echoes(c, "after"); err != nil {
			t.Fatalf("alice's (or the bare line's) websocket %d after bob's revoke: %v", i, err)
		}
	}
	eventually(t, 10*time.Second, "three websockets open", func() bool { return g.Server.OpenWebsockets() == 3 })
	closedLogs := func() (users []string) {
		for _, line := range strings.Split(g.Logs.String(), "\n") {
			if strings.Contains(line, "websocket closed: the credential line") {
				if strings.Contains(line, bobTok) || strings.Contains(line, bareHash) {
					t.Fatalf("the log holds a secret: %s", line)
				}
				var ev struct{ User string }
				if err := json.Unmarshal([]byte(line), &ev); err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				users = append(users, ev.User)
			}
		}
		return users
	}
	if got := closedLogs(); len(got) != 2 || got[0] != "bob" || got[1] != "bob" {
		t.Fatalf("websockets closed for %q, want bob twice", got)
	}

	// The bare line's hash-as-token websocket is tied to that line.
	changed = store.Changed()
	if err := os.WriteFile(g.HashFile, []byte(aliceLine), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("the hash file without the bare line was not reloaded")
	}
	closedByServer(alice[2], "the bare line's hash-token websocket")
	for i, c := range alice[:2] {
		if err := echoes(c, "after-bare"); err != nil {
			t.Fatalf("alice's websocket %d after the bare line's removal: %v", i, err)
		}
	}
	if got := closedLogs(); len(got) != 3 || got[2] != middleware.UserDefault {
		t.Fatalf("websockets closed for %q, want bob twice then %s", got, middleware.UserDefault)
	}
}

// TestReloadDuringAWebsocketUpgradeIsAnswered503: through the real server,
// a reload of the credential file lands after a websocket's credential
// check and before its upgrade. The upgrade is answered 503
// credentials_reloaded with Retry-After, not proxied on a check made
// against credentials no longer in force, for a token and for a session
// alike. The client's retry is checked against the new file: it connects
// when its line is still there, and gets 401 when the reload removed it.
func TestReloadDuringAWebsocketUpgradeIsAnswered503(t *testing.T) {
	const aliceTok, bobTok = "alice-secret-0123456789abcdefghij", "bob-secret-0123456789abcdefghijk"
	aliceLine := "alice:" + lowCostHash(t, aliceTok) + "\n"
	bobLine := "bob:" + lowCostHash(t, bobTok) + "\n"
	carolLine := "carol:" + lowCostHash(t, "carol-secret-0123456789abcdefghi") + "\n"
	for _, tc := range []struct {
		name      string
		bySession bool
		reloadTo  string // the file the reload puts in force mid-upgrade
		retry     int    // the retry's status: 101 connected, 401 refused
	}{
		{"token, line kept", false, aliceLine + carolLine + bobLine, http.StatusSwitchingProtocols},
		{"session, line kept", true, carolLine + bobLine + aliceLine, http.StatusSwitchingProtocols},
		{"token, line removed", false, bobLine, http.StatusUnauthorized},
		{"session, line removed", true, bobLine, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var armed atomic.Bool
			var g *gateway
			g = startGateway(t, gatewayOpts{hashContent: ptr(aliceLine + bobLine), configure: func(c *Config) {
				c.beforeWebsocketAdmission = func() {
					if !armed.CompareAndSwap(true, false) {
						return
					}
					store := g.Server.Store()
					changed := store.Changed()
					if err := os.WriteFile(g.HashFile, []byte(tc.reloadTo), 0o644); err != nil {
						t.Error(err) // the handler's goroutine: no Fatal here
						return
					}
					select {
					case <-changed:
					case <-time.After(10 * time.Second):
						t.Error("the rewritten hash file was not reloaded within 10 s")
					}
				}
			}})
			h := http.Header{"Origin": {g.URL}}
			if tc.bySession {
				resp := g.do(t, "POST", "/login", form(url.Values{"username": {"alice"}, "password": {aliceTok}}), formType)
				for _, ck := range resp.Cookies() {
					if ck.Name == middleware.SessionCookie && ck.Value != "" {
						rememberSecret(ck.Value)
						h.Set("Cookie", middleware.SessionCookie+"="+ck.Value)
					}
				}
				if h.Get("Cookie") == "" {
					t.Fatalf("login answered %d with no session", resp.StatusCode)
				}
			} else {
				h.Set("Authorization", "Bearer alice:"+aliceTok)
			}

			armed.Store(true)
			conn, resp, err := dialWS(t, g, "/ws?clientId=alice", h)
			if err == nil {
				conn.Close()
				t.Fatal("the upgrade was proxied on a check made before the reload")
			}
			if armed.Load() {
				t.Fatal("the upgrade never reached its admission")
			}
			if resp == nil {
				t.Fatalf("dial: %v, no response", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" ||
				refusalCode(t, resp.Header.Get("Content-Type"), body) != middleware.CodeCredentialsReloaded {
				t.Fatalf("upgrade during a reload = %d, Retry-After %q, %s; want 503, 1, code %s",
					resp.StatusCode, resp.Header.Get("Retry-After"), body, middleware.CodeCredentialsReloaded)
			}
			if n := g.Server.OpenWebsockets(); n != 0 {
				t.Fatalf("%d websockets counted open after the refusal", n)
			}

			conn, resp, err = dialWS(t, g, "/ws?clientId=alice", h)
			if tc.retry == http.StatusSwitchingProtocols {
				if err != nil {
					t.Fatalf("the retry with a credential still loaded: %v (response %v)", err, resp)
				}
				defer conn.Close()
				_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				var frame struct {
					Type string `json:"type"`
				}
				if err := conn.ReadJSON(&frame); err != nil || frame.Type != "status" {
					t.Fatalf("the retry's first frame %q, err %v; want ComfyUI's status", frame.Type, err)
				}
				return
			}
			if err == nil {
				conn.Close()
				t.Fatal("the retry with a removed credential was proxied")
			}
			if resp == nil || resp.StatusCode != tc.retry {
				t.Fatalf("the retry with a removed credential: %v (response %v), want %d", err, resp, tc.retry)
			}
		})
	}
}
