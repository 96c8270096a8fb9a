// Package fakecomfy is an in-process stand-in for ComfyUI 0.3.64, for tests of the gateway.
//
// It speaks the HTTP and WebSocket surface a reverse proxy sees (see
// docs/comfyui-api.md): every route and its /api twin, the origin check that
// answers a bare 403, the raw-path matching that makes /userdata/a%2Fb.json one
// file, the GET/HEAD catch-all that turns unknown POST paths into 405, Range on
// /view, and the websocket frames of a prompt's execution. It records every
// request it receives so tests can assert what the gateway forwarded.
//
// Nothing here imports a project package: the gateway's tests import it, never
// the other way round.
package fakecomfy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// ComfyUIVersion is the ComfyUI release whose surface the fake copies.
const ComfyUIVersion = "0.3.64"

// DefaultMaxUploadSize is ComfyUI's default --max-upload-size (100 MiB).
const DefaultMaxUploadSize = 100 << 20

// DefaultMaxStoredFileSize is the size above which an upload is counted and
// hashed but its bytes are not kept, so benchmarks can upload gigabytes.
const DefaultMaxStoredFileSize = 8 << 20

// Options configures a Server. The zero value behaves like a stock ComfyUI.
type Options struct {
	// DisableOriginCheck turns off ComfyUI's Host/Origin comparison, for tests
	// that want to see the raw headers a proxy forwards even when they would be
	// refused.
	DisableOriginCheck bool

	// Delay, when set, is called for every request after it is recorded and
	// before the origin check; the request then waits the returned duration
	// or until its context ends. The hook may also block (on a channel, say)
	// to hold a request for exactly as long as a test wants. For timeout tests.
	Delay func(r *http.Request) time.Duration

	// StepDelay is the pause between the websocket frames of a fake execution.
	// Zero runs a prompt as fast as possible; a longer one leaves time to look
	// at /queue or to POST /interrupt.
	StepDelay time.Duration

	// MaxUploadSize is the largest request body /upload/* accepts before it
	// answers 413. Zero means DefaultMaxUploadSize.
	MaxUploadSize int64

	// MaxStoredFileSize is the largest upload kept in memory for /view. Larger
	// uploads are still read to the end, counted and hashed. Zero means
	// DefaultMaxStoredFileSize.
	MaxStoredFileSize int64

	// Argv is reported as system.argv by /system_stats. Nil means ["main.py"].
	Argv []string

	// ComfyUILogin makes the fake behave as if the ComfyUI-Login custom node
	// were still installed: requests without its own credentials get its
	// 401 JSON body (or a 302 to /login for browsers). The gateway strips
	// credentials, so behind it every request meets this wall.
	ComfyUILogin bool

	// MultiUser is ComfyUI's --multi-user: GET /users lists the registry,
	// and the comfy-user header picks whose /userdata and /settings a
	// request sees; an id not in the registry is "Unknown user".
	MultiUser bool

	// Users is the users.json a --multi-user start finds, in file order;
	// nil is none (then even "default" is unknown, as in ComfyUI).
	Users []User

	// HoldQueue keeps queued prompts where they are until the test calls
	// Advance, so that what GET /queue shows is decided by the test.
	HoldQueue bool

	// Logf, when set, receives one line per notable event (origin refusals,
	// websocket connects). Nil is silent.
	Logf func(format string, args ...any)
}

// Server is a fake ComfyUI. It is an http.Handler; serve it with
// httptest.NewServer or http.Server. All methods are safe for concurrent use.
type Server struct {
	opts    Options
	routes  []route
	started time.Time

	rec   recorder
	hub   hub
	queue promptQueue
	files fileStore
	users userRegistry
}

var _ http.Handler = (*Server)(nil)

// New returns a Server with empty queues, history and files.
func New(opts Options) *Server {
	if opts.MaxUploadSize <= 0 {
		opts.MaxUploadSize = DefaultMaxUploadSize
	}
	if opts.MaxStoredFileSize <= 0 {
		opts.MaxStoredFileSize = DefaultMaxStoredFileSize
	}
	if opts.Argv == nil {
		opts.Argv = []string{"main.py"}
	}
	s := &Server{opts: opts, started: time.Now().UTC().Truncate(time.Second)}
	s.hub.init()
	s.queue.init(s)
	s.files.init(s.started)
	s.users.init(opts.MultiUser, opts.Users)
	s.routes = s.routeTable()
	return s
}

