package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/comfyui-auth/comfyui-auth/middleware"
	"github.com/rs/zerolog"
)

// proxyOptions configures newProxy.
type proxyOptions struct {
	upstream *url.URL
	// stripCookies are the gateway's own cookie names, never forwarded.
	stripCookies []string
	// headerTimeout bounds the wait for ComfyUI's response headers.
	headerTimeout time.Duration
	// extensionScript, when set, is appended to ComfyUI's /extensions list
	// (the Logout button).
	extensionScript string
	// onError, when set, is told the status of each upstream failure.
	onError func(status int)
	// comfyUser, when set, is the ComfyUI user id to send as Comfy-User
	// for a request (--comfy-multi-user).
	comfyUser func(r *http.Request) (string, bool)
	// onResponse, when set, sees each ComfyUI answer before it is passed on.
	onResponse func(resp *http.Response)
	// plainTransport sends every request through http.Transport; only
	// benchmarks comparing the two paths set it.
	plainTransport bool
	logger         zerolog.Logger
}

// newProxy returns the reverse proxy to ComfyUI.
//
// On the way to ComfyUI it removes what belongs to the gateway or must not
// be trusted from a client:
//   - the Authorization header (our credential, or a proxy's in front);
//   - the `token` query parameter, keeping every other parameter byte for byte;
//   - the gateway's session cookie, keeping the client's other cookies;
//   - any client Comfy-User header (in any case, with '_' for '-', however
//     often), which ComfyUI's --multi-user mode trusts blindly; with
//     --comfy-multi-user the gateway sets its own (see bindComfyUser).
//
// It sets X-Forwarded-For and X-Forwarded-Proto from the request's resolved
// Client (middleware.ResolveClient): the client's address as the throttle
// and the access log name it, and https exactly when the session cookie is
// Secure, so ComfyUI and the gateway never disagree about either. Whatever
// the client sent in X-Forwarded-* or Forwarded is dropped. It sets
// X-Forwarded-Host to the Host the client addressed, keeps the raw escaped path (ComfyUI
// file names carry %2F), and sends Host as the upstream's. ComfyUI's
// loopback origin check compares Host with Origin, so an Origin that matches
// the host the client addressed is rewritten to the upstream origin; any
// other Origin is left for ComfyUI to refuse, exactly as it would without
// the gateway.
//
// On the way back, a 200 JSON list from /extensions or /api/extensions gets
// the gateway's Logout script appended (see addExtensionScript); every
// other response passes untouched.
//
// Bodies stream both ways (uploads, /view downloads, websockets): nothing is
// buffered beyond the copy buffer.
//
// Requests go to ComfyUI through a syncTransport (see there), which hands
// upgrades, 100-continue and large or unsized uploads to an http.Transport.
// The returned transport is closed at shutdown.
func newProxy(o proxyOptions) (*httputil.ReverseProxy, *syncTransport) {
	upstreamOrigin := o.upstream.Scheme + "://" + o.upstream.Host
	fallback := &http.Transport{
		Proxy: nil,
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:           256,
		MaxIdleConnsPerHost:    128,
		IdleConnTimeout:        90 * time.Second,
		ResponseHeaderTimeout:  o.headerTimeout,
		ExpectContinueTimeout:  time.Second,
		DisableCompression:     true,
		MaxResponseHeaderBytes: maxUpstreamHeaderBytes,
	}
	transport := newSyncTransport(o.upstream.Host, o.headerTimeout, fallback)
	transport.fallbackOnly = o.plainTransport || plainTransportBuild
	loginWarn := &onceEvery{every: time.Minute}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(o.upstream)
			setXForwarded(pr)
			out := pr.Out
			// A canonical key, deleted from the map directly: Header.Del
			// would canonicalise it again on every request.
			delete(out.Header, "Authorization")
			id := ""
			if o.comfyUser != nil {
				id, _ = o.comfyUser(pr.In)
			}
			setComfyUser(out.Header, id)
			if q := stripQueryParam(out.URL.RawQuery, "token"); q != out.URL.RawQuery {
				out.URL.RawQuery = q
			}
			stripCookies(out.Header, o.stripCookies)
			if o := out.Header["Origin"]; len(o) > 0 && o[0] != "" && originMatchesHost(o[0], pr.In.Host) {
				out.Header["Origin"] = []string{upstreamOrigin}
			}
		},
		Transport:     transport,
		BufferPool:    bufferPool{},
		ErrorLog:      nil,
		ErrorHandler:  proxyErrorHandler(o.logger, o.onError),
		FlushInterval: 0,
		ModifyResponse: func(resp *http.Response) error {
			if o.onResponse != nil {
				o.onResponse(resp)
			}
			switch {
			case resp.StatusCode == http.StatusUnauthorized:
				detectComfyUILogin(resp, o.logger, loginWarn)
			case resp.StatusCode == http.StatusFound && resp.Header.Get("Location") == "/login":
				// ComfyUI-Login sends browsers to its own login page;
				// the gateway's /login would send them straight back.
				if loginWarn.allow() {
					logDoubleAuth(o.logger, 302)
				}
			}
			if p := resp.Request.URL.Path; p == "/view" || p == "/api/view" || scriptableImage(firstValue(resp.Header, "Content-Type")) {
				hardenView(resp.Header)
			}
			if o.extensionScript != "" {
				if err := addExtensionScript(resp, o.extensionScript); err != nil {
					return err
				}
			}
			handOverHeaders(resp)
			return nil
		},
	}, transport
}

