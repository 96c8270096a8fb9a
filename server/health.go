package server

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/comfyui-auth/comfyui-auth/hashstore"
	"github.com/comfyui-auth/comfyui-auth/middleware"
)

// upstreamProbe answers "did ComfyUI answer recently?" at a bounded cost: at
// most one probe runs at a time, and a result is reused for probeTTL.
type upstreamProbe struct {
	client *http.Client
	url    string

	mu       sync.Mutex
	running  bool
	checked  time.Time
	lastOK   time.Time
	lastErr  string
	probeTTL time.Duration
	// fresh is how long a success keeps the gateway ready.
	fresh time.Duration
}

func newUpstreamProbe(upstream *url.URL) *upstreamProbe {
	return &upstreamProbe{
		client:   &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}},
		url:      upstream.String() + "/",
		probeTTL: 2 * time.Second,
		fresh:    10 * time.Second,
	}
}

// status returns whether the upstream answered within p.fresh, probing first
// if the cached answer is older than probeTTL and no probe is running.
func (p *upstreamProbe) status(ctx context.Context) (bool, string) {
	p.mu.Lock()
	stale := time.Since(p.checked) >= p.probeTTL
	if stale && !p.running {
		p.running = true
		p.mu.Unlock()
		err := p.probe(ctx)
		p.mu.Lock()
		p.running = false
		p.checked = time.Now()
		if err == nil {
			p.lastOK = p.checked
			p.lastErr = ""
		} else {
			p.lastErr = err.Error()
		}
	}
	ok := !p.lastOK.IsZero() && time.Since(p.lastOK) < p.fresh
	reason := p.lastErr
	p.mu.Unlock()
	if !ok && reason == "" {
		reason = "ComfyUI has not answered yet"
	}
	return ok, reason
}

// probe asks ComfyUI once. It does not end when the /readyz request that
// started it does: its answer is cached for every caller, so an impatient
// client hanging up must not be remembered as "ComfyUI is down".
func (p *upstreamProbe) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil // any HTTP answer means ComfyUI is up
}

// handleHealthz answers 200 while the process runs; it never calls upstream.
func handleHealthz(w http.ResponseWriter, r *http.Request) {
	middleware.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// handleReadyz reports whether the gateway can do its job: a valid
// credential is loaded (or auth is off) and ComfyUI answered recently.
//
// The answer is 200 `ready`, 200 `degraded` (serving on the last good
// credentials while the file is broken), or 503 `not ready`. Who gets what:
//   - anyone: the status word only. /readyz is unauthenticated and often on
//     the internet; the hash file's path, the upstream's address and error
//     texts help an attacker and are of no use to a load balancer;
//   - a caller that authenticates (token, or a non-guest session): the word
//     plus `credentials`, `upstream` and `reason`. A presented token goes
//     through Auth like any request (throttle, 401 when wrong);
//   - a loopback peer that sent no forwarding header: the same details.
//     That is `comfyui-auth healthcheck` inside the container. The other
//     loopback peer there is ComfyUI, which can already read the hash file's
//     directory and knows its own address, and the details never hold a
//     secret (fingerprints only). A reverse proxy on the same host that adds
//     no forwarding header makes every caller look local: see README.
//
// Every change of status is logged with its reason, so the details are also
// in the log.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	if s.readyzAuth != nil && presentsToken(r) {
		s.readyzAuth.ServeHTTP(w, r)
		return
	}
	detailed := isLocalProbe(r)
	if !detailed && s.sessions != nil {
		sess, ok := s.sessions.Current(r)
		detailed = ok && !sess.Guest
	}
	s.writeReadyz(w, r, detailed)
}

// readyzDetails answers a request Auth let in: details for everyone but
// guests, who get the word only.
func (s *Server) readyzDetails(w http.ResponseWriter, r *http.Request) {
	m := middleware.InfoFrom(r).Method
	s.writeReadyz(w, r, m != middleware.MethodGuest && m != middleware.MethodNone)
}