// Close closes every open websocket and stops the execution worker. Requests
// still in flight finish normally.
func (s *Server) Close() {
	s.queue.close()
	s.hub.closeAll(1001, "server shutting down")
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

// ServeHTTP records the request, applies the Delay hook and ComfyUI's origin
// check, then dispatches it the way ComfyUI's aiohttp router would.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body := &countingReader{r: r.Body}
	r.Body = body
	idx := s.rec.start(r)
	rw := &recordingWriter{ResponseWriter: w, imagePath: hasImageExtension(r.URL.Path)}
	defer func() { s.rec.finish(idx, rw.statusCode(), body.count()) }()

	if s.opts.Delay != nil {
		if d := s.opts.Delay(r); d > 0 && !sleepCtx(r.Context(), d) {
			return
		}
	}

	if !s.opts.DisableOriginCheck {
		switch err := checkOrigin(r); {
		case errors.Is(err, errOriginMismatch):
			s.logf("fakecomfy: %v, returning 403", err)
			rw.WriteHeader(http.StatusForbidden)
			return
		case err != nil:
			// aiohttp turns the ValueError urllib raises into a 500.
			s.logf("fakecomfy: origin check: %v", err)
			http.Error(rw, "500 Internal Server Error\n\nServer got itself in trouble", http.StatusInternalServerError)
			return
		}
	}

	if s.opts.ComfyUILogin && r.URL.Path != "/login" && r.Header.Get("Authorization") == "" && r.URL.Query().Get("token") == "" {
		if strings.Contains(r.Header.Get("Accept"), "text/html") {
			http.Redirect(rw, r, "/login", http.StatusFound)
			return
		}
		rw.Header().Set("Content-Type", "application/json; charset=utf-8")
		rw.WriteHeader(http.StatusUnauthorized)
		_, _ = rw.Write([]byte(`{"error": "Authentication required."}`))
		return
	}

	// The origin middleware answers every OPTIONS itself, on any path.
	if r.Method == http.MethodOptions {
		rw.WriteHeader(http.StatusOK)
		return
	}

	s.dispatch(rw, r)
}

// sleepCtx waits d or until ctx ends; it reports whether the full wait elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// params holds the decoded values of a route's {placeholders}.
type params map[string]string

type handlerFunc func(w http.ResponseWriter, r *http.Request, p params)

// route is one aiohttp route. Its pattern is matched segment by segment on the
// escaped path, so %2F inside a segment never splits it, exactly as aiohttp
// matches {file} against the raw path.
type route struct {
	method  string   // GET also answers HEAD, as aiohttp's add_get does
	pattern []string // nil for "/"; "{name}" segments capture one raw segment
	api     bool     // also registered under /api, as PromptServer.add_routes does
	handle  handlerFunc
}

func (s *Server) dispatch(w http.ResponseWriter, r *http.Request) {
	escaped := r.URL.EscapedPath()
	var allowed []string
	try := func(path string, apiOnly bool) bool {
		segs := splitPath(path)
		for _, rt := range s.routes {
			if apiOnly && !rt.api {
				continue
			}
			p, ok := matchPattern(rt.pattern, segs)
			if !ok {
				continue
			}
			if rt.method == r.Method || (rt.method == http.MethodGet && r.Method == http.MethodHead) {
				rt.handle(w, r, p)
				return true
			}
			allowed = append(allowed, rt.method)
			if rt.method == http.MethodGet {
				allowed = append(allowed, http.MethodHead)
			}
		}
		return false
	}
	if rest, ok := strings.CutPrefix(escaped, "/api/"); ok && try("/"+rest, true) {
		return
	}
	if try(escaped, false) {
		return
	}
	// web.static('/', web_root) is registered last and matches every path for
	// GET and HEAD; for any other method the path "exists" but the method does
	// not, hence 405 rather than 404 for an unknown POST.
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		if len(allowed) == 0 {
			s.serveStatic(w, r)
			return
		}
	} else {
		allowed = append(allowed, http.MethodGet, http.MethodHead)
	}
	w.Header().Set("Allow", strings.Join(dedupe(allowed), ","))
	textError(w, http.StatusMethodNotAllowed)
}

