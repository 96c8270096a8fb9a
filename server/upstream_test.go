package server

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
)

// rawUpstream is a scripted ComfyUI speaking raw HTTP/1.1, for framing the
// real one never produces. For each request it reads (body included) it
// calls answer with the connection's number (from 1), the request's number
// on that connection (from 1), and the request; answer writes raw bytes
// and returns false to close the connection.
type rawUpstream struct {
	URL    string
	conns  atomic.Int32
	closed atomic.Int32 // connections ended, by either side
	mu     sync.Mutex
	seen   []string // "conn/method path body" for each request read
}

type rawAnswer func(c net.Conn, conn, n int, r *http.Request, body []byte) (keep bool)

func startRawUpstream(t *testing.T, answer rawAnswer) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	u := &rawUpstream{URL: "http://" + ln.Addr().String()}
	var wg sync.WaitGroup
	var open sync.Map
	t.Cleanup(func() {
		ln.Close()
		open.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			id := int(u.conns.Add(1))
			open.Store(c, true)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer u.closed.Add(1)
				defer open.Delete(c)
				defer c.Close()
				br := bufio.NewReader(c)
				for n := 1; ; n++ {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					body, err := io.ReadAll(r.Body)
					if err != nil {
						return
					}
					u.mu.Lock()
					u.seen = append(u.seen, fmt.Sprintf("%d/%s %s %s", id, r.Method, r.URL.RequestURI(), body))
					u.mu.Unlock()
					if !answer(c, id, n, r, body) {
						return
					}
				}
			}()
		}
	}()
	return u
}

func (u *rawUpstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.seen...)
}

// authGet sends an authenticated request and returns status, body, trailers.
func authDo(t *testing.T, g *gateway, method, path string, body []byte, headers ...string) (*http.Response, string) {
	t.Helper()
	resp := g.do(t, method, path, body, append([]string{"Authorization: Bearer " + seedHash}, headers...)...)
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return resp, string(b)
}

// poolSeesEveryConnDead reports whether the gateway's socket of every
// pooled connection shows ComfyUI's close or unasked-for bytes: the FIN or
// the bytes have arrived, so the test's next request meets the state it
// means to test, not a race with the network.
func poolSeesEveryConnDead(tr *syncTransport) bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, c := range tr.idle {
		if idleConnUsable(c.nc) {
			return false
		}
	}
	return len(tr.idle) > 0
}

func okAnswer(c net.Conn, body string, extra ...string) {
	fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s", len(body), strings.Join(extra, ""), body)
}

func TestUpstreamConnectionsAreReusedUnlessEitherSideCloses(t *testing.T) {
	up := startRawUpstream(t, func(c net.Conn, _, _ int, r *http.Request, _ []byte) bool {
		if r.URL.Path == "/close" {
			okAnswer(c, "bye", "Connection: close\r\n")
			return false
		}
		okAnswer(c, "ok")
		return true
	})
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Upstream = up.URL }})
	for i := 0; i < 10; i++ {
		if resp, body := authDo(t, g, "GET", "/queue", nil); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if n := up.conns.Load(); n != 1 {
		t.Fatalf("10 sequential requests used %d upstream connections, want 1 (kept alive)", n)
	}
	if g.Server.upstreamPool.idleCount() != 1 {
		t.Fatalf("pool holds %d connections, want 1", g.Server.upstreamPool.idleCount())
	}
	for i := 0; i < 3; i++ {
		if resp, body := authDo(t, g, "GET", "/close", nil); resp.StatusCode != 200 || body != "bye" {
			t.Fatalf("close %d: %d %q", i, resp.StatusCode, body)
		}
	}
	// The first /close took the pooled connection; each next one dials.
	if n := up.conns.Load(); n != 3 {
		t.Fatalf("after three Connection: close answers, %d connections, want 3", n)
	}
	if n := g.Server.upstreamPool.idleCount(); n != 0 {
		t.Fatalf("a connection ComfyUI closed was pooled (%d idle)", n)
	}
}

