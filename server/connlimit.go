package server

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/comfyui-auth/comfyui-auth/middleware"
	"github.com/rs/zerolog"
)

// Connection bounds. A connection costs a descriptor, and one more for
// ComfyUI while it is proxied; the process keeps a reserve for everything
// else it must be able to open at any time.
const (
	// defaultMaxConns caps the derived overall bound: ComfyUI serves a
	// handful of people, and 4,096 connections (about 20 KiB each when
	// idle) are far more than they use.
	defaultMaxConns = 4096
	// defaultMaxConnsPerClient: a browser opens up to 6 connections per
	// host plus its websocket, and all the host's clients reach a Docker
	// published port from one bridge address, as do users behind one NAT;
	// 256 leaves room for about 35 browsers or busy scripts behind one
	// address while one address alone fills at most a sixteenth of the
	// default overall bound.
	defaultMaxConnsPerClient = 256
	// descriptorReserve is kept free besides the descriptors open at start
	// and two per connection: the credential file and its directory on
	// reload, the TLS pair, the metrics listener and its scrapes, logging,
	// ComfyUI's idle keep-alive connections (up to 128) and the refusals
	// being written.
	descriptorReserve = 128 + 64 + maxRefusing + 2*healthReserve
	// maxRefusing bounds the refused connections being answered at once;
	// beyond it a refused connection is closed without an answer.
	maxRefusing = 32
	// healthReserve is how many connections from the container itself
	// (127.0.0.1 or ::1, where `comfyui-auth healthcheck` dials from) are
	// admitted beyond the overall bound, so that a flood from outside
	// does not also make Docker report the container unhealthy and have it
	// restarted. The per-client bound still applies to them.
	healthReserve = 4
)

// connLimits is the overall and per-client connection bound in force.
type connLimits struct {
	max, perClient int
	// fileLimit is RLIMIT_NOFILE's soft limit the bounds were derived
	// from, 0 when unknown.
	fileLimit uint64
}

// deriveConnLimits fills the bounds left at 0 from the descriptor limit:
// the soft limit is first raised to the hard one (Go does this at start on
// Linux; doing it here keeps it true wherever the server is embedded), then
// half of what is left after the descriptors already open and the reserve
// goes to client connections, the other half to their ComfyUI connections.
func deriveConnLimits(maxConns, perClient int) connLimits {
	l := connLimits{max: maxConns, perClient: perClient}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		if lim.Cur < lim.Max {
			raised := lim
			raised.Cur = raised.Max
			if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
				lim = raised
			}
		}
		l.fileLimit = lim.Cur
	}
	if l.max == 0 {
		l.max = defaultMaxConns
		if l.fileLimit > 0 && l.fileLimit < 1<<30 {
			free := int64(l.fileLimit) - int64(openDescriptors()) - descriptorReserve
			l.max = int(max(1, min(int64(defaultMaxConns), free/2)))
		}
	}
	if l.perClient == 0 {
		l.perClient = min(defaultMaxConnsPerClient, l.max)
	}
	return l
}

// openDescriptors counts the process's open descriptors, or guesses 64
// where /proc is not there.
func openDescriptors() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 64
	}
	return len(ents)
}

// connLimiter admits connections within the overall and per-client bounds.
// A client is an address, an IPv6 client a /64, as for the throttle.
// Addresses in exempt (the trusted proxies, behind which every client
// shares the proxy's address) count toward the overall bound only.
//
// At a bound it first closes an idle keep-alive connection (of the same
// client, for the per-client bound) to make room; with none, the new
// connection is refused: on plain HTTP it gets a 503 with Retry-After and
// is closed without its request being read, under TLS it is closed.
type connLimiter struct {
	limits connLimits
	exempt middleware.TrustedProxies
	tls    bool
	logger zerolog.Logger

	mu   sync.Mutex
	open int
	// reserved counts the connections admitted over the overall bound
	// from the healthcheck's own addresses (healthReserve).
	reserved int
	per      map[netip.Addr]int
	idle     map[*limitedConn]struct{}
	warned   time.Time

	refusing chan struct{}
	refused  atomic.Int64
	evicted  atomic.Int64
}

func newConnLimiter(limits connLimits, exempt middleware.TrustedProxies, isTLS bool, logger zerolog.Logger) *connLimiter {
	return &connLimiter{limits: limits, exempt: exempt, tls: isTLS, logger: logger,
		per: map[netip.Addr]int{}, idle: map[*limitedConn]struct{}{}, refusing: make(chan struct{}, maxRefusing)}
}

// Open is the number of connections admitted and not yet closed.
func (l *connLimiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// listener wraps ln so that Accept admits within the bounds.
func (l *connLimiter) listener(ln net.Listener) net.Listener {
	return &limitedListener{Listener: ln, l: l}
}

type limitedListener struct {
	net.Listener
	l *connLimiter
}

func (ln *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if lc := ln.l.admit(c); lc != nil {
			return lc, nil
		}
	}
}

// limitedConn releases its slot when closed, once.
type limitedConn struct {
	net.Conn
	l        *connLimiter
	key      netip.Addr
	counted  bool // toward the per-client bound
	reserved bool // admitted over the overall bound (healthReserve)
	released bool // under l.mu
	once     sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c) })
	return err
}

