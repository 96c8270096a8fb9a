package server

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// heldConn opens a connection from ip and sends the start of a request that
// never ends, so the gateway holds it as busy, not idle. refused is closed
// when the gateway answers it (the 503 at a bound) or closes it; status is
// the answer's status, 0 for none.
type heldConn struct {
	conn    net.Conn
	refused chan struct{}
	status  atomic.Int32
}

func holdConn(t *testing.T, g *gateway, ip string) *heldConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	h := &heldConn{conn: c, refused: make(chan struct{})}
	_, _ = io.WriteString(c, "GET /queue HTTP/1.1\r\nHost: gw\r\n")
	go func() {
		defer close(h.refused)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			h.status.Store(int32(resp.StatusCode))
		}
	}()
	return h
}

func countRefused(hs []*heldConn) (n int) {
	for _, h := range hs {
		select {
		case <-h.refused:
			n++
		default:
		}
	}
	return n
}

// TestOneClientCannotHoldEveryConnection: one address opening many
// connections gets at most --max-conns-per-client of them, the rest a 503;
// another client and /healthz are still answered.
func TestOneClientCannotHoldEveryConnection(t *testing.T) {
	g := startGateway(t, gatewayOpts{configure: func(c *Config) {
		c.MaxConns = 32
		c.MaxConnsPerClient = 8
		c.ReadHeaderTimeout = time.Minute
	}})
	var flood []*heldConn
	for i := 0; i < 40; i++ {
		flood = append(flood, holdConn(t, g, "127.0.0.2"))
	}
	eventually(t, 10*time.Second, "32 of 40 connections from one address refused", func() bool {
		return countRefused(flood) >= 32
	})
	got503 := 0
	for _, h := range flood {
		if h.status.Load() == http.StatusServiceUnavailable {
			got503++
		}
	}
	if got503 == 0 {
		t.Fatal("no refused connection got the 503")
	}
	if n := g.Server.conns.Open(); n != 8 {
		t.Fatalf("%d connections open, want the per-client bound 8", n)
	}

	other := clientFrom(t, "127.0.0.1")
	if s := statusWith(t, other, g.URL+"/healthz", "").StatusCode; s != 200 {
		t.Fatalf("/healthz from another client = %d, want 200", s)
	}
	if s := statusWith(t, other, g.URL+"/queue", seedToken).StatusCode; s != 200 {
		t.Fatalf("authenticated request from another client = %d, want 200", s)
	}
	if n := countRefused(flood); n != 32 {
		t.Fatalf("%d of the flood's connections were answered, want 32 refused and 8 held", n)
	}
}

// TestIdleConnectionsMakeRoomAtTheBound: at the overall bound an idle
// keep-alive connection is closed for a new client; with none idle, the new
// client gets the 503.
func TestIdleConnectionsMakeRoomAtTheBound(t *testing.T) {
	g := startGateway(t, gatewayOpts{configure: func(c *Config) {
		c.MaxConns = 4
		c.MaxConnsPerClient = 4
		c.ReadHeaderTimeout = time.Minute
	}})
	// Four idle keep-alive connections from 127.0.0.2.
	for i := 0; i < 4; i++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
		c, err := d.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("keep-alive request %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	eventually(t, 10*time.Second, "four idle connections", func() bool { return idleConns(g.Server.conns) == 4 })
	// 127.0.0.1 still gets in: idle connections make room.
	var held []*heldConn
	for i := 0; i < 4; i++ {
		held = append(held, holdConn(t, g, "127.0.0.1"))
	}
	eventually(t, 10*time.Second, "idle connections closed for the new client", func() bool {
		return g.Server.conns.evicted.Load() == 4
	})
	if n := countRefused(held); n != 0 {
		t.Fatalf("%d new connections refused although idle ones could make room", n)
	}
	// Now nothing is idle: a fifth connection is refused with the 503.
	late := holdConn(t, g, "127.0.0.3")
	select {
	case <-late.refused:
	case <-time.After(10 * time.Second):
		t.Fatal("a connection over the bound was not refused")
	}
	if s := late.status.Load(); s != http.StatusServiceUnavailable {
		t.Fatalf("over the bound: status %d, want 503", s)
	}
}

// TestTrustedProxyCountsTowardTheOverallBoundOnly: every client behind a
// trusted proxy shares its address, so the per-client bound does not apply
// to it.
func TestTrustedProxyCountsTowardTheOverallBoundOnly(t *testing.T) {
	g := startGateway(t, gatewayOpts{configure: func(c *Config) {
		c.MaxConns = 6
		c.MaxConnsPerClient = 2
		c.TrustedProxies = "127.0.0.3"
		c.ReadHeaderTimeout = time.Minute
	}})
	var hs []*heldConn
	for i := 0; i < 8; i++ {
		hs = append(hs, holdConn(t, g, "127.0.0.3"))
	}
	eventually(t, 10*time.Second, "two of eight refused at the overall bound", func() bool { return countRefused(hs) >= 2 })
	if n := g.Server.conns.Open(); n != 6 {
		t.Fatalf("%d connections from the trusted proxy open, want the overall bound 6", n)
	}
}

// idleConns is how many connections the limiter knows as idle.
func idleConns(l *connLimiter) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.idle)
}

// TestHealthcheckGetsInAtTheOverallBound: with every connection taken by
// other clients, the container's own healthcheck (from 127.0.0.1) is still
// answered, up to healthReserve connections at once; one more is refused,
// and other clients stay refused.
func TestHealthcheckGetsInAtTheOverallBound(t *testing.T) {
	g := startGateway(t, gatewayOpts{configure: func(c *Config) {
		c.MaxConns = 4
		c.MaxConnsPerClient = 4
		c.ReadHeaderTimeout = time.Minute
	}})
	var flood []*heldConn
	for i := 0; i < 4; i++ {
		flood = append(flood, holdConn(t, g, "127.0.0.2"))
	}
	eventually(t, 10*time.Second, "four held connections open", func() bool { return g.Server.conns.Open() == 4 })
	late := holdConn(t, g, "127.0.0.3")
	eventually(t, 10*time.Second, "another client refused at the bound", func() bool { return countRefused([]*heldConn{late}) == 1 })
	if got := late.status.Load(); got != http.StatusServiceUnavailable {
		t.Fatalf("a client over the bound got %d, want 503", got)
	}

	health := clientFrom(t, "127.0.0.1")
	resp, err := health.Get(g.URL + "/healthz")
	if err != nil {
		t.Fatalf("healthcheck at the overall bound: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthcheck at the overall bound got %d, want 200", resp.StatusCode)
	}
	health.CloseIdleConnections()

	var own []*heldConn
	for i := 0; i < healthReserve+1; i++ {
		own = append(own, holdConn(t, g, "127.0.0.1"))
	}
	eventually(t, 10*time.Second, "one connection over the reserve refused", func() bool { return countRefused(own) == 1 })
	if n := countRefused(flood); n != 0 {
		t.Fatalf("%d of the held connections were closed to make room for the reserve", n)
	}
}