// TestComfyUIClosingAPooledConnectionRetriesOnlyWhatIsSafe: ComfyUI
// (aiohttp) closes keep-alive connections on its own schedule, and may do
// so just as the gateway sends a request on one. A request that may be
// sent twice is retried on a new connection; one that may not (a POST
// /prompt queues a job) fails with 502 and is sent once.
func TestComfyUIClosingAPooledConnectionRetriesOnlyWhatIsSafe(t *testing.T) {
	up := startRawUpstream(t, func(c net.Conn, _, n int, r *http.Request, _ []byte) bool {
		if n == 1 {
			okAnswer(c, "ok")
			return true
		}
		// The second request on a connection finds it closing: read,
		// never answered.
		return false
	})
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Upstream = up.URL }})
	authDo(t, g, "GET", "/queue", nil)
	if resp, body := authDo(t, g, "GET", "/history", nil); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("GET on a connection ComfyUI closed: %d %q, want it retried on a new one", resp.StatusCode, body)
	}
	if n := up.conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (the retry dials)", n)
	}
	resp, _ := authDo(t, g, "POST", "/prompt", []byte(`{"prompt":{}}`), "Content-Type: application/json")
	if resp.StatusCode != 502 {
		t.Fatalf("POST on a connection ComfyUI closed = %d, want 502 (not replayable)", resp.StatusCode)
	}
	posts := 0
	for _, s := range up.requests() {
		if strings.Contains(s, "POST /prompt") {
			posts++
		}
	}
	if posts != 1 {
		t.Fatalf("ComfyUI saw the POST %d times, want once: %q", posts, up.requests())
	}
	// A fresh connection failing the same way is not retried either.
	up2 := startRawUpstream(t, func(net.Conn, int, int, *http.Request, []byte) bool { return false })
	g2 := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Upstream = up2.URL }})
	if resp, _ := authDo(t, g2, "GET", "/queue", nil); resp.StatusCode != 502 {
		t.Fatalf("GET closed on a new connection = %d, want 502", resp.StatusCode)
	}
	if n := len(up2.requests()); n != 1 {
		t.Fatalf("a new connection's failure was retried: %d requests", n)
	}
}

// TestComfyUIClosingAnIdleConnectionDoesNotFailAPost: when ComfyUI closed a
// pooled connection before the request, the gateway sees it and dials,
// so even a request it may not retry succeeds.
func TestComfyUIClosingAnIdleConnectionDoesNotFailAPost(t *testing.T) {
	closed := make(chan struct{}, 1)
	up := startRawUpstream(t, func(c net.Conn, _, _ int, r *http.Request, _ []byte) bool {
		okAnswer(c, "ok")
		if r.URL.Path == "/queue" {
			c.Close()
			closed <- struct{}{}
			return false
		}
		return true
	})
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Upstream = up.URL }})
	resp, _ := authDo(t, g, "GET", "/queue", nil)
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	<-closed
	eventually(t, 5*time.Second, "the gateway seeing ComfyUI's close", func() bool { return poolSeesEveryConnDead(g.Server.upstreamPool) })
	if resp, body := authDo(t, g, "POST", "/prompt", []byte(`{}`)); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("POST after ComfyUI closed the idle connection: %d %q", resp.StatusCode, body)
	}
}