// CloseWrite lets net/http half-close before closing, as it does on a bare
// TCP connection, so a client still sending is not reset before it has
// read the answer.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (l *connLimiter) admit(c net.Conn) *limitedConn {
	key := netip.Addr{}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		key = clientKeyOf(ap.Addr())
	}
	counted := !l.exempt.Contains(key)
	var victims []*limitedConn
	l.mu.Lock()
	if counted && l.per[key] >= l.limits.perClient {
		if v := l.idleOfLocked(key); v != nil {
			victims = append(victims, v)
		}
	}
	if l.open >= l.limits.max {
		if v := l.idleOfLocked(netip.Addr{}); v != nil {
			victims = append(victims, v)
		}
	}
	overClient := counted && l.per[key] >= l.limits.perClient
	overAll := l.open >= l.limits.max
	reserved := overAll && !overClient && isHealthcheckAddr(key) && l.reserved < healthReserve
	if (overClient || overAll) && !reserved {
		warn := time.Since(l.warned) >= time.Minute
		if warn {
			l.warned = time.Now()
		}
		l.mu.Unlock()
		closeAll(victims)
		l.refuse(c, key, overClient, warn)
		return nil
	}
	if reserved {
		l.reserved++
	} else {
		l.open++
	}
	lc := &limitedConn{Conn: c, l: l, key: key, counted: counted, reserved: reserved}
	if counted {
		l.per[key]++
	}
	l.mu.Unlock()
	closeAll(victims)
	return lc
}

// idleOfLocked takes an idle connection of key (any client when key is the
// zero Addr) out of the counts, so its slot is free at once, and returns it
// for closing; nil when there is none.
func (l *connLimiter) idleOfLocked(key netip.Addr) *limitedConn {
	for c := range l.idle {
		if key.IsValid() && (c.key != key || !c.counted) {
			continue
		}
		if !key.IsValid() && c.reserved {
			continue // closing it frees no room under the overall bound
		}
		l.releaseLocked(c)
		l.evicted.Add(1)
		return c
	}
	return nil
}

func closeAll(cs []*limitedConn) {
	for _, c := range cs {
		_ = c.Close()
	}
}

func (l *connLimiter) release(c *limitedConn) {
	l.mu.Lock()
	l.releaseLocked(c)
	l.mu.Unlock()
}

func (l *connLimiter) releaseLocked(c *limitedConn) {
	if c.released {
		return
	}
	c.released = true
	if c.reserved {
		l.reserved--
	} else {
		l.open--
	}
	delete(l.idle, c)
	if c.counted {
		if l.per[c.key]--; l.per[c.key] <= 0 {
			delete(l.per, c.key)
		}
	}
}

// connState is http.Server.ConnState: it keeps the set of idle keep-alive
// connections that may be closed to make room.
func (l *connLimiter) connState(c net.Conn, st http.ConnState) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if lc.released {
		return
	}
	if st == http.StateIdle {
		l.idle[lc] = struct{}{}
	} else {
		delete(l.idle, lc)
	}
}

// refusedAnswer is what a connection over a bound gets on plain HTTP.
const refusedBody = `{"error":"Too many connections; retry shortly.","reason":"the gateway's connection limit is reached","code":"` +
	string(middleware.CodeTooManyConnections) + `"}` + "\n"

var refusedAnswer = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n" +
	"Cache-Control: no-store\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: " +
	strconv.Itoa(len(refusedBody)) + "\r\n\r\n" + refusedBody

// refuse answers and closes a connection over a bound, without reading its
// request. The answer is written, the write side shut, and whatever the
// client already sent read off for at most half a second, so the close does
// not reset the connection before the client reads the 503. At most
// maxRefusing connections are refused that way at once; the others, and
// every TLS connection, are closed at once.
func (l *connLimiter) refuse(c net.Conn, key netip.Addr, perClient, warn bool) {
	l.refused.Add(1)
	if warn {
		bound, n := "overall", l.limits.max
		if perClient {
			bound, n = "per-client", l.limits.perClient
		}
		l.logger.Warn().Str("client", key.String()).Str("bound", bound).Int("limit", n).
			Msg("connection limit reached: refusing new connections (logged at most once a minute; see comfyui_auth_connections_refused_total)")
	}
	if l.tls {
		_ = c.Close()
		return
	}
	select {
	case l.refusing <- struct{}{}:
	default:
		_ = c.Close()
		return
	}
	go func() {
		defer func() { <-l.refusing }()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := io.WriteString(c, refusedAnswer); err != nil {
			return
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		_, _ = io.CopyN(io.Discard, c, 64<<10)
	}()
}

// isHealthcheckAddr reports whether a is an address only the container
// itself connects from: the healthcheck dials 127.0.0.1, and ::1 is its
// IPv6 twin. Other loopback addresses are left out, so a host that routes
// 127.0.0.0/8 elsewhere gains no reserve.
func isHealthcheckAddr(a netip.Addr) bool {
	return a == netip.AddrFrom4([4]byte{127, 0, 0, 1}) || a == netip.IPv6Loopback()
}

// clientKeyOf groups the addresses one client controls, as the throttle
// does: an IPv6 client usually owns a whole /64.
func clientKeyOf(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}
