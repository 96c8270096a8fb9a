package server

import (
	"bufio"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// rawHead sends a raw HTTP/1.1 request (lines joined with CRLF, the
// blank line added) on a new connection to g and reads the answer's head.
// The connection is returned open, positioned after the head.
func rawHead(t *testing.T, g *gateway, lines ...string) (*http.Response, net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write([]byte(strings.Join(lines, "\r\n") + "\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%q: reading the answer: %v", lines[0], err)
	}
	return resp, conn, br
}

// TestWebsocketWithItsConnectionHeaderSplitIsTracked: through the real
// server, a websocket upgrade whose Connection header comes as two lines
// ("keep-alive", then "Upgrade") is one the proxy carries out, since it
// reads every Connection line. The gateway must take it for the websocket
// it is: counted among the open websockets, and closed when the credential
// line that admitted it is removed. Taking only the first line, it was
// neither, so a token holder kept ComfyUI's live events after revocation.
func TestWebsocketWithItsConnectionHeaderSplitIsTracked(t *testing.T) {
	const aliceTok, bobTok = "alice-secret-0123456789abcdefghij", "bob-secret-0123456789abcdefghijk"
	aliceLine := "alice:" + lowCostHash(t, aliceTok) + "\n"
	bobLine := "bob:" + lowCostHash(t, bobTok) + "\n"
	g := startGateway(t, gatewayOpts{hashContent: ptr(aliceLine + bobLine)})
	host := strings.TrimPrefix(g.URL, "http://")

	for _, conn := range [][]string{
		{"Connection: keep-alive", "Connection: Upgrade"},
		{"Connection: keep-alive, Upgrade"},
	} {
		lines := append([]string{
			"GET /ws?clientId=split HTTP/1.1",
			"Host: " + host,
			"Origin: " + g.URL,
			"Authorization: Bearer bob:" + bobTok,
			"Upgrade: websocket",
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
			"Sec-WebSocket-Version: 13",
		}, conn...)
		resp, c, _ := rawHead(t, g, lines...)
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("%q: upgrade answered %d, want 101", conn, resp.StatusCode)
		}
		eventually(t, 10*time.Second, "the gateway counts the websocket of "+strings.Join(conn, " + "),
			func() bool { return g.Server.OpenWebsockets() == 1 })
		c.Close()
		eventually(t, 10*time.Second, "the websocket closed", func() bool { return g.Server.OpenWebsockets() == 0 })
	}

	resp, c, br := rawHead(t, g,
		"GET /ws?clientId=split HTTP/1.1",
		"Host: "+host,
		"Origin: "+g.URL,
		"Authorization: Bearer bob:"+bobTok,
		"Upgrade: websocket",
		"Connection: keep-alive",
		"Connection: Upgrade",
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
		"Sec-WebSocket-Version: 13")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %d, want 101", resp.StatusCode)
	}
	eventually(t, 10*time.Second, "the gateway counts the websocket", func() bool { return g.Server.OpenWebsockets() == 1 })
	store := g.Server.Store()
	changed := store.Changed()
	if err := os.WriteFile(g.HashFile, []byte(aliceLine), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("the hash file without bob's line was not reloaded")
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	for {
		if _, err := br.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("bob's websocket is still open 10 s after his line was removed")
			}
			break
		}
	}
}

// TestLoginPasswordSentAsRequestIDNeverReachesTheLog: a client that sends
// its password (a generated token is plain enough to be a request id) both
// in the login form and as X-Request-Id must not get it into the access
// log, as Auth already ensures for a token in Authorization or ?token=.
// An ordinary id is still kept.
func TestLoginPasswordSentAsRequestIDNeverReachesTheLog(t *testing.T) {
	const aliceTok, bareTok = "alice-Secret-0123456789_abcdefghij", "bare-Secret-0123456789_abcdefghijk"
	content := "alice:" + lowCostHash(t, aliceTok) + "\n" + lowCostHash(t, bareTok) + "\n"
	g := startGateway(t, gatewayOpts{hashContent: ptr(content)})

	for _, c := range []struct{ user, password string }{{"alice", aliceTok}, {"", bareTok}, {"alice", "wrong-password-but-plain-0123"}} {
		rememberSecret(c.password)
		resp := g.do(t, "POST", "/login", form(url.Values{"username": {c.user}, "password": {c.password}}),
			formType, "X-Request-Id: "+c.password)
		if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("login of %q answered %d", c.user, resp.StatusCode)
		}
		if got := resp.Header.Get("X-Request-Id"); got == "" || got == c.password {
			t.Errorf("login of %q: the answer's X-Request-Id is %q, want a new id", c.user, got)
		}
	}
	resp := g.do(t, "POST", "/login", form(url.Values{"username": {"alice"}, "password": {aliceTok}}),
		formType, "X-Request-Id: my-own-id-42")
	if got := resp.Header.Get("X-Request-Id"); got != "my-own-id-42" {
		t.Errorf("an ordinary X-Request-Id came back as %q", got)
	}
	eventually(t, 10*time.Second, "the login lines logged", func() bool {
		return strings.Count(g.Logs.String(), `"path":"/login"`) >= 4
	})
	logs := g.Logs.String()
	for _, s := range []string{aliceTok, bareTok, "wrong-password-but-plain-0123"} {
		if strings.Contains(logs, s) {
			t.Errorf("the log holds a password sent as X-Request-Id: %s", s)
		}
	}
	if !strings.Contains(logs, `"request_id":"my-own-id-42"`) {
		t.Error("an ordinary X-Request-Id is not in the log")
	}
}
