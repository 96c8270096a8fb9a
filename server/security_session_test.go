package server

import (
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/middleware"
)

const testSecretKey = "security-suite-secret-key-0123456789"

func cookieHeader(v string) string {
	rememberSecret(v)
	return "Cookie: " + middleware.SessionCookie + "=" + v
}

// TestForeignExpiredAndPreRotationCookiesAreRefused goes through the whole
// gateway with forged and stale cookies: only a cookie signed with this
// gateway's key, unexpired, of the epoch in force and bound to a credential
// line that is loaded is a session; the others are refused and never reach
// ComfyUI.
func TestForeignExpiredAndPreRotationCookiesAreRefused(t *testing.T) {
	g := startLoginGateway(t, func(c *Config) { c.SecretKey = testSecretKey })
	now := time.Now()
	ours := middleware.NewSessionCodec([]byte(testSecretKey))
	_, loggedIn := g.login(t, testPassword)
	real, err := ours.Decode(strings.TrimPrefix(loggedIn, "Cookie: "+middleware.SessionCookie+"="))
	must(t, err)
	control := ours.Encode(middleware.NewSession(now, time.Hour, real.Binding, real.Epoch, false))
	if resp := g.do(t, "GET", "/api/system_stats", nil, cookieHeader(control)); resp.StatusCode != 200 {
		t.Fatalf("control: a cookie forged with the right key = %d, want 200 (the forgery method is wrong)", resp.StatusCode)
	}
	other := middleware.NewSessionCodec([]byte("some other gateway's key 0123456789"))
	otherLine := ours.BindLine(lowCostHash(t, "another deployment's password"))

	cases := map[string]string{
		"signed with another key":        cookieHeader(other.Encode(middleware.NewSession(now, time.Hour, real.Binding, real.Epoch, false))),
		"expired":                        cookieHeader(ours.Encode(middleware.NewSession(now.Add(-25*time.Hour), 24*time.Hour, real.Binding, real.Epoch, false))),
		"bound to another credential":    cookieHeader(ours.Encode(middleware.NewSession(now, time.Hour, otherLine, real.Epoch, false))),
		"from another epoch":             cookieHeader(ours.Encode(middleware.NewSession(now, time.Hour, real.Binding, real.Epoch+1, false))),
		"a user binding marked as guest": cookieHeader(ours.Encode(middleware.NewSession(now, time.Hour, real.Binding, real.Epoch, true))),
		"empty":                          "Cookie: " + middleware.SessionCookie + "=",
		"two cookies, one forged":        cookieHeader(middleware.NewSessionCodec([]byte("x-other-key-0123456789abcdef")).Encode(real)) + "; theme=dark",
	}
	g.Fake.Reset()
	for name, c := range cases {
		if resp := g.do(t, "GET", "/api/system_stats", nil, c); resp.StatusCode != 401 {
			t.Errorf("%s: %d, want 401", name, resp.StatusCode)
		}
	}
	if n := len(g.Fake.Requests()); n != 0 {
		t.Fatalf("%d refused cookies reached ComfyUI", n)
	}

	// Rotation of the hash ends the real session too.
	must(t, os.WriteFile(g.HashFile, []byte(lowCostHash(t, "rotated password")), 0o644))
	eventually(t, 10*time.Second, "the pre-rotation session is refused", func() bool {
		return g.do(t, "GET", "/api/system_stats", nil, loggedIn).StatusCode == 401
	})
}

// TestSessionsFromBeforeAKeyChangeAreRefused: a gateway restarted with a new
// SECRET_KEY refuses every cookie the old key signed, though it keeps its
// state directory and credential; restarted with the same key, it accepts
// them.
func TestSessionsFromBeforeAKeyChangeAreRefused(t *testing.T) {
	content := lowCostHash(t, testPassword)
	state := t.TempDir()
	withKey := func(key string) gatewayOpts {
		return gatewayOpts{hashContent: &content, configure: func(c *Config) { c.SecretKey = key; c.StateDir = state }}
	}
	g := startGateway(t, withKey(testSecretKey))
	_, cookie := g.login(t, testPassword)
	if resp := g.do(t, "GET", "/api/system_stats", nil, cookie); resp.StatusCode != 200 {
		t.Fatalf("session before the restart: %d", resp.StatusCode)
	}
	g.Stop()
	same := startGateway(t, withKey(testSecretKey))
	if resp := same.do(t, "GET", "/api/system_stats", nil, cookie); resp.StatusCode != 200 {
		t.Fatalf("control: the session after a restart with the same key = %d, want 200", resp.StatusCode)
	}
	same.Stop()
	g2 := startGateway(t, withKey(testSecretKey+"-rotated"))
	if resp := g2.do(t, "GET", "/api/system_stats", nil, cookie); resp.StatusCode != 401 {
		t.Fatalf("old-key cookie after the key change: %d, want 401", resp.StatusCode)
	}
}