// setXForwarded is ProxyRequest.SetXForwarded with the request's resolved
// Client (see newProxy): X-Forwarded-For is the client's address, and
// X-Forwarded-Proto is https for a TLS request or a client the gateway
// takes for https. The proxy has already removed what the client sent in
// these headers. The header keys are canonical and set directly.
func setXForwarded(pr *httputil.ProxyRequest) {
	in, h := pr.In, pr.Out.Header
	c := middleware.InfoFrom(in).Client
	// One backing array for the three values; each header gets a slice of
	// its own with no room to grow into the next.
	v := make([]string, 3)
	if c.Addr.IsValid() {
		v[0] = c.AddrText()
		h["X-Forwarded-For"] = v[0:1:1]
	} else if host, _, err := net.SplitHostPort(in.RemoteAddr); err == nil {
		v[0] = host
		h["X-Forwarded-For"] = v[0:1:1]
	}
	v[1] = in.Host
	h["X-Forwarded-Host"] = v[1:2:2]
	v[2] = "http"
	if in.TLS != nil || c.Addr.IsValid() && c.HTTPS {
		v[2] = "https"
	}
	h["X-Forwarded-Proto"] = v[2:3:3]
}

// handOverHeaders moves ComfyUI's answer headers into the client's writer,
// a slice per header, and leaves resp's empty, where ReverseProxy would
// copy them value by value (an allocation per header) and parse the
// Content-Type once more. It leaves alone an upgrade, whose headers the
// proxy still reads, and an event stream, which the proxy recognises by its
// Content-Type to flush each event at once.
func handOverHeaders(resp *http.Response) {
	dst := middleware.InfoFrom(resp.Request).ProxyHeader
	if dst == nil || resp.StatusCode == http.StatusSwitchingProtocols {
		return
	}
	for _, ct := range resp.Header["Content-Type"] {
		if containsFold(ct, "event-stream") {
			return
		}
	}
	for k, vv := range resp.Header {
		if prev, ok := dst[k]; ok {
			dst[k] = append(prev, vv...)
		} else {
			dst[k] = vv
		}
	}
	clear(resp.Header)
}

// containsFold reports whether s contains the lower-case ASCII sub,
// ignoring case.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// firstValue is h.Get(key) for a key already in canonical form, without
// canonicalising it again on every proxied request.
func firstValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// hardenView makes /view answers inert as documents. /view serves input,
// output and temp files, which guests (uploads) and workflows (custom save
// nodes) fill, from the gateway's origin, where every user's session cookie
// works. ComfyUI forces HTML and JavaScript to download but serves SVG as
// image/svg+xml, which runs script when opened. A sandbox CSP gives such a
// document a unique origin with no script, and nosniff stops a browser
// from reading an image as HTML. <img>, <video> and fetch() of /view, which
// the frontend uses, ignore both.
//
// The same goes for an SVG or XML answer from any other route (/userdata
// files, custom nodes' routes): ComfyUI's own pages are HTML, JavaScript,
// CSS and JSON, never a scriptable image.
func hardenView(h http.Header) {
	h.Set("Content-Security-Policy", "sandbox")
	h.Set("X-Content-Type-Options", "nosniff")
}

// scriptableImage reports whether a Content-Type is a document type that
// runs script when opened directly: SVG and XML.
func scriptableImage(ct string) bool {
	base, _, _ := strings.Cut(strings.ToLower(ct), ";")
	switch strings.TrimSpace(base) {
	case "image/svg+xml", "text/xml", "application/xml", "application/xhtml+xml":
		return true
	}
	return false
}

// stripQueryParam removes every `name=` pair from a raw query, leaving the
// other pairs exactly as the client encoded them.
func stripQueryParam(raw, name string) string {
	if raw == "" || !strings.Contains(raw, name) {
		return raw
	}
	parts := strings.Split(raw, "&")
	kept := parts[:0]
	for _, p := range parts {
		key, _, _ := strings.Cut(p, "=")
		if k, err := url.QueryUnescape(key); err == nil && k == name || key == name {
			continue
		}
		kept = append(kept, p)
	}
	return strings.Join(kept, "&")
}

// stripCookies removes the named cookies from the Cookie header(s).
func stripCookies(h http.Header, names []string) {
	if len(names) == 0 || len(h["Cookie"]) == 0 {
		return
	}
	var kept []string
	for _, line := range h["Cookie"] {
		for _, c := range strings.Split(line, ";") {
			c = strings.TrimSpace(c)
			if c == "" {
				continue
			}
			name, _, _ := strings.Cut(c, "=")
			drop := false
			for _, n := range names {
				if name == n {
					drop = true
					break
				}
			}
			if !drop {
				kept = append(kept, c)
			}
		}
	}
	h.Del("Cookie")
	if len(kept) > 0 {
		h.Set("Cookie", strings.Join(kept, "; "))
	}
}