// TestResponseFramingIsKept sends answers whose framing a proxy can get
// wrong over one upstream connection; if any were misread, the next answer
// would be garbage or the connection would not be reused.
func TestResponseFramingIsKept(t *testing.T) {
	up := startRawUpstream(t, func(c net.Conn, _, _ int, r *http.Request, _ []byte) bool {
		switch r.URL.Path {
		case "/chunked":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"+
				"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 42\r\n\r\n")
		case "/hints":
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+
				"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhints")
		case "/file":
			// HEAD: the length of the body a GET would get, and no body.
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
		case "/cached":
			io.WriteString(c, "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 1000\r\n\r\n")
		case "/empty":
			io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
		default:
			okAnswer(c, "next")
		}
		return true
	})
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Upstream = up.URL }})

	resp, body := authDo(t, g, "GET", "/chunked", nil)
	if body != "hello world" || resp.Trailer.Get("X-Checksum") != "42" {
		t.Fatalf("chunked: %q trailer %q", body, resp.Trailer)
	}
	if _, body := authDo(t, g, "GET", "/next", nil); body != "next" {
		t.Fatalf("after chunked: %q", body)
	}

	var got1xx []int
	req, _ := http.NewRequest("GET", g.URL+"/hints", nil)
	req.Header.Set("Authorization", "Bearer "+seedHash)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, _ textproto.MIMEHeader) error { got1xx = append(got1xx, code); return nil },
	}))
	r2, err := noRedirect.Do(req)
	must(t, err)
	b, _ := io.ReadAll(r2.Body)
	r2.Body.Close()
	if r2.StatusCode != 200 || string(b) != "hints" || len(got1xx) != 1 || got1xx[0] != 103 {
		t.Fatalf("103 then 200: status %d body %q, 1xx seen %v", r2.StatusCode, b, got1xx)
	}

	if resp, body := authDo(t, g, "HEAD", "/file", nil); resp.StatusCode != 200 || body != "" || resp.ContentLength != 1000 {
		t.Fatalf("HEAD: %d len %d body %q", resp.StatusCode, resp.ContentLength, body)
	}
	if resp, body := authDo(t, g, "GET", "/cached", nil, `If-None-Match: "x"`); resp.StatusCode != 304 || body != "" {
		t.Fatalf("304: %d %q", resp.StatusCode, body)
	}
	if resp, body := authDo(t, g, "GET", "/empty", nil); resp.StatusCode != 204 || body != "" {
		t.Fatalf("204: %d %q", resp.StatusCode, body)
	}
	if _, body := authDo(t, g, "GET", "/next", nil); body != "next" {
		t.Fatalf("after HEAD/304/204: %q", body)
	}
	if n := up.conns.Load(); n != 1 {
		t.Fatalf("%d upstream connections, want all answers over one", n)
	}
}

// TestUnframedOrOverlongResponsesAreNotReused: a body that ends with the
// connection, or bytes ComfyUI sent beyond an answer, mean the connection
// cannot carry another request; reusing it would hand the stray bytes to
// the next client as its answer.
func TestUnframedOrOverlongResponsesAreNotReused(t *testing.T) {
	sendStray, straySent := make(chan struct{}), make(chan struct{})
	up := startRawUpstream(t, func(c net.Conn, _, _ int, r *http.Request, _ []byte) bool {
		switch r.URL.Path {
		case "/until-close":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end")
			return false
		case "/stray":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"+
				"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")
		case "/stray-later":
			okAnswer(c, "ok")
			// Sent once the gateway has pooled the connection.
			go func() {
				<-sendStray
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")
				close(straySent)
			}()
		default:
			okAnswer(c, "mine")
		}
		return true
	})
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Upstream = up.URL }})
	if _, body := authDo(t, g, "GET", "/until-close", nil); body != "to the end" {
		t.Fatalf("close-delimited body: %q", body)
	}
	if _, body := authDo(t, g, "GET", "/x", nil); body != "mine" {
		t.Fatalf("after a close-delimited body: %q", body)
	}
	if _, body := authDo(t, g, "GET", "/stray", nil); body != "ok" {
		t.Fatalf("stray: %q", body)
	}
	if _, body := authDo(t, g, "GET", "/x", nil); body != "mine" {
		t.Fatalf("the next client got %q: stray bytes were read as its answer", body)
	}
	if _, body := authDo(t, g, "GET", "/stray-later", nil); body != "ok" {
		t.Fatalf("stray-later: %q", body)
	}
	eventually(t, 5*time.Second, "the connection pooled", func() bool { return g.Server.upstreamPool.idleCount() == 1 })
	close(sendStray)
	<-straySent
	eventually(t, 5*time.Second, "the stray bytes reaching the gateway", func() bool { return poolSeesEveryConnDead(g.Server.upstreamPool) })
	if _, body := authDo(t, g, "GET", "/x", nil); body != "mine" {
		t.Fatalf("the next client got %q: bytes sent to an idle connection were read as its answer", body)
	}
}