func splitPath(p string) []string {
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

func matchPattern(pattern, segs []string) (params, bool) {
	if len(pattern) != len(segs) {
		return nil, false
	}
	var p params
	for i, want := range pattern {
		got := segs[i]
		if name, ok := strings.CutPrefix(want, "{"); ok {
			if got == "" {
				return nil, false
			}
			v, err := url.PathUnescape(got)
			if err != nil {
				v = got
			}
			if p == nil {
				p = params{}
			}
			p[strings.TrimSuffix(name, "}")] = v
			continue
		}
		if want != got {
			return nil, false
		}
	}
	return p, true
}

func dedupe(xs []string) []string {
	seen := map[string]bool{}
	out := xs[:0]
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// textError writes aiohttp's plain-text error body, e.g. "404: Not Found".
func textError(w http.ResponseWriter, code int) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintf(w, "%d: %s", code, http.StatusText(code))
}

// Recorded is one request as the fake received it.
type Recorded struct {
	Method string
	// Path is r.URL.EscapedPath(): %2F stays %2F, so tests can check that the
	// gateway forwarded the raw path.
	Path     string
	RawQuery string
	// Host is the Host header the fake saw (r.Host).
	Host   string
	Header http.Header
	// BodyBytes is how many body bytes the handler read. It is final once
	// Status is non-zero.
	BodyBytes int64
	// Status is the response status, 101 for an upgraded websocket, 0 while
	// the request is still being handled.
	Status int
}

type recorder struct {
	mu   sync.Mutex
	reqs []Recorded
	gen  int // bumped by Reset so finish() of an old request is ignored
}

func (rc *recorder) start(r *http.Request) (ref [2]int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.reqs = append(rc.reqs, Recorded{
		Method:   r.Method,
		Path:     r.URL.EscapedPath(),
		RawQuery: r.URL.RawQuery,
		Host:     r.Host,
		Header:   r.Header.Clone(),
	})
	return [2]int{rc.gen, len(rc.reqs) - 1}
}

func (rc *recorder) finish(ref [2]int, status int, n int64) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if ref[0] != rc.gen || ref[1] >= len(rc.reqs) {
		return
	}
	rc.reqs[ref[1]].Status = status
	rc.reqs[ref[1]].BodyBytes = n
}

// Requests returns a copy of every request received since New or Reset, oldest first.
func (s *Server) Requests() []Recorded {
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	out := make([]Recorded, len(s.rec.reqs))
	for i, r := range s.rec.reqs {
		r.Header = r.Header.Clone()
		out[i] = r
	}
	return out
}

// LastRequest returns the most recent request whose escaped path starts with
// pathPrefix ("" matches any).
func (s *Server) LastRequest(pathPrefix string) (Recorded, bool) {
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	for i := len(s.rec.reqs) - 1; i >= 0; i-- {
		if r := s.rec.reqs[i]; strings.HasPrefix(r.Path, pathPrefix) {
			r.Header = r.Header.Clone()
			return r, true
		}
	}
	return Recorded{}, false
}

// Reset forgets the recorded requests. Queue, history, files and websockets stay.
func (s *Server) Reset() {
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	s.rec.reqs = nil
	s.rec.gen++
}

type countingReader struct {
	r  io.ReadCloser
	mu sync.Mutex
	n  int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.mu.Lock()
	c.n += int64(n)
	c.mu.Unlock()
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

func (c *countingReader) count() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// recordingWriter remembers the status and applies ComfyUI's cache_control
// middleware for image paths. It keeps Flush and Hijack reachable, which
// streaming and the websocket upgrade need.
type recordingWriter struct {
	http.ResponseWriter
	imagePath bool
	mu        sync.Mutex
	status    int
}

func (w *recordingWriter) WriteHeader(code int) {
	w.mu.Lock()
	if w.status == 0 {
		w.status = code
		if w.imagePath && w.Header().Get("Cache-Control") == "" {
			switch {
			case code == http.StatusNotFound:
				w.Header().Set("Cache-Control", "public, max-age=3600")
			case code >= 200 && code <= 206, code == 301, code == 308:
				w.Header().Set("Cache-Control", "public, max-age=86400")
			case code == 302, code == 303, code == 307:
				w.Header().Set("Cache-Control", "no-cache")
			}
		}
	}
	w.mu.Unlock()
	w.ResponseWriter.WriteHeader(code)
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	unset := w.status == 0
	w.mu.Unlock()
	if unset {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

func (w *recordingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *recordingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("fakecomfy: underlying ResponseWriter cannot hijack")
	}
	c, brw, err := h.Hijack()
	if err == nil {
		w.mu.Lock()
		w.status = http.StatusSwitchingProtocols
		w.mu.Unlock()
	}
	return c, brw, err
}

func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *recordingWriter) statusCode() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

var imageExtensions = []string{".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}

func hasImageExtension(p string) bool {
	p = strings.ToLower(p)
	for _, ext := range imageExtensions {
		if strings.HasSuffix(p, ext) {
			return true
		}
	}
	return false
}