// originMatchesHost reports whether an Origin header names the same
// host:port the client sent in Host (ComfyUI's own comparison).
func originMatchesHost(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	return strings.EqualFold(u.Host, host) ||
		strings.EqualFold(withDefaultPort(u.Host, u.Scheme), withDefaultPort(host, u.Scheme))
}

func withDefaultPort(host, scheme string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	port := "80"
	if scheme == "https" || scheme == "wss" {
		port = "443"
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}

// proxyErrorHandler answers when ComfyUI cannot be reached or does not
// answer in time: 502 (or 504 on timeout) with a JSON reason for API
// clients and a small page for browsers.
func proxyErrorHandler(logger zerolog.Logger, onError func(int)) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
			// The client went away; nobody is left to answer.
			middleware.InfoFrom(r).Reason = "client closed the request"
			w.WriteHeader(499)
			return
		}
		status := http.StatusBadGateway
		code := middleware.CodeUpstreamDown
		reason := "ComfyUI is not reachable yet; it may still be starting."
		var netErr net.Error
		switch {
		case errors.As(err, &netErr) && netErr.Timeout(), errors.Is(err, context.DeadlineExceeded):
			status = http.StatusGatewayTimeout
			code = middleware.CodeUpstreamTimeout
			reason = "ComfyUI did not answer in time."
		case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
			reason = "ComfyUI closed the connection before answering."
		}
		if onError != nil {
			onError(status)
		}
		middleware.InfoFrom(r).Reason = "upstream: " + err.Error()
		logger.Warn().Err(err).Str("path", r.URL.EscapedPath()).Int("status", status).Msg("upstream error")
		w.Header().Set("Retry-After", "5")
		if strings.Contains(r.Header.Get("Accept"), "text/html") {
			middleware.NoteCode(r, code)
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, upstreamDownPage(reason, code))
			return
		}
		middleware.Refuse(w, r, status, code, reason,
			"the gateway let the request in but ComfyUI behind it did not answer; retry in a few seconds (on first start ComfyUI may take minutes to load)")
	}
}

func upstreamDownPage(reason string, code middleware.RefusalCode) string {
	return `<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="5"><title>ComfyUI is not reachable</title>
<style>body{background:#202020;color:#ddd;font-family:system-ui,sans-serif;display:flex;min-height:100vh;align-items:center;justify-content:center;margin:0}main{max-width:32em;padding:2em}</style>
</head><body><main data-code="` + string(code) + `"><h1>ComfyUI is not reachable yet</h1><p>` + reason +
		` This page retries every 5 seconds.</p><p><small>code: ` + string(code) + `</small></p></main></body></html>`
}

// detectComfyUILogin spots ComfyUI-Login still installed inside ComfyUI: it
// answers 401 with its own JSON body to requests the gateway already let in.
func detectComfyUILogin(resp *http.Response, logger zerolog.Logger, once *onceEvery) {
	if resp.Body == nil {
		return
	}
	head := make([]byte, 256)
	n, _ := io.ReadFull(resp.Body, head)
	head = head[:n]
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	if bytes.Contains(head, []byte("Authentication required")) && once.allow() {
		logDoubleAuth(logger, http.StatusUnauthorized)
	}
}

func logDoubleAuth(logger zerolog.Logger, status int) {
	logger.Error().Int("upstream_status", status).Msg("ComfyUI itself refused a request the gateway had already authenticated: " +
		"the ComfyUI-Login custom node is still installed and double-authenticates. " +
		"Remove custom_nodes/ComfyUI-Login (and its login/PASSWORD setup) from the ComfyUI install; the gateway replaces it")
}

// onceEvery lets an event through at most once per interval, so a
// misconfiguration is reported without flooding the log.
type onceEvery struct {
	mu    sync.Mutex
	last  time.Time
	every time.Duration
}

func (o *onceEvery) allow() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if now := time.Now(); o.last.IsZero() || now.Sub(o.last) >= o.every {
		o.last = now
		return true
	}
	return false
}

// bufferPool recycles the proxy's 32 KiB copy buffers.
type bufferPool struct{}

// copyBufferSize is the size of every buffer of copyBuffers.
const copyBufferSize = 32 << 10

// copyBuffers holds *[copyBufferSize]byte: a buffer goes back to the pool as
// the pointer to its own array, so putting it allocates nothing (a *[]byte
// would be a new slice header per request).
var copyBuffers = sync.Pool{New: func() any { return new([copyBufferSize]byte) }}

func (bufferPool) Get() []byte { return copyBuffers.Get().(*[copyBufferSize]byte)[:] }

// Put takes back a buffer of Get; any other slice is left to the collector.
func (bufferPool) Put(b []byte) {
	if len(b) == copyBufferSize {
		copyBuffers.Put((*[copyBufferSize]byte)(b))
	}
}