// TestOversizedResponseHeadersGet502: ComfyUI (or a custom node) sending
// megabytes of headers costs the gateway at most maxUpstreamHeaderBytes.
func TestOversizedResponseHeadersGet502(t *testing.T) {
	big := strings.Repeat("a", 8<<10)
	up := startRawUpstream(t, func(c net.Conn, _, _ int, r *http.Request, _ []byte) bool {
		if r.URL.Path == "/huge" {
			w := bufio.NewWriter(c)
			io.WriteString(w, "HTTP/1.1 200 OK\r\n")
			for i := 0; i < 2*maxUpstreamHeaderBytes/len(big); i++ {
				fmt.Fprintf(w, "X-Big-%d: %s\r\n", i, big)
			}
			io.WriteString(w, "Content-Length: 2\r\n\r\nok")
			w.Flush()
			return false
		}
		okAnswer(c, "fine")
		return true
	})
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Upstream = up.URL }})
	if resp, _ := authDo(t, g, "GET", "/huge", nil); resp.StatusCode != 502 {
		t.Fatalf("2 MiB of response headers = %d, want 502", resp.StatusCode)
	}
	if resp, body := authDo(t, g, "GET", "/x", nil); resp.StatusCode != 200 || body != "fine" {
		t.Fatalf("after huge headers: %d %q", resp.StatusCode, body)
	}
}

// TestResponseBodyHasNoTimeoutButHeadersDo: the header bound is for
// ComfyUI not answering; a body (a long /view download) may take longer.
func TestResponseBodyHasNoTimeoutButHeadersDo(t *testing.T) {
	up := startRawUpstream(t, func(c net.Conn, _, _ int, r *http.Request, _ []byte) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nslow")
		// The rest of the body comes five header timeouts later: a slow
		// download, not a silent ComfyUI.
		<-time.After(500 * time.Millisecond)
		io.WriteString(c, "body")
		return true
	})
	g := startGateway(t, gatewayOpts{configure: func(c *Config) {
		c.Upstream = up.URL
		c.UpstreamTimeout = 100 * time.Millisecond
	}})
	resp := g.do(t, "GET", "/view?filename=a.png", nil, "Authorization: Bearer "+seedHash)
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || err != nil || string(body) != "slowbody" {
		t.Fatalf("%d body %q err %v: the header timeout cut the body", resp.StatusCode, body, err)
	}
}

// TestClientCancelClosesTheUpstreamConnection: a client giving up on a slow
// request frees ComfyUI's side too, at once, instead of leaving a
// connection waiting for an answer nobody reads.
func TestClientCancelClosesTheUpstreamConnection(t *testing.T) {
	upClosed := make(chan struct{})
	got := make(chan struct{})
	up := startRawUpstream(t, func(c net.Conn, _, _ int, r *http.Request, _ []byte) bool {
		close(got)
		// Never answer; wait for the gateway to close.
		_, _ = c.Read(make([]byte, 1))
		close(upClosed)
		return false
	})
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Upstream = up.URL }})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", g.URL+"/history", nil)
	req.Header.Set("Authorization", "Bearer "+seedHash)
	errc := make(chan error, 1)
	go func() {
		resp, err := noRedirect.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-got
	cancel()
	<-errc
	select {
	case <-upClosed:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream connection stayed open 10 s after the client cancelled")
	}
	eventually(t, 5*time.Second, "the cancelled request logged as 499", func() bool {
		return strings.Contains(g.Logs.String(), `"status":499`)
	})
}

