package server

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
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
// line that admitted it is removed, and refused by CSRF when another site
// sends it with a session cookie: a gateway reading only the first line
// would let a token holder keep ComfyUI's live events after revocation.
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

	// Another site's page riding on bob's session cookie is refused by
	// CSRF, however the Connection header comes.
	ck := sessionCookie(t, g.do(t, "POST", "/login", form(url.Values{"username": {"bob"}, "password": {bobTok}}), formType))
	resp, c, _ := rawHead(t, g,
		"GET /ws?clientId=cross HTTP/1.1",
		"Host: "+host,
		"Origin: http://evil.example",
		"Cookie: "+ck.Name+"="+ck.Value,
		"Upgrade: websocket",
		"Connection: keep-alive",
		"Connection: Upgrade",
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
		"Sec-WebSocket-Version: 13")
	c.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a cross-site websocket on a session cookie, Connection split: answered %d, want 403", resp.StatusCode)
	}
	for _, rec := range g.Fake.Requests() {
		if strings.Contains(rec.RawQuery, "clientId=cross") {
			t.Fatal("a cross-site websocket on a session cookie, Connection split, passed CSRF and reached ComfyUI")
		}
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

// TestRequestTargetSpellingsNeverReachComfyUIWithoutCredentials: through
// the real server, raw request lines in every spelling a client can send
// (absolute-form targets, `*`, authority-form CONNECT, escapes, dot
// segments, doubled slashes, methods in odd case or unknown) either reach
// the gateway's own page or go through Auth: without credentials ComfyUI
// gets none of them, and none is answered 5xx. With a token, an
// absolute-form target naming a gateway page still gets the gateway's page,
// and one naming ComfyUI's path reaches ComfyUI at that path.
func TestRequestTargetSpellingsNeverReachComfyUIWithoutCredentials(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	host := strings.TrimPrefix(g.URL, "http://")
	methods := []string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "get", "Get", "CONNECT"}
	targets := []string{
		"/", "/prompt", "/api/prompt", "/ws?clientId=x", "/view?filename=a.png&type=output",
		"/login", "/login/", "/LOGIN", "/log%69n", "//login", "/./login", "/api/../login", "/%2e%2e/login",
		"/comfyui-auth/login.css", "/comfyui-auth%2Flogin.css", "/comfyui-auth/../prompt",
		"/healthz/", "/readyz/x", "/guest_mode/x", "/logout/",
		"*", "http://evil.example/login", "http://evil.example/prompt", "HTTP://" + host + "/prompt",
		"http://" + host + "/api/prompt?x=1", "https://evil.example/ws", host, "prompt", "%2Fprompt",
	}
	for _, m := range methods {
		for _, target := range targets {
			resp, c, _ := rawHead(t, g, m+" "+target+" HTTP/1.1", "Host: "+host, "Content-Length: 0", "Connection: close")
			c.Close()
			if resp.StatusCode >= 500 {
				t.Errorf("%s %s: answered %d", m, target, resp.StatusCode)
			}
			if reqs := g.Fake.Requests(); len(reqs) > 0 {
				t.Fatalf("%s %s without credentials reached ComfyUI as %s %s (answer %d)", m, target, reqs[0].Method, reqs[0].Path, resp.StatusCode)
			}
		}
	}

	auth := "Authorization: Bearer " + seedToken
	resp, c, br := rawHead(t, g, "GET http://evil.example/login HTTP/1.1", "Host: "+host, auth, "Connection: close")
	body := make([]byte, 64<<10)
	n, _ := io.ReadFull(br, body)
	c.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body[:n]), `name="password"`) {
		t.Errorf("GET http://evil.example/login with a token: %d, not the gateway's login page", resp.StatusCode)
	}
	if reqs := g.Fake.Requests(); len(reqs) > 0 {
		t.Fatalf("an absolute-form target naming /login reached ComfyUI as %s", reqs[0].Path)
	}
	resp, c, _ = rawHead(t, g, "GET http://evil.example/prompt HTTP/1.1", "Host: "+host, auth, "Connection: close")
	c.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET http://evil.example/prompt with a token answered %d", resp.StatusCode)
	}
	if last, ok := g.Fake.LastRequest("/prompt"); !ok || last.Method != "GET" {
		t.Errorf("an absolute-form target naming /prompt did not reach ComfyUI's /prompt")
	}
}

