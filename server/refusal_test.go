package server

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// rawRefusal writes head (request line and headers, without the blank line)
// and body on a fresh connection, then reads the answer; it returns the
// status and whether the gateway closed the connection after it. Nothing
// waits longer than within.
func rawRefusal(t *testing.T, g *gateway, head, body string, within time.Duration) (status int, closed bool) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(within))
	if _, err := io.WriteString(conn, strings.ReplaceAll(head, "\n", "\r\n")+"\r\n\r\n"+body); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("no answer within %s", within)
		}
		t.Fatalf("reading the answer: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	_, err = br.ReadByte()
	switch {
	case err == io.EOF, err != nil && !errors.Is(err, os.ErrDeadlineExceeded):
		closed = true
	case err == nil:
		t.Fatalf("bytes after the answer to %q", head)
	}
	return resp.StatusCode, closed
}

// TestRefusalOfAnUnsentBodyIsAnsweredAtOnceAndClosed announces a 200,000
// byte body and sends none, without credentials, on a raw socket: every
// answer the gateway gives itself must arrive and the connection must be
// closed, instead of net/http waiting for the body for ever.
func TestRefusalOfAnUnsentBodyIsAnsweredAtOnceAndClosed(t *testing.T) {
	hash := lowCostHash(t, "refusal-right-token")
	g := startGateway(t, gatewayOpts{hashContent: ptr(hash), configure: func(c *Config) {
		c.MaxLoginAttempts = 1
		c.ThrottleLock = time.Hour
		c.loginReadTimeout = time.Second
	}})
	// Lock 127.0.0.2 out, for the 429 case.
	if s := statusWith(t, clientFrom(t, "127.0.0.2"), g.URL+"/queue", "wrong-guess").StatusCode; s != 401 {
		t.Fatalf("wrong guess = %d, want 401", s)
	}
	// A browser session, for the cross-site 403 case.
	login := g.do(t, "POST", "/login", []byte("password=refusal-right-token"), "Content-Type: application/x-www-form-urlencoded")
	var cookie string
	for _, c := range login.Cookies() {
		cookie = c.Name + "=" + c.Value
	}
	if cookie == "" {
		t.Fatalf("login = %d without a cookie", login.StatusCode)
	}
	rememberSecret(strings.SplitN(cookie, "=", 2)[1])
	const within = 10 * time.Second
	cases := []struct {
		name, head string
		from       string
		want       int
	}{
		{"no credentials", "POST /prompt HTTP/1.1\nHost: gw\nContent-Type: application/json\nContent-Length: 200000", "", 401},
		{"wrong hash token form", "POST /upload/image HTTP/1.1\nHost: gw\nAuthorization: Basic eDp5\nContent-Length: 200000", "", 401},
		{"chunked, no chunk", "POST /prompt HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked", "", 401},
		{"expect 100-continue", "POST /prompt HTTP/1.1\nHost: gw\nExpect: 100-continue\nContent-Length: 200000", "", 401},
		{"chunked, one chunk of many", "POST /upload/image HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked\n\n10000\nabc", "", 401},
		{"cross-site session write", "POST /prompt HTTP/1.1\nHost: gw\nOrigin: http://evil.example\nCookie: " + cookie + "\nContent-Length: 200000", "", 403},
		{"login form too large", "POST /login HTTP/1.1\nHost: gw\nContent-Type: application/x-www-form-urlencoded\nContent-Length: 200000", "", 413},
		{"login form never sent", "POST /login HTTP/1.1\nHost: gw\nContent-Type: application/x-www-form-urlencoded\nContent-Length: 100", "", 408},
		{"locked client", "POST /prompt HTTP/1.1\nHost: gw\nAuthorization: Bearer another-guess\nContent-Length: 200000", "127.0.0.2", 429},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var status int
			var closed bool
			if tc.from == "" {
				status, closed = rawRefusal(t, g, tc.head, "", within)
			} else {
				status, closed = rawRequestFrom(t, g, tc.from, tc.head, within)
			}
			if status != tc.want {
				t.Fatalf("status %d, want %d", status, tc.want)
			}
			if !closed {
				t.Fatalf("connection still open %s after the %d", within, status)
			}
		})
	}
}

// rawRequestFrom is rawRefusal from a chosen loopback address.
func rawRequestFrom(t *testing.T, g *gateway, ip, head string, within time.Duration) (int, bool) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(within))
	if _, err := io.WriteString(conn, strings.ReplaceAll(head, "\n", "\r\n")+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_, err = br.ReadByte()
	return resp.StatusCode, err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

// TestLoginFormWithinBoundsStillLogsIn: the cap and deadline leave a real
// form alone, and an authenticated upload with a body is still proxied on a
// kept-alive connection.
func TestLoginFormWithinBoundsStillLogsIn(t *testing.T) {
	hash := lowCostHash(t, "login-bounds-password")
	g := startGateway(t, gatewayOpts{hashContent: ptr(hash)})
	resp := g.do(t, "POST", "/login", []byte("username=u&password=login-bounds-password&next=%2F"),
		"Content-Type: application/x-www-form-urlencoded")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/" {
		t.Fatalf("login = %d to %q, want 302 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
	if len(resp.Cookies()) == 0 {
		t.Fatal("no session cookie")
	}
	if resp.Close {
		t.Fatal("a successful login closed the connection")
	}
}