// TestComfyUIRestartWithAFullPoolCostsNoRequest: every pooled connection
// dies when ComfyUI restarts; the requests that follow must all succeed,
// including POSTs, which may not be retried.
func TestComfyUIRestartWithAFullPoolCostsNoRequest(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := ln.Addr().String()
	startFake := func(ln net.Listener) *httptest.Server {
		s := httptest.NewUnstartedServer(fakecomfy.New(fakecomfy.Options{}))
		s.Listener.Close()
		s.Listener = ln
		s.Start()
		return s
	}
	first := startFake(ln)
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Upstream = "http://" + addr }})
	const n = 16
	burst := func(what string) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan string, 2*n)
		for i := 0; i < n; i++ {
			for _, m := range []string{"GET", "POST"} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					path, body := "/system_stats", ""
					if m == "POST" {
						path, body = "/prompt", `{"prompt":{"1":{"class_type":"SaveImage","inputs":{}}},"client_id":"c"}`
					}
					req, _ := http.NewRequest(m, g.URL+path, strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+seedHash)
					req.Header.Set("Content-Type", "application/json")
					resp, err := noRedirect.Do(req)
					if err != nil {
						errs <- err.Error()
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode >= 500 {
						errs <- m + " " + resp.Status
					}
				}()
			}
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Errorf("%s: %s", what, e)
		}
	}
	burst("before the restart")
	if g.Server.upstreamPool.idleCount() < 2 {
		t.Fatalf("the pool holds %d connections; the test needs it full", g.Server.upstreamPool.idleCount())
	}
	first.Close()
	eventually(t, 5*time.Second, "the gateway seeing every pooled connection closed", func() bool { return poolSeesEveryConnDead(g.Server.upstreamPool) })
	ln2, err := net.Listen("tcp", addr)
	must(t, err)
	second := startFake(ln2)
	t.Cleanup(second.Close)
	burst("after the restart")
}

// TestSmugglingProbesReachComfyUIAsOneRequestEach sends, on one client
// connection, requests built to be read as two by a proxy that copies
// framing loosely; ComfyUI must see exactly the requests the client sent.
func TestSmugglingProbesReachComfyUIAsOneRequestEach(t *testing.T) {
	up := startRawUpstream(t, func(c net.Conn, _, _ int, r *http.Request, _ []byte) bool {
		okAnswer(c, "ok")
		return true
	})
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Upstream = up.URL }})
	auth := "Authorization: Bearer " + seedHash + "\r\n"
	// The smuggled request carries no credential: if the gateway read it
	// as a request of its own it would refuse it, so ComfyUI seeing it
	// means it slipped past the gateway inside another one.
	inner := "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	cl := fmt.Sprintf("%d", len(inner))
	probes := []struct {
		name, raw string
		wantOK    bool
	}{
		{"a GET with a body holding a request", "GET /a HTTP/1.1\r\nHost: x\r\n" + auth +
			fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(inner), inner), true},
		{"Content-Length and chunked together", "POST /b HTTP/1.1\r\nHost: x\r\n" + auth +
			"Content-Length: " + cl + "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + inner, false},
		{"two different Content-Lengths", "POST /c HTTP/1.1\r\nHost: x\r\n" + auth +
			"Content-Length: 0\r\nContent-Length: " + cl + "\r\n\r\n" + inner, false},
		{"a bare LF inside a header value", "GET /d HTTP/1.1\r\nHost: x\r\n" + auth +
			"X-A: 1\nContent-Length: " + cl + "\r\n\r\n" + inner, false},
		{"a space before the colon", "GET /e HTTP/1.1\r\nHost: x\r\n" + auth +
			"Content-Length : " + cl + "\r\n\r\n" + inner, false},
		{"an obsolete line folding", "GET /f HTTP/1.1\r\nHost: x\r\n" + auth +
			"X-A: 1\r\n Content-Length: " + cl + "\r\n\r\n" + inner, false},
	}
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			before := len(up.requests())
			c, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
			must(t, err)
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			_, err = io.WriteString(c, p.raw)
			must(t, err)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			must(t, err)
			io.Copy(io.Discard, resp.Body)
			if p.wantOK && resp.StatusCode != 200 {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			// Close our side and let the gateway finish with the
			// connection, so any second request would have been sent.
			c.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, br)
			seen := up.requests()[before:]
			for _, s := range seen {
				// "conn/METHOD URI body": the URI, not the body.
				if f := strings.Fields(s); len(f) > 1 && f[1] == "/smuggled" {
					t.Fatalf("ComfyUI received a smuggled request: %q", seen)
				}
			}
			if p.wantOK && len(seen) != 1 {
				t.Fatalf("ComfyUI saw %d requests, want 1: %q", len(seen), seen)
			}
			if p.wantOK && !strings.HasSuffix(seen[0], inner) {
				t.Fatalf("the body did not reach ComfyUI as a body: %q", seen[0])
			}
		})
	}
}

