package server

import (
	"context"
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

func (p *upstreamProbe) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
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

// readiness reports whether the gateway can do its job: a valid credential is
// loaded (or auth is off) and ComfyUI answered recently.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	body := map[string]any{}
	ready := true
	if s.store != nil {
		st := s.store.Status()
		body["credentials"] = credentialStatus(st)
		if !st.Ready {
			ready = false
			body["reason"] = "no valid credential loaded: " + st.Reason
		}
	} else {
		body["credentials"] = "authentication disabled"
	}
	upOK, upReason := s.probe.status(r.Context())
	if upOK {
		body["upstream"] = "ok"
	} else {
		body["upstream"] = upReason
		if ready {
			body["reason"] = "ComfyUI is not reachable at " + s.upstream.String() + ": " + upReason
		}
		ready = false
	}
	status := http.StatusOK
	body["status"] = "ready"
	if !ready {
		status = http.StatusServiceUnavailable
		body["status"] = "not ready"
	}
	middleware.WriteJSON(w, status, body)
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
		info := middleware.InfoFrom(r)
		info.Method = middleware.MethodPublic
		info.Reason = r.Method + " on a health endpoint"
		w.Header().Set("Allow", "GET, HEAD")
		middleware.WriteJSON(w, http.StatusMethodNotAllowed, map[string]string{
			"error":  "Method not allowed.",
			"reason": r.URL.Path + " answers GET and HEAD only",
		})
	})
}
