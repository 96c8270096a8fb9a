package server

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/comfyui-auth/comfyui-auth/middleware"
)

// guestLoginFrom presses "Continue as guest" from client and returns the
// response and the guest cookie header ("" when none was set).
func guestLoginFrom(t *testing.T, g *gateway, client *http.Client) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", g.URL+"/login", strings.NewReader(url.Values{"guest_mode": {"1"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", g.URL)
	resp, err := client.Do(req)
	must(t, err)
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == middleware.SessionCookie && c.Value != "" {
			rememberSecret(c.Value)
			return resp, "Cookie: " + middleware.SessionCookie + "=" + c.Value
		}
	}
	return resp, ""
}

func statusOf(t *testing.T, g *gateway, path, cookie string) int {
	t.Helper()
	return g.do(t, "GET", path, nil, cookie).StatusCode
}

// TestGuestChurnNeverEndsUserSessions: with guest mode on, one client
// cycling guest login and logout as fast as it can (10,001 cycles would
// overflow a shared revocation list) is stopped after guestLoginBurst
// logins with 429 and Retry-After, while its password login still works.
// Then clients on many addresses, each within its own limit, overflow the
// guests' revocation list (lowered to 25 here): guest sessions issued
// before end, no logged-out guest comes back, and the user's session never
// notices.
func TestGuestChurnNeverEndsUserSessions(t *testing.T) {
	g := startLoginGateway(t, func(c *Config) { c.GuestMode = true; c.maxGuestRevoked = 25 })
	_, user := g.login(t, testPassword)
	if statusOf(t, g, "/api/system_stats", user) != 200 {
		t.Fatal("control: the user's session is refused")
	}

	var refused *http.Response
	accepted := 0
	for accepted <= middleware.DefaultMaxGuestRevoked {
		resp, cookie := guestLoginFrom(t, g, noRedirect)
		if resp.StatusCode == http.StatusTooManyRequests {
			refused = resp
			break
		}
		if cookie == "" {
			t.Fatalf("guest login %d: %d without a cookie", accepted+1, resp.StatusCode)
		}
		accepted++
		if statusOf(t, g, "/logout", cookie) != http.StatusFound {
			t.Fatal("guest logout failed")
		}
	}
	if refused == nil {
		t.Errorf("%d guest logins from one client were all accepted", accepted)
	} else if accepted != guestLoginBurst || refused.Header.Get("Retry-After") == "" {
		t.Errorf("one client got %d guest logins, then %d with Retry-After %q; want %d, then 429 with Retry-After",
			accepted, refused.StatusCode, refused.Header.Get("Retry-After"), guestLoginBurst)
	}
	if code := statusOf(t, g, "/api/system_stats", user); code != 200 {
		t.Fatalf("after one client's guest churn the user's session = %d, want 200", code)
	}
	if resp, cookie := g.login(t, testPassword); cookie == "" {
		t.Fatalf("the guest limit blocked the same client's password login: %d", resp.StatusCode)
	}

	_, standing := guestLoginFrom(t, g, clientFrom(t, "127.0.0.2"))
	var ended []string
	for i := 3; i <= 6; i++ { // 4 addresses × 10 logins: past the bound of 25
		c := clientFrom(t, fmt.Sprintf("127.0.0.%d", i))
		for range guestLoginBurst {
			resp, cookie := guestLoginFrom(t, g, c)
			if cookie == "" {
				t.Fatalf("guest login from 127.0.0.%d: %d", i, resp.StatusCode)
			}
			if statusOf(t, g, "/logout", cookie) != http.StatusFound {
				t.Fatal("guest logout failed")
			}
			ended = append(ended, cookie)
		}
	}
	if code := statusOf(t, g, "/api/system_stats", user); code != 200 {
		t.Fatalf("after the guest list overflowed the user's session = %d, want 200", code)
	}
	if code := statusOf(t, g, "/api/system_stats", standing); code != 401 {
		t.Errorf("a guest session from before the overflow = %d, want 401 (guests end at the bound)", code)
	}
	for i, c := range ended {
		if code := statusOf(t, g, "/api/system_stats", c); code != 401 {
			t.Errorf("logged-out guest %d came back: %d", i, code)
		}
	}
	if _, fresh := guestLoginFrom(t, g, clientFrom(t, "127.0.0.7")); fresh == "" || statusOf(t, g, "/api/system_stats", fresh) != 200 {
		t.Error("a guest arriving after the overflow is refused")
	}
}

// TestConcurrentGuestLoginsNeverPassTheLimit: a client pressing "Continue
// as guest" from 64 connections at once gets exactly guestLoginBurst guest
// sessions; every other press gets 429 with Retry-After. The limit is taken
// in the same step as it is checked, so no press slips between another's
// check and its count. The burst is repeated from 20 addresses, since one
// burst rarely lands a press in that gap.
func TestConcurrentGuestLoginsNeverPassTheLimit(t *testing.T) {
	g := startLoginGateway(t, func(c *Config) { c.GuestMode = true })
	const presses, rounds = 64, 20
	for i := range rounds {
		addr := fmt.Sprintf("127.0.0.%d", 10+i)
		client := clientFrom(t, addr)
		sessions, refused := concurrentGuestLogins(t, g, client, presses)
		if sessions > guestLoginBurst {
			t.Fatalf("%d concurrent guest logins from %s started %d sessions; the limit is %d", presses, addr, sessions, guestLoginBurst)
		}
		if sessions != guestLoginBurst || refused != presses-guestLoginBurst {
			t.Fatalf("%d concurrent guest logins from %s: %d sessions, %d refused; want %d and %d",
				presses, addr, sessions, refused, guestLoginBurst, presses-guestLoginBurst)
		}
		if resp, cookie := guestLoginFrom(t, g, client); resp.StatusCode != http.StatusTooManyRequests || cookie != "" {
			t.Fatalf("a guest login from %s after the burst = %d (cookie %v), want 429", addr, resp.StatusCode, cookie != "")
		}
	}
}

// concurrentGuestLogins sends n guest logins from client at once (each on
// its own connection, released together) and counts the sessions started
// and the 429 refusals with Retry-After; any other answer fails t.
func concurrentGuestLogins(t *testing.T, g *gateway, client *http.Client, n int) (sessions, refused int) {
	t.Helper()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = n
	start := make(chan struct{})
	type outcome struct {
		status     int
		retryAfter string
		cookie     bool
		err        error
	}
	results := make(chan outcome, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", g.URL+"/login", strings.NewReader(url.Values{"guest_mode": {"1"}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", g.URL)
			<-start
			resp, err := client.Do(req)
			if err != nil {
				results <- outcome{err: err}
				return
			}
			resp.Body.Close()
			o := outcome{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
			for _, c := range resp.Cookies() {
				if c.Name == middleware.SessionCookie && c.Value != "" {
					rememberSecret(c.Value)
					o.cookie = true
				}
			}
			results <- o
		}()
	}
	close(start)
	wg.Wait()
	close(results)
	for o := range results {
		switch {
		case o.err != nil:
			t.Errorf("guest login: %v", o.err)
		case o.status == http.StatusFound && o.cookie:
			sessions++
		case o.status == http.StatusTooManyRequests && !o.cookie && o.retryAfter != "":
			refused++
		default:
			t.Errorf("guest login answered %d (cookie %v, Retry-After %q); want 302 with a session or 429 with Retry-After",
				o.status, o.cookie, o.retryAfter)
		}
	}
	return sessions, refused
}