// TestInvalidHeadersAreRefusedNotWritten: Request.Write does not check
// header names and values as http.Transport does; the transport must, so a
// header set by a future rewrite cannot split the request to ComfyUI.
func TestInvalidHeadersAreRefusedNotWritten(t *testing.T) {
	up := startRawUpstream(t, func(c net.Conn, _, _ int, _ *http.Request, _ []byte) bool {
		okAnswer(c, "ok")
		return true
	})
	tr := newSyncTransport(strings.TrimPrefix(up.URL, "http://"), time.Second, &http.Transport{})
	t.Cleanup(tr.Close)
	for _, h := range [][2]string{
		{"X-A\r\nX-Injected", "1"},
		{"X-A", "1\r\nX-Injected: 1"},
		{"X-A", "1\nGET /smuggled HTTP/1.1"},
		{"X A", "1"},
		{"", "1"},
	} {
		req, _ := http.NewRequest("GET", up.URL+"/a", nil)
		req.Header[h[0]] = []string{h[1]}
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
			t.Errorf("header %q: %q was sent", h[0], h[1])
		}
	}
	if seen := up.requests(); len(seen) != 0 {
		t.Fatalf("ComfyUI received %q", seen)
	}
	// A valid request goes through, so the refusals above are not a broken
	// transport.
	req, _ := http.NewRequest("GET", up.URL+"/a", bytes.NewReader(nil))
	req.Header.Set("X-A", "1\t2")
	resp, err := tr.RoundTrip(req)
	must(t, err)
	resp.Body.Close()
}

// TestLargeOrUnsizedUploadsAndUpgradesTakeTheFallback: the synchronous path
// writes the whole body before reading, which can deadlock when ComfyUI
// answers early; those requests go through http.Transport, which reads
// while it writes.
func TestLargeOrUnsizedUploadsAndUpgradesTakeTheFallback(t *testing.T) {
	tr := newSyncTransport("127.0.0.1:8188", time.Second, &http.Transport{})
	mk := func(method string, body io.Reader, n int64, h ...string) *http.Request {
		r, _ := http.NewRequest(method, "http://127.0.0.1:8188/upload/image", body)
		r.ContentLength = n
		for i := 0; i+1 < len(h); i += 2 {
			r.Header.Set(h[i], h[i+1])
		}
		return r
	}
	small := strings.NewReader("x")
	for _, c := range []struct {
		name string
		req  *http.Request
		sync bool
	}{
		{"a GET", mk("GET", nil, 0), true},
		{"a 64 KiB body", mk("POST", small, maxSyncBody), true},
		{"a body over 64 KiB", mk("POST", small, maxSyncBody+1), false},
		{"a body of unknown length", mk("POST", small, -1), false},
		{"Expect: 100-continue", mk("POST", small, 1, "Expect", "100-continue"), false},
		{"a websocket upgrade", mk("GET", nil, 0, "Connection", "Upgrade", "Upgrade", "websocket"), false},
	} {
		if got := tr.useSync(c.req); got != c.sync {
			t.Errorf("%s: synchronous = %v, want %v", c.name, got, c.sync)
		}
	}
}

