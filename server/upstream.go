package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/comfyui-auth/comfyui-auth/middleware"
)

// syncTransport is the proxy's http.RoundTripper for plain requests to
// ComfyUI. It writes the request and reads the answer on the handler's own
// goroutine over a pooled keep-alive connection, where http.Transport hands
// each request to two goroutines per connection and wakes them through
// channels: on a small GET that hand-over is a fifth of the gateway's CPU.
//
// It takes only what it can do safely and passes everything else to
// fallback (an http.Transport with the same timeouts):
//   - websocket and other upgrades, which need the connection both ways;
//   - requests with "Expect: 100-continue", which wait for the answer
//     before the body;
//   - request bodies of unknown length or over maxSyncBody: writing those
//     whole before reading could deadlock when ComfyUI answers early without
//     reading them (a rejected upload), since nothing reads its answer
//     while the write blocks;
//   - any upstream other than the one plain-http host it was made for.
//
// Its contract matches http.Transport where the proxy depends on it:
//   - header names and values are checked as Transport checks them, so
//     nothing that would split a header or a request reaches ComfyUI;
//   - responseHeaderTimeout bounds the wait for the response headers (the
//     error is a net.Error whose Timeout() is true, so the proxy answers
//     504), and response bodies have no time bound (long /view downloads);
//   - the request's context being done closes the connection, which ends
//     a blocked write or read at once;
//   - response headers over maxUpstreamHeaderBytes fail the request;
//   - 1xx answers other than 101 are handed to the request's
//     httptrace.ClientTrace (ReverseProxy forwards them) and skipped;
//   - a connection is reused only when its response body was read to the
//     end, neither side asked to close, and ComfyUI sent nothing beyond the
//     response (stray bytes mean the framing is not what both sides think);
//   - a request that failed before any byte of an answer arrived, on a
//     reused connection, is sent once more on a new connection when it is
//     replayable (GET, HEAD, OPTIONS, TRACE or an Idempotency-Key, with no
//     body or a GetBody): this is ComfyUI having closed an idle connection
//     as the request left. A new connection is never retried.
type syncTransport struct {
	host     string // host:port of ComfyUI
	fallback *http.Transport
	dialer   net.Dialer
	// responseHeaderTimeout bounds the wait for the response headers once
	// the request is written; zero means none.
	responseHeaderTimeout time.Duration
	// idleTimeout closes pooled connections unused for this long.
	idleTimeout time.Duration
	maxIdle     int
	// fallbackOnly sends everything through fallback (benchmarks only).
	fallbackOnly bool

	mu     sync.Mutex
	idle   []*upstreamConn // oldest first; taken from the end
	reaper *time.Timer     // set while idle is not empty
	closed bool
}

const (
	// maxSyncBody is the largest request body the synchronous path writes
	// before reading: far below what loopback socket buffers absorb, so the
	// write finishes even if ComfyUI never reads it.
	maxSyncBody = 64 << 10
	// maxUpstreamHeaderBytes bounds ComfyUI's response headers (both paths).
	maxUpstreamHeaderBytes = 1 << 20
	// upstreamIdleTimeout stays below aiohttp's 75 s keep-alive, so the
	// gateway, not ComfyUI, closes an idle connection, and a request is
	// rarely sent on a connection ComfyUI is closing.
	upstreamIdleTimeout = 60 * time.Second
	// max1xxResponses bounds informational answers before the final one.
	max1xxResponses = 5
)

var _ http.RoundTripper = (*syncTransport)(nil)

func newSyncTransport(host string, headerTimeout time.Duration, fallback *http.Transport) *syncTransport {
	return &syncTransport{
		host:                  host,
		fallback:              fallback,
		dialer:                net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
		responseHeaderTimeout: headerTimeout,
		idleTimeout:           upstreamIdleTimeout,
		maxIdle:               128,
	}
}

// upstreamConn is one connection to ComfyUI with its buffers. Reads go
// through readLimit, which bounds the response headers.
type upstreamConn struct {
	nc        net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	readLimit int64
	nread     int64 // bytes read during the current response's headers
	idleSince time.Time
	reused    bool
}

func (c *upstreamConn) Read(p []byte) (int, error) {
	if c.readLimit <= 0 {
		return 0, fmt.Errorf("ComfyUI's response headers exceed %d bytes", maxUpstreamHeaderBytes)
	}
	if int64(len(p)) > c.readLimit {
		p = p[:c.readLimit]
	}
	n, err := c.nc.Read(p)
	c.readLimit -= int64(n)
	c.nread += int64(n)
	return n, err
}

// useSync reports whether r can take the synchronous path.
func (t *syncTransport) useSync(r *http.Request) bool {
	if t.fallbackOnly || r.URL.Scheme != "http" || r.URL.Host != t.host {
		return false
	}
	if r.Header.Get("Upgrade") != "" || middleware.HeaderHasToken(r.Header, "Connection", "upgrade") {
		return false
	}
	if middleware.HeaderHasToken(r.Header, "Expect", "100-continue") {
		return false
	}
	if r.Body != nil && r.Body != http.NoBody && (r.ContentLength < 0 || r.ContentLength > maxSyncBody) {
		return false
	}
	return len(r.TransferEncoding) == 0
}