// TestHeaderNameSpellingsCannotHideFromTheGateway: the gateway reads the
// credential, forwarding and upgrade headers by their canonical keys, so
// a header key in another spelling would be unseen by the gateway while
// ComfyUI (aiohttp, case-insensitive) reads it. Through the real server:
// keys in any letter case are canonicalised before the gateway reads them
// (a lowercase authorization is a credential, a lowercase
// x-forwarded-for from an untrusted peer is dropped), and a key Go would
// keep as sent (a space or other non-token byte in it) is refused 400
// before any handler, so ComfyUI never gets one.
func TestHeaderNameSpellingsCannotHideFromTheGateway(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	host := strings.TrimPrefix(g.URL, "http://")
	for _, key := range []string{"authorization", "AUTHORIZATION", "aUtHoRiZaTiOn"} {
		resp, c, _ := rawHead(t, g, "GET /prompt HTTP/1.1", "Host: "+host, key+": Bearer "+seedToken,
			"x-forwarded-for: 203.0.113.9", "X-FORWARDED-PROTO: https", "x-forwarded-host: evil.example", "forwarded: for=203.0.113.9", "Connection: close")
		c.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: answered %d, want 200", key, resp.StatusCode)
		}
		last, ok := g.Fake.LastRequest("/prompt")
		if !ok {
			t.Fatalf("%s: the request did not reach ComfyUI", key)
		}
		for k, vv := range last.Header {
			lk := strings.ToLower(k)
			switch {
			case lk == "authorization" || lk == "forwarded":
				t.Errorf("%s: ComfyUI got %s: %q", key, k, vv)
			case lk == "x-forwarded-for" && (len(vv) != 1 || vv[0] != "127.0.0.1"):
				t.Errorf("%s: ComfyUI got X-Forwarded-For %q, want the peer only", key, vv)
			case lk == "x-forwarded-proto" && (len(vv) != 1 || vv[0] != "http"):
				t.Errorf("%s: ComfyUI got X-Forwarded-Proto %q from an untrusted peer's header", key, vv)
			case lk == "x-forwarded-host" && (len(vv) != 1 || vv[0] != host):
				t.Errorf("%s: ComfyUI got X-Forwarded-Host %q, want the Host addressed", key, vv)
			}
		}
	}
	g.Fake.Reset()
	for _, line := range []string{
		"Authorization : Bearer " + seedToken,
		"Authorization\t: Bearer " + seedToken,
		"Author ization: Bearer " + seedToken,
		"Comfy-User : alice",
		"X-Forwarded-For : 203.0.113.9",
		"Upgrade\x00: websocket",
	} {
		resp, c, _ := rawHead(t, g, "GET /prompt?token="+url.QueryEscape(seedToken)+" HTTP/1.1", "Host: "+host, line, "Connection: close")
		c.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("header line %q: answered %d, want 400", line, resp.StatusCode)
		}
	}
	if reqs := g.Fake.Requests(); len(reqs) > 0 {
		t.Fatalf("a request with a header name Go keeps as sent reached ComfyUI: %v", reqs[0].Header)
	}
}

