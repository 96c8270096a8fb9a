package server

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// clientFrom returns an HTTP client whose connections come from the given
// loopback address (all of 127.0.0.0/8 is loopback on Linux), so one test
// can play several clients.
func clientFrom(t *testing.T, ip string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	tr := &http.Transport{Proxy: nil, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// statusWith is getWith for callers that only need the status and headers.
func statusWith(t *testing.T, c *http.Client, url, token string, headers ...string) *http.Response {
	t.Helper()
	resp := getWith(t, c, url, token, headers...)
	resp.Body.Close()
	return resp
}

func TestWrongRawTokensLockTheClientWithoutBcrypt(t *testing.T) {
	hash := lowCostHash(t, "throttle-right-token")
	g := startGateway(t, gatewayOpts{hashContent: ptr(hash), configure: func(c *Config) {
		c.MaxLoginAttempts = 3
		c.ThrottleLock = time.Minute
	}})
	attacker, bystander := clientFrom(t, "127.0.0.1"), clientFrom(t, "127.0.0.2")
	u := g.URL + "/queue"
	for i := 1; i <= 3; i++ {
		if s := statusWith(t, attacker, u, "wrong-guess-"+strconv.Itoa(i)).StatusCode; s != 401 {
			t.Fatalf("wrong guess %d = %d, want 401", i, s)
		}
	}
	checks := g.Server.Verifier().Stats().Checks
	for i := 0; i < 50; i++ {
		resp := statusWith(t, attacker, u, "wrong-guess-more")
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("guess after the lock = %d, want 429", resp.StatusCode)
		}
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
			t.Fatalf("Retry-After = %q, want 1..60 seconds", resp.Header.Get("Retry-After"))
		}
	}
	// Even the right raw token waits out the lock: checking it would cost bcrypt.
	if s := statusWith(t, attacker, u, "throttle-right-token").StatusCode; s != 429 {
		t.Fatalf("right raw token from the locked client = %d, want 429", s)
	}
	if n := g.Server.Verifier().Stats().Checks - checks; n != 0 {
		t.Fatalf("a locked client cost %d bcrypt checks, want 0", n)
	}
	// The hash token never touches the throttle.
	if s := statusWith(t, attacker, u, hash).StatusCode; s != 200 {
		t.Fatalf("hash token from the locked client = %d, want 200", s)
	}
	// Another address is not locked, and a valid credential from it passes.
	if s := statusWith(t, bystander, u, "throttle-right-token").StatusCode; s != 200 {
		t.Fatalf("right token from another address = %d, want 200", s)
	}
	if s := statusWith(t, bystander, u, "bystander-typo").StatusCode; s != 401 {
		t.Fatalf("one typo from another address = %d, want 401", s)
	}
}

func TestLockedClientGets429JSONSayingWhenToRetry(t *testing.T) {
	g := startGateway(t, gatewayOpts{hashContent: ptr(lowCostHash(t, "json-right")), configure: func(c *Config) { c.MaxLoginAttempts = 1 }})
	statusWith(t, noRedirect, g.URL+"/queue", "wrong")
	resp := g.do(t, "GET", "/queue", nil, "Authorization: Bearer wrong")
	var body map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 429 {
		t.Fatalf("status %d, body error %v", resp.StatusCode, err)
	}
	if body["error"] == "" || body["reason"] == "" || body["code"] != "locked_out" {
		t.Fatalf("body %v, want error, reason and code locked_out", body)
	}
}

func TestThrottleBelievesForwardedForOnlyFromTrustedProxies(t *testing.T) {
	hash := lowCostHash(t, "xff-right-token")
	tests := []struct {
		name    string
		trusted string
		// wantOtherLocked: after client A is locked, is client B (another
		// X-Forwarded-For through the same peer) locked too?
		wantOtherLocked bool
	}{
		{"proxy trusted: clients behind it are told apart", "127.0.0.1/32", false},
		{"nothing trusted: the peer is the client, whatever the header says", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := startGateway(t, gatewayOpts{hashContent: ptr(hash), configure: func(c *Config) {
				c.MaxLoginAttempts = 2
				c.TrustedProxies = tc.trusted
			}})
			u := g.URL + "/queue"
			for i := 0; i < 2; i++ {
				// A client rotating its own X-Forwarded-For must not escape
				// when the header is not trusted.
				statusWith(t, noRedirect, u, "wrong", "X-Forwarded-For", "198.51.100.1")
			}
			if s := statusWith(t, noRedirect, u, "wrong", "X-Forwarded-For", "198.51.100.1").StatusCode; s != 429 {
				t.Fatalf("client A after its failures = %d, want 429", s)
			}
			s := statusWith(t, noRedirect, u, "xff-right-token", "X-Forwarded-For", "198.51.100.2").StatusCode
			if tc.wantOtherLocked && s != 429 || !tc.wantOtherLocked && s != 200 {
				t.Fatalf("client B = %d (other locked: %v)", s, tc.wantOtherLocked)
			}
		})
	}
}

func TestThrottleCanBeTurnedOff(t *testing.T) {
	g := startGateway(t, gatewayOpts{hashContent: ptr(lowCostHash(t, "off-right")), configure: func(c *Config) { c.MaxLoginAttempts = 0 }})
	for i := 0; i < 8; i++ {
		if s := statusWith(t, noRedirect, g.URL+"/queue", "wrong").StatusCode; s != 401 {
			t.Fatalf("attempt %d = %d, want 401 with the throttle off", i, s)
		}
	}
	if g.Server.Throttle() != nil {
		t.Fatal("Throttle() is not nil with MaxLoginAttempts 0")
	}
}
