package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

const testPassword = "a browser password"

func startLoginGateway(t *testing.T, configure func(*Config)) *gateway {
	t.Helper()
	content := lowCostHash(t, testPassword) + "\nalice\n"
	return startGateway(t, gatewayOpts{hashContent: &content, configure: configure})
}

func form(values url.Values) []byte { return []byte(values.Encode()) }

const formType = "Content-Type: application/x-www-form-urlencoded"

// login posts the password and returns the session cookie header.
func (g *gateway) login(t *testing.T, password string) (*http.Response, string) {
	t.Helper()
	resp := g.do(t, "POST", "/login", form(url.Values{"username": {"anyone"}, "password": {password}}), formType)
	for _, c := range resp.Cookies() {
		if c.Name == "comfyui_auth_session" && c.Value != "" {
			rememberSecret(c.Value)
			return resp, "Cookie: comfyui_auth_session=" + c.Value
		}
	}
	return resp, ""
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestLoginPageVariants(t *testing.T) {
	g := startLoginGateway(t, nil)
	resp := g.do(t, "GET", "/login", nil)
	body := readBody(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(body, "Welcome back, <strong>alice</strong>") || strings.Contains(body, `id="guest"`) {
		t.Fatalf("login page: %d %s", resp.StatusCode, body)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "form-action 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(body, "<script") || strings.Contains(body, "style=") || strings.Contains(body, "<style") || strings.Contains(body, "http") {
		t.Errorf("login page has inline script/style or an external URL: %s", body)
	}
	if body := readBody(t, g.do(t, "GET", "/login?wrong_password=1", nil)); !strings.Contains(body, "Wrong password") {
		t.Errorf("?wrong_password=1 does not say Wrong password")
	}
	if resp := g.do(t, "GET", "/comfyui-auth/login.css", nil); resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") {
		t.Errorf("stylesheet: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	// A GUEST_MODE file next to the hash file turns the Guest button on.
	if err := os.WriteFile(filepath.Join(filepath.Dir(g.HashFile), "GUEST_MODE"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, g.do(t, "GET", "/login", nil)); !strings.Contains(body, `id="guest"`) {
		t.Errorf("GUEST_MODE file present but no Guest button")
	}
}

func TestLoginPageExplainsWhenNoCredentialIsConfigured(t *testing.T) {
	g := startGateway(t, gatewayOpts{hashContent: ptr("")})
	body := readBody(t, g.do(t, "GET", "/login", nil))
	if strings.Contains(body, `name="password"`) || !strings.Contains(body, g.HashFile) || !strings.Contains(body, "bcrypt") {
		t.Fatalf("no-credential page should explain what file to create, without a form: %s", body)
	}
	resp, cookie := g.login(t, "anything")
	if cookie != "" || resp.StatusCode != http.StatusFound {
		t.Fatalf("login without a credential: %d, cookie %v", resp.StatusCode, cookie != "")
	}
}

func TestPasswordLoginSessionAndLogout(t *testing.T) {
	// Six wrong passwords in a row: this is about the answers, not the
	// throttle (TestLoginFailuresShareTheThrottleWithRawTokens).
	g := startLoginGateway(t, func(c *Config) { c.MaxLoginAttempts = 0 })
	html := "Accept: text/html"

	for _, wrong := range []string{"wrong", "", strings.Repeat("x", 100), "$2a$04$" + strings.Repeat("a", 53)} {
		resp, cookie := g.login(t, wrong)
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/login?wrong_password=1" || cookie != "" {
			t.Fatalf("wrong password %q: %d to %q", wrong, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	// The hash string itself is a token, not a password.
	hash := strings.SplitN(readFile(t, g.HashFile), "\n", 2)[0]
	if resp, cookie := g.login(t, hash); cookie != "" || resp.Header.Get("Location") != "/login?wrong_password=1" {
		t.Fatal("the hash string was accepted as a password")
	}
	// A missing password field is a wrong password, not a 500.
	if resp := g.do(t, "POST", "/login", form(url.Values{"username": {"x"}}), formType); resp.StatusCode != http.StatusFound {
		t.Fatalf("login without password field: %d", resp.StatusCode)
	}

	resp, cookie := g.login(t, testPassword)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/" || cookie == "" {
		t.Fatalf("right password: %d to %q, cookie %v", resp.StatusCode, resp.Header.Get("Location"), cookie != "")
	}
	c := resp.Cookies()[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Secure {
		t.Errorf("cookie flags %+v", c)
	}
	if d := time.Until(c.Expires); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("cookie expires in %s, want 24h", d)
	}

	if resp := g.do(t, "GET", "/system_stats", nil, cookie); resp.StatusCode != 200 {
		t.Fatalf("session GET: %d", resp.StatusCode)
	}
	rec, _ := g.Fake.LastRequest("/system_stats")
	if strings.Contains(rec.Header.Get("Cookie"), "comfyui_auth_session") {
		t.Errorf("the session cookie reached ComfyUI")
	}
	if resp := g.do(t, "GET", "/login", nil, cookie, html); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/" {
		t.Errorf("logged-in GET /login: %d to %q, want 302 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
	if body := readBody(t, g.do(t, "GET", "/guest_mode", nil, cookie)); strings.TrimSpace(body) != `{"guestMode":false}` {
		t.Errorf("/guest_mode = %s", body)
	}

	// CSRF: cookie writes need the gateway's origin; tokens do not.
	prompt := []byte(`{"prompt":{"1":{"class_type":"X","inputs":{}}}}`)
	if resp := g.do(t, "POST", "/api/prompt", prompt, cookie); resp.StatusCode != http.StatusForbidden {
		t.Errorf("cookie POST without Origin: %d, want 403", resp.StatusCode)
	}
	if resp := g.do(t, "POST", "/api/prompt", prompt, cookie, "Origin: http://evil.example"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("cookie POST from another origin: %d, want 403", resp.StatusCode)
	}
	if resp := g.do(t, "POST", "/api/prompt", prompt, cookie, "Origin: "+g.URL); resp.StatusCode != 200 {
		t.Errorf("cookie POST from the gateway's origin: %d, want 200", resp.StatusCode)
	}
	if resp := g.do(t, "POST", "/api/prompt", prompt, "Authorization: Bearer "+hash); resp.StatusCode != 200 {
		t.Errorf("token POST without Origin: %d, want 200", resp.StatusCode)
	}

	resp = g.do(t, "GET", "/logout", nil, cookie)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/login" {
		t.Fatalf("logout: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// The same cookie value replayed after logout is refused.
	if resp := g.do(t, "GET", "/system_stats", nil, cookie); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("replayed cookie after logout: %d, want 401", resp.StatusCode)
	}
	if resp := g.do(t, "GET", "/", nil, cookie, html); resp.Header.Get("Location") != "/login" {
		t.Fatalf("replayed cookie, browser GET /: to %q", resp.Header.Get("Location"))
	}
}

func TestLoginRedirectsToSafeNextOnly(t *testing.T) {
	g := startLoginGateway(t, nil)
	if resp := g.do(t, "GET", "/queue?x=1", nil, "Accept: text/html"); resp.Header.Get("Location") != "/login?next=%2Fqueue%3Fx%3D1" {
		t.Fatalf("redirect to login = %q", resp.Header.Get("Location"))
	}
	for next, want := range map[string]string{
		"/queue?x=1": "/queue?x=1", "//evil.example/": "/", "https://evil.example/": "/", "/\\evil.example": "/", "/logout": "/",
	} {
		resp := g.do(t, "POST", "/login", form(url.Values{"password": {testPassword}, "next": {next}}), formType)
		if got := resp.Header.Get("Location"); got != want {
			t.Errorf("next %q: redirected to %q, want %q", next, got, want)
		}
	}
}

func TestRotatingTheHashEndsEverySession(t *testing.T) {
	g := startLoginGateway(t, nil)
	_, cookie := g.login(t, testPassword)
	if resp := g.do(t, "GET", "/system_stats", nil, cookie); resp.StatusCode != 200 {
		t.Fatalf("session: %d", resp.StatusCode)
	}
	if err := os.WriteFile(g.HashFile, []byte(lowCostHash(t, "the new password")), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "session refused after rotation", func() bool {
		resp := g.do(t, "GET", "/system_stats", nil, cookie)
		return resp.StatusCode == http.StatusUnauthorized
	})
}

func TestGuestSessionIsLimitedToReadsPromptsAndUploads(t *testing.T) {
	g := startLoginGateway(t, func(c *Config) { c.GuestMode = true })
	resp := g.do(t, "POST", "/login", form(url.Values{"guest_mode": {"1"}}), formType)
	var cookie string
	for _, c := range resp.Cookies() {
		if c.Name == "comfyui_auth_session" {
			cookie = "Cookie: comfyui_auth_session=" + c.Value
			rememberSecret(c.Value)
		}
	}
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/" || cookie == "" {
		t.Fatalf("guest login: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	origin := "Origin: " + g.URL
	if body := readBody(t, g.do(t, "GET", "/guest_mode", nil, cookie)); strings.TrimSpace(body) != `{"guestMode":true}` {
		t.Errorf("/guest_mode = %s", body)
	}
	if resp := g.do(t, "GET", "/api/settings", nil, cookie); resp.StatusCode != 200 {
		t.Errorf("guest GET: %d", resp.StatusCode)
	}
	for _, p := range []string{"/prompt", "/api/prompt"} {
		if resp := g.do(t, "POST", p, []byte(`{"prompt":{"1":{"class_type":"X","inputs":{}}}}`), cookie, origin); resp.StatusCode != 200 {
			t.Errorf("guest POST %s: %d", p, resp.StatusCode)
		}
		if _, ok := g.Fake.LastRequest(p); !ok {
			t.Errorf("guest POST %s did not reach ComfyUI", p)
		}
	}
	g.Fake.Reset()
	// Settings writes are answered {} (the frontend makes them by itself);
	// every other write is refused with a reason.
	for _, p := range []string{"/settings", "/api/settings"} {
		resp := g.do(t, "POST", p, []byte(`{}`), cookie, origin)
		if body := readBody(t, resp); resp.StatusCode != 200 || body != "{}" {
			t.Errorf("guest POST %s: %d %q, want 200 {}", p, resp.StatusCode, body)
		}
	}
	for _, p := range []string{"/api/interrupt", "/api/userdata/x.json"} {
		resp := g.do(t, "POST", p, []byte(`{}`), cookie, origin)
		if body := readBody(t, resp); resp.StatusCode != 403 || !strings.Contains(body, "guests may look, queue prompts and upload new input images") {
			t.Errorf("guest POST %s: %d %q, want 403 with the reason", p, resp.StatusCode, body)
		}
	}
	if n := len(g.Fake.Requests()); n != 0 {
		t.Errorf("%d guest writes reached ComfyUI", n)
	}
	// Guests are not a logged-in user: /login still shows the form.
	if resp := g.do(t, "GET", "/login", nil, cookie); resp.StatusCode != 200 {
		t.Errorf("guest GET /login: %d", resp.StatusCode)
	}
	if resp := g.do(t, "GET", "/logout", nil, cookie); resp.StatusCode != http.StatusFound {
		t.Errorf("guest logout: %d", resp.StatusCode)
	}
	if resp := g.do(t, "GET", "/api/settings", nil, cookie); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("guest cookie after logout: %d", resp.StatusCode)
	}
}

func TestGuestButtonDoesNothingWhenGuestModeIsOff(t *testing.T) {
	g := startLoginGateway(t, nil)
	resp := g.do(t, "POST", "/login", form(url.Values{"guest_mode": {"1"}}), formType)
	if len(resp.Cookies()) != 0 || resp.Header.Get("Location") != "/login" {
		t.Fatalf("guest login with guest mode off: %d to %q, %d cookies", resp.StatusCode, resp.Header.Get("Location"), len(resp.Cookies()))
	}
}

func TestFailedLoginsReachTheThrottle(t *testing.T) {
	g := startLoginGateway(t, func(c *Config) { c.MaxLoginAttempts = 2; c.ThrottleLock = 30 * time.Second })
	g.login(t, "wrong")
	g.login(t, "wrong")
	resp, cookie := g.login(t, testPassword)
	retry := resp.Header.Get("Retry-After")
	if resp.StatusCode != http.StatusTooManyRequests || cookie != "" || retry == "" {
		t.Fatalf("blocked client: %d, Retry-After %q", resp.StatusCode, retry)
	}
	if body := readBody(t, g.do(t, "GET", "/login", nil)); !strings.Contains(body, "Too many attempts, try again in ") {
		t.Errorf("login page while blocked lacks the lockout message")
	}
}

func TestExtensionsListGetsTheLogoutScript(t *testing.T) {
	g := startLoginGateway(t, nil)
	hash := strings.SplitN(readFile(t, g.HashFile), "\n", 2)[0]
	for _, p := range []string{"/extensions", "/api/extensions"} {
		resp := g.do(t, "GET", p, nil, "Authorization: Bearer "+hash)
		var list []string
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if len(list) < 2 || list[len(list)-1] != "/comfyui-auth/logout.js" {
			t.Errorf("%s = %v, want the logout script last", p, list)
		}
	}
	resp := g.do(t, "GET", "/comfyui-auth/logout.js", nil)
	if body := readBody(t, resp); resp.StatusCode != 200 || !strings.Contains(body, "/logout") {
		t.Errorf("logout script: %d", resp.StatusCode)
	}
}

func TestSessionKeySources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "session.key")
	k1, src, err := sessionKey(Config{SecretKeyFile: file}, nil)
	if err != nil || !strings.Contains(src, "created") {
		t.Fatalf("creating key file: %v %q", err, src)
	}
	k2, _, err := sessionKey(Config{SecretKeyFile: file}, nil)
	if err != nil || string(k1) != string(k2) {
		t.Fatalf("key file not reused: %v", err)
	}
	if _, _, err := sessionKey(Config{SecretKey: "short"}, nil); err == nil || !strings.Contains(err.Error(), "urandom") {
		t.Errorf("short SECRET_KEY: %v", err)
	}
	state := filepath.Join(dir, "state")
	sd, err := openStateDir(state, zerolog.Nop())
	must(t, err)
	s1, src, err := sessionKey(Config{}, sd)
	if err != nil || !strings.Contains(src, "created") {
		t.Fatalf("creating the key in the state dir: %v %q", err, src)
	}
	if s2, _, _ := sessionKey(Config{}, sd); string(s2) != string(s1) {
		t.Fatal("the state dir's key is not reused")
	}
	if k, _, _ := sessionKey(Config{SecretKey: "a-given-key-0123456789"}, sd); string(k) != "a-given-key-0123456789" {
		t.Error("SECRET_KEY does not win over the state dir's key")
	}
	if fi, err := os.Stat(filepath.Join(state, stateKeyFileName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state dir key file: %v %v", err, fi)
	}
	r1, src, _ := sessionKey(Config{}, nil)
	r2, _, _ := sessionKey(Config{}, nil)
	if src != "" || string(r1) == string(r2) {
		t.Errorf("without a key, each start should get a random key")
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