// RoundTrip implements http.RoundTripper.
func (t *syncTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !t.useSync(r) {
		return t.fallback.RoundTrip(r)
	}
	if err := validHeaders(r.Header); err != nil {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, err
	}
	for retry := false; ; retry = true {
		c, err := t.get(r.Context(), retry)
		if err != nil {
			if r.Body != nil {
				r.Body.Close()
			}
			return nil, err
		}
		resp, err := t.roundTrip(c, r)
		if err == nil {
			return resp, nil
		}
		if retry || !c.reused || c.nread > 0 || r.Context().Err() != nil || isTimeout(err) || !replayable(r) {
			return nil, err
		}
		if r.GetBody != nil {
			body, gerr := r.GetBody()
			if gerr != nil {
				return nil, err
			}
			r = r.Clone(r.Context())
			r.Body = body
		}
		// The retry dials: a pool just found dead may hold more of the same.
		t.closeIdle()
	}
}

func replayable(r *http.Request) bool {
	if r.Body != nil && r.Body != http.NoBody && r.GetBody == nil {
		return false
	}
	switch r.Method {
	case "", "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return r.Header.Get("Idempotency-Key") != "" || r.Header.Get("X-Idempotency-Key") != ""
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// roundTrip sends r on c and reads the response headers. On error c is
// closed.
func (t *syncTransport) roundTrip(c *upstreamConn, r *http.Request) (*http.Response, error) {
	ctx := r.Context()
	// A done context closes the connection: that ends a write or read
	// blocked on ComfyUI, on this goroutine, at once.
	stop := context.AfterFunc(ctx, func() { c.nc.Close() })
	fail := func(err error) (*http.Response, error) {
		stop()
		c.nc.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, err
	}
	c.nread = 0
	c.readLimit = maxUpstreamHeaderBytes
	if err := r.Write(c.bw); err != nil {
		return fail(fmt.Errorf("sending the request to ComfyUI: %w", err))
	}
	if err := c.bw.Flush(); err != nil {
		return fail(fmt.Errorf("sending the request to ComfyUI: %w", err))
	}
	if t.responseHeaderTimeout > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(t.responseHeaderTimeout))
	}
	trace := httptrace.ContextClientTrace(ctx)
	var resp *http.Response
	for n1xx := 0; ; n1xx++ {
		var err error
		resp, err = http.ReadResponse(c.br, r)
		if err != nil {
			if isTimeout(err) {
				return fail(errHeaderTimeout)
			}
			if c.nread == 0 && errors.Is(err, io.ErrUnexpectedEOF) {
				// ReadResponse reports a connection closed before any byte
				// as an unexpected EOF; it is a plain EOF.
				err = io.EOF
			}
			return fail(fmt.Errorf("reading ComfyUI's response: %w", err))
		}
		code := resp.StatusCode
		if code < 100 || code > 199 {
			break
		}
		if code == http.StatusSwitchingProtocols || n1xx >= max1xxResponses {
			// Upgrades take the fallback path, so a 101 here was not asked for.
			return fail(fmt.Errorf("ComfyUI answered %d to a request that did not ask to switch protocols, or too many 1xx answers", code))
		}
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return fail(err)
			}
		}
	}
	c.readLimit = 1<<63 - 1
	_ = c.nc.SetReadDeadline(time.Time{})
	b := &syncBody{t: t, c: c, body: resp.Body, stop: stop,
		reusable: !resp.Close && !r.Close}
	if resp.Body == http.NoBody {
		// HEAD, 204, 304, Content-Length: 0: the response is complete.
		b.release(true)
	}
	resp.Body = b
	return resp, nil
}

// errHeaderTimeout is the response-header timeout, a net.Error with
// Timeout() true as http.Transport reports it.
var errHeaderTimeout error = headerTimeoutError{}

type headerTimeoutError struct{}

func (headerTimeoutError) Error() string {
	return "timeout awaiting response headers from ComfyUI"
}
func (headerTimeoutError) Timeout() bool   { return true }
func (headerTimeoutError) Temporary() bool { return true }

// syncBody is the response body handed to the proxy. Close may come from
// any goroutine, during a Read.
type syncBody struct {
	t        *syncTransport
	c        *upstreamConn
	body     io.ReadCloser
	stop     func() bool
	reusable bool

	mu       sync.Mutex
	closed   bool
	released bool
}

var errBodyClosed = errors.New("read on a closed response body")

func (b *syncBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, errBodyClosed
	}
	if b.released {
		b.mu.Unlock()
		return 0, io.EOF
	}
	b.mu.Unlock()
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.release(true)
	}
	return n, err
}