// TestCrossSiteOriginsCannotDriveCookieSessions: with a valid session
// cookie, writes and websockets from `Origin: null` (sandboxed frames, file
// URLs) or another site are refused before ComfyUI, and same-origin ones
// pass.
func TestCrossSiteOriginsCannotDriveCookieSessions(t *testing.T) {
	g := startLoginGateway(t, nil)
	_, cookie := g.login(t, testPassword)
	body := []byte(`{"prompt":{"1":{"class_type":"X","inputs":{}}}}`)
	for _, origin := range []string{"null", "https://evil.example", "http://127.0.0.1.evil.example", g.URL + ".evil.example", "http://localhost:1"} {
		for _, path := range []string{"/prompt", "/api/prompt", "/api/upload/image", "/api/userdata/x.json", "/api/interrupt"} {
			g.Fake.Reset()
			resp := g.do(t, "POST", path, body, cookie, "Origin: "+origin)
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("POST %s from Origin %s = %d, want 403", path, origin, resp.StatusCode)
			}
			if len(g.Fake.Requests()) != 0 {
				t.Errorf("POST %s from Origin %s reached ComfyUI", path, origin)
			}
		}
		for _, path := range []string{"/ws?clientId=a", "/api/ws?clientId=a"} {
			_, resp, err := dialWS(t, g, path, http.Header{"Origin": {origin}, "Cookie": {strings.TrimPrefix(cookie, "Cookie: ")}})
			if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Errorf("websocket %s from Origin %s: err %v, response %v; want 403", path, origin, err, resp)
			}
		}
	}
	// A cross-site POST with no Origin but Sec-Fetch-Site says so.
	if resp := g.do(t, "POST", "/api/prompt", body, cookie, "Sec-Fetch-Site: cross-site"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("POST with Sec-Fetch-Site: cross-site = %d, want 403", resp.StatusCode)
	}
	// Same origin works, for writes and websockets.
	if resp := g.do(t, "POST", "/api/prompt", body, cookie, "Origin: "+g.URL); resp.StatusCode != 200 {
		t.Errorf("same-origin POST = %d, want 200", resp.StatusCode)
	}
	conn, resp, err := dialWS(t, g, "/ws?clientId=b", http.Header{"Origin": {g.URL}, "Cookie": {strings.TrimPrefix(cookie, "Cookie: ")}})
	if err != nil {
		t.Fatalf("same-origin websocket: %v (%v)", err, resp)
	}
	conn.Close()
}

// TestAPITwinsOfGuestRulesBehaveIdentically: every guest rule gives the same
// answer on a path and on its /api twin, since the new frontend uses /api.
func TestAPITwinsOfGuestRulesBehaveIdentically(t *testing.T) {
	g := startLoginGateway(t, func(c *Config) { c.GuestMode = true })
	resp := g.do(t, "POST", "/login", form(url.Values{"guest_mode": {"1"}}), formType)
	var cookie string
	for _, c := range resp.Cookies() {
		if c.Name == middleware.SessionCookie {
			cookie = cookieHeader(c.Value)
		}
	}
	if cookie == "" {
		t.Fatal("no guest cookie")
	}
	origin := "Origin: " + g.URL
	type answer struct {
		status  int
		reached bool
		body    string
	}
	ask := func(method, path string) answer {
		g.Fake.Reset()
		var body []byte
		if method == "POST" {
			body = []byte(`{"prompt":{"1":{"class_type":"X","inputs":{}}}}`)
		}
		resp := g.do(t, method, path, body, cookie, origin, "Content-Type: application/json")
		b := readBody(t, resp)
		a := answer{status: resp.StatusCode, reached: len(g.Fake.Requests()) > 0}
		if !a.reached {
			a.body = b
		}
		return a
	}
	for _, p := range []string{"/prompt", "/upload/image", "/upload/mask", "/queue", "/history", "/interrupt", "/free",
		"/settings", "/settings/Comfy.x", "/userdata/x.json", "/users", "/system_stats", "/object_info", "/extensions", "/view?filename=a.png"} {
		for _, m := range []string{"GET", "POST", "DELETE"} {
			plain, twin := ask(m, p), ask(m, "/api"+p)
			if plain.reached != twin.reached || plain.body != twin.body || (plain.status == 403) != (twin.status == 403) {
				t.Errorf("guest %s %s = %+v but %s /api%s = %+v", m, p, plain, m, p, twin)
			}
		}
	}
}