// FuzzRequestLinesTakeTheRoutersWay: any request line Go's server accepts,
// parsed as the server parses it (so with the RawPath an escaped target
// leaves, and the path of an absolute-form target), takes the shortcut
// past the router only when the router would give it to its catch-all.
func FuzzRequestLinesTakeTheRoutersWay(f *testing.F) {
	for _, s := range []string{
		"GET /login HTTP/1.1", "GET http://h/login HTTP/1.1", "GET /log%69n HTTP/1.1",
		"GET /comfyui-auth%2Flogin.css HTTP/1.1", "OPTIONS * HTTP/1.1", "CONNECT h:1 HTTP/1.1",
		"POST /prompt HTTP/1.1", "GET //healthz HTTP/1.1", "get /login HTTP/1.1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(line + "\r\nHost: h\r\n\r\n")))
		if err != nil {
			return
		}
		if got, want := forComfyUI(r), routerTakes(t, r); got && !want {
			t.Fatalf("%q (path %q, raw %q): the shortcut takes a request the router gives to a gateway page", line, r.URL.Path, r.URL.RawPath)
		}
	})
}

// headerUpstream answers each path with a chosen set of headers: what a
// ComfyUI (or a custom node of it) may send that the proxy must pass on,
// drop or keep apart.
func headerUpstream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		switch r.URL.Path {
		case "/dup":
			h["X-Dup"] = []string{"a", "b"}
			h["Set-Cookie"] = []string{"c1=1; Path=/", "c2=2; Path=/; HttpOnly"}
			h["X-Request-Id"] = []string{"from-comfyui"}
			h["Cache-Control"] = []string{"no-cache", "private"}
			h["x-lower"] = []string{"kept"} // sent as written, read back canonical
			h.Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"ok":true}`)
		case "/hop":
			h.Set("Connection", "X-Hop, keep-alive")
			h.Set("X-Hop", "must-not-pass")
			h.Set("Keep-Alive", "timeout=5")
			h.Set("Proxy-Authenticate", `Basic realm="comfy"`)
			h.Set("Proxy-Connection", "keep-alive")
			h.Set("Upgrade", "h2c")
			h.Set("X-Kept", "yes")
			h.Set("Trailer", "X-Trail")
			_, _ = io.WriteString(w, "body")
			h.Set("X-Trail", "after-the-body")
		case "/sse":
			h.Set("Content-Type", "text/event-stream")
			h.Set("X-Sse", "1")
			_, _ = io.WriteString(w, "data: x\n\n")
		case "/empty":
			h.Set("X-Empty", "1")
			h.Set("ETag", `"e1"`)
			w.WriteHeader(http.StatusNoContent)
		case "/fail":
			h.Set("X-Fail", "1")
			h.Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, "boom")
		default:
			http.NotFound(w, r)
		}
	})
}

// TestComfyUIAnswerHeadersPassAsReverseProxyCopiesThem: the gateway hands
// ComfyUI's answer headers to the client's writer whole, where
// ReverseProxy copies them value by value. Through the real server, for
// duplicate headers, Set-Cookie, a key ComfyUI wrote in lower case,
// hop-by-hop headers (listed in Connection or by name), trailers, an event
// stream, a 204, a 500 and HEAD, the client gets exactly what a plain
// ReverseProxy in front of the same upstream gives, apart from the
// gateway's own X-Request-Id, which comes first, before ComfyUI's.
func TestComfyUIAnswerHeadersPassAsReverseProxyCopiesThem(t *testing.T) {
	up := httptest.NewServer(headerUpstream())
	t.Cleanup(up.Close)
	upURL, _ := url.Parse(up.URL)
	plain := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(upURL) }})
	t.Cleanup(plain.Close)
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Upstream = up.URL }})

	fetch := func(base, method, path string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+seedToken)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if _, err := io.ReadAll(resp.Body); err != nil { // fills resp.Trailer
			t.Fatalf("%s %s body: %v", method, path, err)
		}
		return resp
	}
	for _, c := range []struct{ method, path string }{
		{"GET", "/dup"}, {"HEAD", "/dup"}, {"GET", "/hop"}, {"GET", "/sse"}, {"GET", "/empty"}, {"GET", "/fail"}, {"GET", "/none"},
	} {
		got, want := fetch(g.URL, c.method, c.path), fetch(plain.URL, c.method, c.path)
		if got.StatusCode != want.StatusCode {
			t.Errorf("%s %s: status %d through the gateway, %d through ReverseProxy", c.method, c.path, got.StatusCode, want.StatusCode)
		}
		ids := got.Header.Values("X-Request-Id")
		if len(ids) == 0 || ids[0] == "from-comfyui" || !slices.Equal(ids[1:], want.Header.Values("X-Request-Id")) {
			t.Errorf("%s %s: X-Request-Id %q, want the gateway's id then ComfyUI's %q", c.method, c.path, ids, want.Header.Values("X-Request-Id"))
		}
		for _, h := range []http.Header{got.Header, want.Header} {
			h.Del("Date")
			h.Del("X-Request-Id")
		}
		if !reflect.DeepEqual(got.Header, want.Header) {
			t.Errorf("%s %s: headers through the gateway\n%v\nthrough ReverseProxy\n%v", c.method, c.path, got.Header, want.Header)
		}
		if !reflect.DeepEqual(got.Trailer, want.Trailer) {
			t.Errorf("%s %s: trailers through the gateway %v, through ReverseProxy %v", c.method, c.path, got.Trailer, want.Trailer)
		}
	}
	if got := fetch(g.URL, "GET", "/hop"); got.Header.Get("X-Hop") != "" || got.Trailer.Get("X-Trail") != "after-the-body" {
		t.Errorf("/hop: X-Hop %q (a header ComfyUI named in Connection), trailer %q", got.Header.Get("X-Hop"), got.Trailer.Get("X-Trail"))
	}
}

// TestForwardedForSpellingsReachComfyUIAsTheClientAddress: the client's
// address is made text once (Client.AddrText) for X-Forwarded-For and the
// access log. Through the real server, behind a trusted proxy (the test's
// loopback peer, over IPv4 and IPv6), every spelling of a hop (IPv4-mapped,
// with a zone, bracketed with a port, uncompressed IPv6, across repeated
// headers, behind garbage) reaches ComfyUI, alone, as the address the
// throttle counts, and the access log names the same; an untrusted peer's
// X-Forwarded-For is ignored.
func TestForwardedForSpellingsReachComfyUIAsTheClientAddress(t *testing.T) {
	tests := []struct {
		listen, trusted string
		xff             []string
		want            string
	}{
		{"127.0.0.1:0", "127.0.0.1/32", []string{"::ffff:203.0.113.9"}, "203.0.113.9"},
		{"127.0.0.1:0", "127.0.0.1/32", []string{"fe80::1%eth0"}, "fe80::1"},
		{"127.0.0.1:0", "127.0.0.1/32", []string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{"127.0.0.1:0", "127.0.0.1/32", []string{"2001:DB8:0:0:0:0:0:1"}, "2001:db8::1"},
		{"127.0.0.1:0", "127.0.0.1/32", []string{"203.0.113.9:5555"}, "203.0.113.9"},
		{"127.0.0.1:0", "127.0.0.1/32", []string{"6.6.6.6", "203.0.113.9"}, "203.0.113.9"},
		{"127.0.0.1:0", "127.0.0.1/32", []string{"6.6.6.6, 203.0.113.9, ::ffff:127.0.0.1"}, "203.0.113.9"},
		{"127.0.0.1:0", "127.0.0.1/32", []string{"6.6.6.6, not-an-address, 127.0.0.1"}, "127.0.0.1"},
		{"127.0.0.1:0", "10.0.0.0/8", []string{"203.0.113.9"}, "127.0.0.1"},
		{"[::1]:0", "::1/128", []string{"::ffff:203.0.113.9"}, "203.0.113.9"},
		{"[::1]:0", "::1/128", []string{"[fe80::2%25lo]:80"}, "fe80::2"},
		{"[::1]:0", "10.0.0.0/8", []string{"203.0.113.9"}, "::1"},
	}
	for _, tc := range tests {
		t.Run(tc.listen+" "+tc.trusted+" "+strings.Join(tc.xff, " | "), func(t *testing.T) {
			g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Listen, c.TrustedProxies = tc.listen, tc.trusted }})
			hdr := []string{"Authorization: Bearer " + seedToken}
			for _, v := range tc.xff {
				hdr = append(hdr, "X-Forwarded-For: "+v)
			}
			resp := g.do(t, "GET", "/system_stats", nil, hdr...)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("answered %d", resp.StatusCode)
			}
			rec, _ := g.Fake.LastRequest("/system_stats")
			if got := rec.Header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != tc.want {
				t.Errorf("ComfyUI got X-Forwarded-For %q, want %q alone", got, tc.want)
			}
			id := resp.Header.Get("X-Request-Id")
			eventually(t, 10*time.Second, "the request logged", func() bool { return requestLog(t, g, id) != nil })
			if line := requestLog(t, g, id); line["client"] != tc.want {
				t.Errorf("access log client %v, want %s", line["client"], tc.want)
			}
		})
	}
}

// TestGatewayRewrittenAnswerHeadersAreTheOnlyOnes: the headers the gateway
// rewrites in ComfyUI's answer (the /extensions list's Content-Length and
// ETag, a view's Content-Security-Policy and X-Content-Type-Options) are
// handed to the client once, with the gateway's values: through the real
// server, ComfyUI's own values of those headers never reach the client
// beside them, and the body is exactly Content-Length bytes.
func TestGatewayRewrittenAnswerHeadersAreTheOnlyOnes(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		switch r.URL.Path {
		case "/extensions", "/api/extensions":
			h.Set("Content-Type", "application/json")
			h.Set("ETag", `"comfy-etag"`)
			body := `["/extensions/core/a.js", "/extensions/b/b.js"]`
			if r.URL.Query().Get("sized") != "" {
				h.Set("Content-Length", strconv.Itoa(len(body)))
			}
			_, _ = io.WriteString(w, body)
		case "/view", "/api/view", "/userdata/x.svg":
			h["Content-Security-Policy"] = []string{"default-src *", "script-src *"}
			h.Set("X-Content-Type-Options", "sniff-please")
			h.Set("Content-Type", "image/svg+xml")
			_, _ = io.WriteString(w, `<svg xmlns="http://www.w3.org/2000/svg"><script>1</script></svg>`)
		}
	}))
	t.Cleanup(up.Close)
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Upstream = up.URL }})
	for _, path := range []string{"/extensions", "/extensions?sized=1", "/api/extensions?sized=1"} {
		resp := g.do(t, "GET", path, nil, "Authorization: Bearer "+seedToken)
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		cl := resp.Header.Values("Content-Length")
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), logoutScriptPath) ||
			len(cl) != 1 || cl[0] != strconv.Itoa(len(body)) || resp.Header.Get("ETag") != "" {
			t.Errorf("%s: %d, Content-Length %q for %d bytes, ETag %q, body %s", path, resp.StatusCode, cl, len(body), resp.Header.Get("ETag"), body)
		}
	}
	for _, path := range []string{"/view?filename=x.svg", "/api/view?filename=x.svg", "/userdata/x.svg"} {
		resp := g.do(t, "GET", path, nil, "Authorization: Bearer "+seedToken)
		if csp := resp.Header.Values("Content-Security-Policy"); len(csp) != 1 || csp[0] != "sandbox" {
			t.Errorf("%s: Content-Security-Policy %q, want sandbox alone", path, csp)
		}
		if n := resp.Header.Values("X-Content-Type-Options"); len(n) != 1 || n[0] != "nosniff" {
			t.Errorf("%s: X-Content-Type-Options %q, want nosniff alone", path, n)
		}
	}
}
