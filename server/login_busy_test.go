package server

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestBusyPoolShowsRetryPageNotAHang holds the one bcrypt worker through the
// compare hook, then logs in: the answer must come at once, as a 503 page
// that says to retry, not after the check.
func TestBusyPoolShowsRetryPageNotAHang(t *testing.T) {
	release := make(chan struct{})
	g := startGateway(t, gatewayOpts{hashContent: ptr(lowCostHash(t, "busy-right")), configure: func(c *Config) {
		c.BcryptWorkers = 1
		c.BcryptQueue = 1
		c.BcryptMaxWait = time.Millisecond
		c.MaxLoginAttempts = 0
		c.bcryptCompare = func(h, p []byte) error {
			if string(p) == "occupies-the-worker" {
				<-release
			}
			return bcrypt.CompareHashAndPassword(h, p)
		}
	}})
	occupied := make(chan struct{})
	go func() {
		defer close(occupied)
		req, _ := http.NewRequest("GET", g.URL+"/queue", nil)
		req.Header.Set("Authorization", "Bearer occupies-the-worker")
		if resp, err := noRedirect.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	eventually(t, 10*time.Second, "the worker is busy", func() bool { return g.Server.Verifier().Stats().InFlight == 1 })

	resp := g.do(t, "POST", "/login", form(url.Values{"password": {"busy-right"}}), formType, "Accept: text/html")
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("login while busy = %d (Retry-After %q), want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if !strings.Contains(strings.ToLower(body), "busy") {
		t.Fatalf("the page does not say the server is busy:\n%s", body)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "comfyui_auth_session" && c.Value != "" {
			t.Fatal("a busy answer set a session")
		}
	}
	close(release)
	<-occupied
	// Once the worker is free, the same password logs in, even with a wait
	// limit far shorter than scheduling the worker takes: a free worker
	// slot is taken before the wait.
	resp, cookie := g.login(t, "busy-right")
	if resp.StatusCode != http.StatusFound || cookie == "" {
		t.Fatalf("login after the pool freed = %d, cookie %v", resp.StatusCode, cookie != "")
	}
}
