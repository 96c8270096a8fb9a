package server

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
	"github.com/gorilla/websocket"
)

// timed runs f and returns how long it took.
func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

func TestUpstreamRefusingConnectionsGets502(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	closed := "http://" + ln.Addr().String()
	ln.Close()
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Upstream = closed }})
	var resp *http.Response
	if d := timed(func() { resp = g.do(t, "GET", "/queue", nil, "Authorization: Bearer "+seedHash) }); d > 5*time.Second {
		t.Fatalf("refused connection took %s to report", d)
	}
	if resp.StatusCode != 502 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d Retry-After %q, want 502 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

func TestUpstreamThatNeverAnswersGets504AndGatewayStaysResponsive(t *testing.T) {
	g := startGateway(t, gatewayOpts{
		configure: func(c *Config) { c.UpstreamTimeout = 500 * time.Millisecond },
		fake: fakecomfy.Options{Delay: func(r *http.Request) time.Duration {
			if r.URL.Path == "/history" {
				return time.Hour // accepts, never answers
			}
			return 0
		}},
	})
	var wg sync.WaitGroup
	errs := make(chan string, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", g.URL+"/history", nil)
			req.Header.Set("Authorization", "Bearer "+seedHash)
			start := time.Now()
			resp, err := noRedirect.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			resp.Body.Close()
			if d := time.Since(start); resp.StatusCode != 504 || d > 5*time.Second {
				errs <- resp.Status + " after " + d.String()
			}
		}()
	}
	// Meanwhile other requests are answered at once.
	for i := 0; i < 10; i++ {
		if d := timed(func() { status(t, g, seedHash) }); d > time.Second {
			t.Errorf("a normal request took %s while the upstream hung", d)
		}
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("hung request: %s, want 504 within the bound", e)
	}
}

// resettingUpstream answers every request with headers and part of a body,
// then resets the TCP connection.
func resettingUpstream(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					c.Close()
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nContent-Type: application/octet-stream\r\n\r\n")
				c.Write(make([]byte, 5000))
				c.(*net.TCPConn).SetLinger(0) // RST, not FIN
				c.Close()
			}(c)
		}
	}()
	return "http://" + ln.Addr().String()
}

func TestUpstreamResetMidResponseAbortsTheClientResponse(t *testing.T) {
	up := resettingUpstream(t)
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Upstream = up }})
	req, _ := http.NewRequest("GET", g.URL+"/view?filename=x.png", nil)
	req.Header.Set("Authorization", "Bearer "+seedHash)
	resp, err := noRedirect.Do(req)
	must(t, err)
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatalf("read %d bytes and a clean end: a cut response must not look complete", n)
	}
	// The gateway is unharmed.
	if s := statusWith(t, noRedirect, g.URL+"/healthz", "").StatusCode; s != 200 {
		t.Fatalf("healthz after the reset = %d", s)
	}
}

// abruptWSUpstream upgrades, sends one frame, then drops the TCP connection
// without a close frame.
func abruptWSUpstream(t *testing.T) (string, chan struct{}) {
	drop := make(chan struct{})
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		_ = c.WriteMessage(websocket.TextMessage, []byte(`{"type":"status"}`))
		<-drop
		c.UnderlyingConn().Close()
	}))
	t.Cleanup(srv.Close)
	return srv.URL, drop
}

func TestUpstreamWebsocketDroppedAbruptlyClosesTheClientWithoutLeaks(t *testing.T) {
	up, drop := abruptWSUpstream(t)
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Upstream = up }})
	// Serve starts its goroutines (accept loop, file watcher) asynchronously:
	// count once they are all up and the count has settled.
	statusWith(t, noRedirect, g.URL+"/healthz", "")
	noRedirect.CloseIdleConnections()
	before, steady := -1, 0
	eventually(t, 5*time.Second, "a steady goroutine count", func() bool {
		if n := runtime.NumGoroutine(); n != before {
			before, steady = n, 0
			return false
		}
		steady++
		return steady >= 5
	})
	const n = 20
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		c, resp, err := dialWS(t, g, "/ws?clientId=c&token="+url.QueryEscape(seedHash), nil)
		if err != nil {
			t.Fatalf("dial %d: %v (%v)", i, err, resp)
		}
		if _, _, err := c.ReadMessage(); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	close(drop)
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, _, err := c.ReadMessage()
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("client %d still open 3 s after the upstream dropped: %v", i, err)
		}
		c.Close()
	}
	eventually(t, 5*time.Second, "proxied websockets counted closed", func() bool { return g.Server.OpenWebsockets() == 0 })
	eventually(t, 5*time.Second, "goroutines back to where they were", func() bool {
		return runtime.NumGoroutine() <= before
	})
}

func TestSlowUpstreamAnswerDoesNotHoldUpOthers(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", g.URL+"/slow?ms=2000", nil)
			req.Header.Set("Authorization", "Bearer "+seedHash)
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Errorf("slow request: %v", err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("slow request = %d", resp.StatusCode)
			}
		}()
	}
	for i := 0; i < 20; i++ {
		if d := timed(func() { statusWith(t, noRedirect, g.URL+"/queue", seedHash) }); d > 500*time.Millisecond {
			t.Errorf("a quick request took %s behind slow ones", d)
		}
	}
	wg.Wait()
}