// TestLoginFailuresShareTheThrottleWithRawTokens: wrong passwords and wrong
// raw tokens count toward one per-client limit; the locked client's login
// page says so; another address and existing sessions are unaffected, and
// the locked client still gets in with the password it already had
// verified (cached, no bcrypt) but not with a new guess.
func TestLoginFailuresShareTheThrottleWithRawTokens(t *testing.T) {
	g := startLoginGateway(t, func(c *Config) { c.MaxLoginAttempts = 3 })
	_, session := g.login(t, testPassword) // before the lock
	g.login(t, "wrong 1")
	g.login(t, "wrong 2")
	if s := statusWith(t, noRedirect, g.URL+"/queue", "wrong-raw-token").StatusCode; s != 401 {
		t.Fatalf("third failure (a raw token) = %d, want 401", s)
	}
	checks := g.Server.Verifier().Stats().Checks
	resp, cookie := g.login(t, "wrong 3")
	if resp.StatusCode != http.StatusTooManyRequests || cookie != "" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a new guess from the locked client: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp, cookie := g.login(t, testPassword); resp.StatusCode != http.StatusFound || cookie == "" {
		t.Fatalf("the already verified password from the locked client: %d, want 302 with a session", resp.StatusCode)
	}
	if s := statusWith(t, noRedirect, g.URL+"/queue?token="+url.QueryEscape(testPassword), "").StatusCode; s != 200 {
		t.Fatalf("the already verified raw token from the locked client = %d, want 200", s)
	}
	if s := statusWith(t, noRedirect, g.URL+"/queue?token=another-guess", "").StatusCode; s != 429 {
		t.Fatalf("a new raw-token guess from the locked client = %d, want 429", s)
	}
	if n := g.Server.Verifier().Stats().Checks - checks; n != 0 {
		t.Fatalf("the locked client cost %d bcrypt checks", n)
	}
	if body := readBody(t, g.do(t, "GET", "/login", nil)); !strings.Contains(body, "Too many attempts") {
		t.Errorf("the login page does not tell the locked client")
	}
	if resp := g.do(t, "GET", "/api/system_stats", nil, session); resp.StatusCode != 200 {
		t.Errorf("an existing session from the locked address = %d, want 200", resp.StatusCode)
	}
	other := clientFrom(t, "127.0.0.2")
	req, _ := http.NewRequest("POST", g.URL+"/login", strings.NewReader(url.Values{"password": {testPassword}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r2, err := other.Do(req)
	must(t, err)
	r2.Body.Close()
	if r2.StatusCode != http.StatusFound || len(r2.Cookies()) == 0 {
		t.Fatalf("login from another address = %d, want 302 with a session", r2.StatusCode)
	}
	for _, c := range r2.Cookies() {
		rememberSecret(c.Value)
	}
}

// TestSessionLivesWhileItsHashLineIsLoaded: a rotation that adds a second
// hash keeps the sessions of the first (`token rotate`), one that retires
// the first ends them, and a session logged in with the second password
// lives on.
func TestSessionLivesWhileItsHashLineIsLoaded(t *testing.T) {
	first, second := lowCostHash(t, testPassword), lowCostHash(t, "the next password")
	g := startGateway(t, gatewayOpts{hashContent: &first})
	_, old := g.login(t, testPassword)
	must(t, os.WriteFile(g.HashFile, []byte(second+"\n"+first+"\n"), 0o644))
	eventually(t, 10*time.Second, "the second hash is loaded", func() bool {
		_, c := g.login(t, "the next password")
		return c != ""
	})
	_, next := g.login(t, "the next password")
	if code := g.do(t, "GET", "/api/system_stats", nil, old).StatusCode; code != 200 {
		t.Fatalf("a session of the line kept by the rotation = %d, want 200", code)
	}
	must(t, os.WriteFile(g.HashFile, []byte(second+"\n"), 0o644))
	eventually(t, 10*time.Second, "the retired line's session is refused", func() bool {
		return g.do(t, "GET", "/api/system_stats", nil, old).StatusCode == 401
	})
	if code := g.do(t, "GET", "/api/system_stats", nil, next).StatusCode; code != 200 {
		t.Fatalf("a session of the line still loaded = %d, want 200", code)
	}
}