// Close ends the response. Before the end of the body it closes the
// connection: the inner body's Close would drain the rest, which for a
// large /view download the client gave up on is a waste, and for a body
// that never ends is a hang.
func (b *syncBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.release(false)
	return nil
}

// release gives the connection back once: to the pool when the body was
// read to its end and reuse is allowed, closed otherwise.
func (b *syncBody) release(complete bool) {
	b.mu.Lock()
	if b.released {
		b.mu.Unlock()
		return
	}
	b.released = true
	b.mu.Unlock()
	// stop fails when the context's AfterFunc has run or is running: the
	// connection is closed or about to be.
	if b.stop() && complete && b.reusable && b.c.br.Buffered() == 0 {
		b.t.put(b.c)
		return
	}
	b.c.nc.Close()
}

// get returns an idle connection that still looks open, or dials; with
// fresh it always dials.
func (t *syncTransport) get(ctx context.Context, fresh bool) (*upstreamConn, error) {
	t.mu.Lock()
	for !fresh && len(t.idle) > 0 {
		c := t.idle[len(t.idle)-1]
		t.idle[len(t.idle)-1] = nil
		t.idle = t.idle[:len(t.idle)-1]
		t.mu.Unlock()
		if idleConnUsable(c.nc) {
			c.reused = true
			return c, nil
		}
		c.nc.Close()
		t.mu.Lock()
	}
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return nil, errors.New("the gateway is shutting down")
	}
	nc, err := t.dialer.DialContext(ctx, "tcp", t.host)
	if err != nil {
		return nil, err
	}
	c := &upstreamConn{nc: nc}
	c.br = bufio.NewReaderSize(c, 4<<10)
	c.bw = bufio.NewWriterSize(nc, 4<<10)
	return c, nil
}

// put returns c to the pool, or closes it if the pool is full or closed.
func (t *syncTransport) put(c *upstreamConn) {
	c.idleSince = time.Now()
	t.mu.Lock()
	if t.closed || len(t.idle) >= t.maxIdle {
		t.mu.Unlock()
		c.nc.Close()
		return
	}
	t.idle = append(t.idle, c)
	if t.reaper == nil {
		t.reaper = time.AfterFunc(t.idleTimeout, t.reap)
	}
	t.mu.Unlock()
}

// reap closes connections idle for idleTimeout and runs again when the
// oldest remaining one is due.
func (t *syncTransport) reap() {
	now := time.Now()
	t.mu.Lock()
	n := 0
	for n < len(t.idle) && now.Sub(t.idle[n].idleSince) >= t.idleTimeout {
		t.idle[n].nc.Close()
		n++
	}
	t.idle = append(t.idle[:0], t.idle[n:]...)
	clear(t.idle[len(t.idle):cap(t.idle)])
	if len(t.idle) > 0 && !t.closed {
		t.reaper = time.AfterFunc(t.idle[0].idleSince.Add(t.idleTimeout).Sub(now), t.reap)
	} else {
		t.reaper = nil
	}
	t.mu.Unlock()
}

// closeIdle closes every pooled connection.
func (t *syncTransport) closeIdle() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, c := range idle {
		c.nc.Close()
	}
}

// idleCount is the number of pooled connections.
func (t *syncTransport) idleCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.idle)
}

// Close closes the pool and the fallback's idle connections; responses in
// flight finish, and their connections are closed instead of pooled.
func (t *syncTransport) Close() {
	t.mu.Lock()
	t.closed = true
	if t.reaper != nil {
		t.reaper.Stop()
		t.reaper = nil
	}
	t.mu.Unlock()
	t.closeIdle()
	t.fallback.CloseIdleConnections()
}

// validHeaders refuses what http.Transport refuses: header names that are
// not RFC 9110 tokens and values holding control characters (a CR or LF
// would let a client-supplied value start a new header or request).
func validHeaders(h http.Header) error {
	for k, vv := range h {
		if !validHeaderName(k) {
			return fmt.Errorf("invalid header name %q", k)
		}
		for _, v := range vv {
			if !validHeaderValue(v) {
				return fmt.Errorf("invalid value for header %q", k)
			}
		}
	}
	return nil
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenByte(s[i]) {
			return false
		}
	}
	return true
}

func isTokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// NewUpstreamTransport returns the transport the proxy uses to reach
// ComfyUI at upstream, and the function that closes its pool. It is
// exported for cmd/comfyui-auth-bench, whose floor relay measures what the
// gateway's authentication, access log and ReverseProxy add on top of it.
func NewUpstreamTransport(upstream *url.URL, headerTimeout time.Duration) (http.RoundTripper, func()) {
	t := newSyncTransport(upstream.Host, headerTimeout, &http.Transport{
		Proxy:                  nil,
		ResponseHeaderTimeout:  headerTimeout,
		DisableCompression:     true,
		MaxIdleConnsPerHost:    128,
		MaxResponseHeaderBytes: maxUpstreamHeaderBytes,
	})
	return t, t.Close
}