func (s *Server) writeReadyz(w http.ResponseWriter, r *http.Request, detailed bool) {
	rd := s.readiness(r)
	s.noteReadiness(rd)
	status := http.StatusOK
	if rd.status == readyNot {
		status = http.StatusServiceUnavailable
	}
	body := map[string]any{"status": rd.status}
	if status != http.StatusOK {
		// The code says no more than the status word, so everyone gets it.
		body["code"] = middleware.CodeNotReady
		middleware.NoteCode(r, middleware.CodeNotReady)
	}
	if detailed {
		body["credentials"] = rd.credentials
		body["upstream"] = rd.upstream
		if rd.reason != "" {
			body["reason"] = rd.reason
		}
	}
	middleware.WriteJSON(w, status, body)
}

// The status words of /readyz.
const (
	readyOK       = "ready"
	readyDegraded = "degraded"
	readyNot      = "not ready"
)

type readiness struct {
	status, credentials, upstream, reason string
}

func (s *Server) readiness(r *http.Request) readiness {
	rd := readiness{status: readyOK}
	if s.store != nil {
		st := s.store.Status()
		rd.credentials = credentialStatus(st)
		switch {
		case !st.Ready:
			rd.status = readyNot
			rd.reason = "no valid credential loaded: " + st.Reason
		case st.LastError != "":
			rd.status = readyDegraded
			rd.reason = st.Reason
		}
	} else {
		rd.credentials = "authentication disabled"
	}
	upOK, upReason := s.probe.status(r.Context())
	if upOK {
		rd.upstream = "ok"
	} else {
		rd.upstream = upReason
		if rd.status != readyNot {
			rd.reason = "ComfyUI is not reachable at " + s.upstream.String() + ": " + upReason
		}
		rd.status = readyNot
	}
	return rd
}

// noteReadiness logs each change of readiness once, with its reason, so
// that what /readyz tells only some callers is in the log for the operator.
func (s *Server) noteReadiness(rd readiness) {
	s.readyMu.Lock()
	changed := rd.status != s.readyLast
	s.readyLast = rd.status
	s.readyMu.Unlock()
	if !changed {
		return
	}
	ev := s.logger.Info()
	if rd.status != readyOK {
		ev = s.logger.Warn()
	}
	// The credential file's problems have their own log line from the
	// store, once each; only ComfyUI's state is new here.
	ev.Str("readiness", rd.status).Str("upstream", rd.upstream).Msg("readiness is now " + rd.status)
}

// presentsToken reports whether r carries a token (header or `token`
// parameter), which /readyz then checks like any protected request.
func presentsToken(r *http.Request) bool {
	return r.Header.Get("Authorization") != "" || r.URL.Query().Get("token") != ""
}

// forwardingHeaders are set by proxies; a loopback peer sending any of them
// is relaying someone else, who gets the public answer.
var forwardingHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "Via"}

// isLocalProbe reports whether r comes from this machine itself: a loopback
// connection that no proxy relayed.
func isLocalProbe(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return false
	}
	for _, h := range forwardingHeaders {
		if _, ok := r.Header[h]; ok {
			return false
		}
	}
	return true
}

func credentialStatus(st hashstore.Status) string {
	switch {
	case !st.Ready:
		return "none"
	case st.LastError != "":
		return "degraded: keeping the last good credentials; " + st.LastError
	default:
		return "ok"
	}
}

// healthOnly answers the health paths' other methods itself: 405 with Allow
// and a JSON reason. They are unauthenticated, so a POST or PUT here must
// never reach ComfyUI (with its body) the way any other path's would.
func healthOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		middleware.InfoFrom(r).Reason = r.Method + " on a health endpoint"
		w.Header().Set("Allow", "GET, HEAD")
		middleware.Refuse(w, r, http.StatusMethodNotAllowed, middleware.CodeMethodNotAllowed,
			"Method not allowed.", r.URL.Path+" answers GET and HEAD only")
	})
}