// TestEarlyAnswerToALargeUploadDoesNotDeadlock: ComfyUI refusing a large
// upload before reading it must reach the client.
func TestEarlyAnswerToALargeUploadDoesNotDeadlock(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 7\r\nConnection: close\r\n\r\ntoo big")
				// Leave without reading the body; do not reset it.
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, io.LimitReader(c, 64<<20))
			}()
		}
	}()
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Upstream = "http://" + ln.Addr().String() }})
	body := bytes.Repeat([]byte("x"), 32<<20)
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", g.URL+"/upload/image", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+seedHash)
		resp, err := noRedirect.Do(req)
		if err != nil {
			done <- -1
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	select {
	case s := <-done:
		if s != 413 {
			t.Fatalf("status %d, want ComfyUI's 413", s)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a 32 MiB upload ComfyUI refused early hung for 30 s")
	}
}

// TestShutdownClosesThePool: connections pooled to ComfyUI do not outlive
// the gateway.
func TestShutdownClosesThePool(t *testing.T) {
	up := startRawUpstream(t, func(c net.Conn, _, _ int, _ *http.Request, _ []byte) bool {
		okAnswer(c, "ok")
		return true
	})
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Upstream = up.URL }})
	authDo(t, g, "GET", "/queue", nil)
	if g.Server.upstreamPool.idleCount() != 1 {
		t.Fatal("nothing pooled")
	}
	if up.closed.Load() != 0 {
		t.Fatal("the connection closed before shutdown")
	}
	g.Stop()
	eventually(t, 10*time.Second, "ComfyUI's side of the pooled connection closed after Serve returned", func() bool {
		return up.closed.Load() == 1
	})
}

// TestIdlePooledConnectionsAreClosedBeforeComfyUIDoes: aiohttp closes idle
// keep-alive connections after 75 s; the gateway closes its own first.
func TestIdlePooledConnectionsAreClosedBeforeComfyUIDoes(t *testing.T) {
	if upstreamIdleTimeout >= 75*time.Second {
		t.Fatalf("upstreamIdleTimeout %s is not below aiohttp's 75 s keep-alive", upstreamIdleTimeout)
	}
	up := startRawUpstream(t, func(c net.Conn, _, _ int, _ *http.Request, _ []byte) bool {
		okAnswer(c, "ok")
		return true
	})
	tr := newSyncTransport(strings.TrimPrefix(up.URL, "http://"), time.Second, &http.Transport{})
	tr.idleTimeout = 50 * time.Millisecond
	t.Cleanup(tr.Close)
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest("GET", up.URL+"/a", nil)
		resp, err := tr.RoundTrip(req)
		must(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if tr.idleCount() != 1 {
		t.Fatalf("%d pooled, want 1", tr.idleCount())
	}
	eventually(t, 5*time.Second, "the idle connection closed by the timer", func() bool { return tr.idleCount() == 0 })
}

// TestBodyClosedFromAnotherGoroutineEndsTheReadAndIsNotPooled: the proxy
// may close a response body while a read on it waits for ComfyUI; the read
// must end, and the half-read connection must not be reused.
func TestBodyClosedFromAnotherGoroutineEndsTheReadAndIsNotPooled(t *testing.T) {
	up := startRawUpstream(t, func(c net.Conn, _, _ int, _ *http.Request, _ []byte) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
		return true // the other 96 bytes never come
	})
	tr := newSyncTransport(strings.TrimPrefix(up.URL, "http://"), time.Second, &http.Transport{})
	t.Cleanup(tr.Close)
	req, _ := http.NewRequest("GET", up.URL+"/view", nil)
	resp, err := tr.RoundTrip(req)
	must(t, err)
	head := make([]byte, 4)
	_, err = io.ReadFull(resp.Body, head)
	must(t, err)
	readDone := make(chan error, 1)
	go func() {
		_, err := resp.Body.Read(make([]byte, 10))
		readDone <- err
	}()
	must(t, resp.Body.Close())
	select {
	case err := <-readDone:
		if err == nil {
			t.Fatal("the read returned data after Close")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a read blocked on ComfyUI outlived Close by 10 s")
	}
	must(t, resp.Body.Close()) // twice is harmless
	if n := tr.idleCount(); n != 0 {
		t.Fatalf("a half-read connection was pooled (%d idle)", n)
	}
	eventually(t, 5*time.Second, "ComfyUI's side closed", func() bool { return up.closed.Load() == 1 })
}
