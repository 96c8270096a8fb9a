package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/comfyui-auth/comfyui-auth/middleware"
)

func TestEveryCredentialKindThroughTheGateway(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	long := strings.Repeat("a", 73)
	tests := []struct {
		name    string
		path    string
		headers []string
		status  int
		code    middleware.RefusalCode // the 401's code
	}{
		{"no credentials", "/system_stats", nil, 401, middleware.CodeNoCredentials},
		{"raw token", "/system_stats", []string{"Authorization: Bearer " + seedToken}, 200, ""},
		{"hash as token", "/system_stats", []string{"Authorization: Bearer " + seedHash}, 200, ""},
		{"lower-case scheme", "/api/system_stats", []string{"Authorization: bearer " + seedHash}, 200, ""},
		{"raw token in query", "/system_stats?token=" + url.QueryEscape(seedToken), nil, 200, ""},
		{"hash in query", "/system_stats?token=" + url.QueryEscape(seedHash), nil, 200, ""},
		{"wrong token", "/system_stats", []string{"Authorization: Bearer not-the-token"}, 401, middleware.CodeWrongToken},
		{"empty query token", "/system_stats?token=", nil, 401, middleware.CodeNoCredentials},
		{"bearer without token", "/system_stats", []string{"Authorization: Bearer"}, 401, middleware.CodeMalformedHeader},
		{"three words", "/system_stats", []string{"Authorization: Bearer a b"}, 401, middleware.CodeMalformedHeader},
		{"other scheme", "/system_stats", []string{"Authorization: Digest username=\"x\""}, 401, middleware.CodeMalformedHeader},
		{"basic that is not base64", "/system_stats", []string{"Authorization: Basic not*base64"}, 401, middleware.CodeMalformedHeader},
		{"basic header does not block a query token", "/system_stats?token=" + url.QueryEscape(seedHash), []string{"Authorization: Basic Zm9vOmJhcg=="}, 200, ""},
		{"73-byte token", "/system_stats", []string{"Authorization: Bearer " + long}, 401, middleware.CodeTokenTooLong},
		{"truncated hash", "/system_stats", []string{"Authorization: Bearer " + seedHash[:59]}, 401, middleware.CodeWrongToken},
		{"health is public", "/healthz", nil, 200, ""},
		{"a ComfyUI static file needs credentials too", "/scripts/app.js", nil, 401, middleware.CodeNoCredentials},
		{"asset name under /api is not public", "/api/userdata/x.js", nil, 401, middleware.CodeNoCredentials},
		{"asset name under /userdata is not public", "/userdata/x.js", nil, 401, middleware.CodeNoCredentials},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := g.do(t, "GET", tc.path, nil, tc.headers...)
			if resp.StatusCode != tc.status {
				body, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.status, body)
			}
			if tc.status != 401 {
				return
			}
			if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Errorf("WWW-Authenticate = %q", got)
			}
			var body map[string]string
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("401 body is not JSON: %v", err)
			}
			if body["error"] != "Authentication required." {
				t.Errorf("error = %q", body["error"])
			}
			if body["code"] != string(tc.code) || body["reason"] == "" {
				t.Errorf("code %q (reason %q), want code %q with a reason", body["code"], body["reason"], tc.code)
			}
		})
	}
}

func TestPostToAssetNameIsNotPublic(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	// ComfyUI-Login lets any method through on *.js; only GET/HEAD pass here.
	if resp := g.do(t, "POST", "/userdata/evil.js", []byte("x")); resp.StatusCode != 401 {
		t.Fatalf("POST /userdata/evil.js = %d, want 401", resp.StatusCode)
	}
	if resp := g.do(t, "POST", "/x.js", []byte("x")); resp.StatusCode != 401 {
		t.Fatalf("POST /x.js = %d, want 401", resp.StatusCode)
	}
}

func TestBrowsersAreSentToLoginAndWebsocketsGet401(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	resp := g.do(t, "GET", "/", nil, "Accept: text/html,application/xhtml+xml")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/login" {
		t.Fatalf("browser GET / = %d to %q, want 302 to /login", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp = g.do(t, "GET", "/ws?clientId=abc", nil, "Accept: text/html", "Connection: Upgrade", "Upgrade: websocket",
		"Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("websocket without credentials = %d, want 401", resp.StatusCode)
	}
	// The deployment's old healthcheck greps for 200|401 on GET /.
	if resp := g.do(t, "GET", "/", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("plain GET / = %d, want 401", resp.StatusCode)
	}
}

func TestRawTokenIsCheckedOnceThenCached(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	before := g.Server.Verifier().Stats().Checks
	for i := 0; i < 3; i++ {
		if resp := g.do(t, "GET", "/system_stats", nil, "Authorization: Bearer "+seedToken); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	st := g.Server.Verifier().Stats()
	if st.Checks-before != 1 {
		t.Fatalf("bcrypt ran %d times for 3 uses of one token, want 1", st.Checks-before)
	}
	if st.CacheHits < 2 {
		t.Fatalf("cache hits = %d, want >= 2", st.CacheHits)
	}
}

func TestHashTokenNeverRunsBcrypt(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	before := g.Server.Verifier().Stats().Checks
	for i := 0; i < 5; i++ {
		if resp := g.do(t, "GET", "/queue", nil, "Authorization: Bearer "+seedHash); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if n := g.Server.Verifier().Stats().Checks - before; n != 0 {
		t.Fatalf("hash token ran bcrypt %d times", n)
	}
}

func TestHashTokensCanBeTurnedOff(t *testing.T) {
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.AcceptHashToken = false }})
	if resp := g.do(t, "GET", "/system_stats", nil, "Authorization: Bearer "+seedHash); resp.StatusCode != 401 {
		t.Fatalf("hash token with hash tokens off = %d, want 401", resp.StatusCode)
	}
	if resp := g.do(t, "GET", "/system_stats", nil, "Authorization: Bearer "+seedToken); resp.StatusCode != 200 {
		t.Fatalf("raw token = %d, want 200", resp.StatusCode)
	}
}

func TestNoCredentialConfiguredFailsClosed(t *testing.T) {
	g := startGateway(t, gatewayOpts{hashContent: ptr("")})
	for _, h := range [][]string{nil, {"Authorization: Bearer "}, {"Authorization: Bearer " + seedToken}, {"Authorization: Bearer " + seedHash}} {
		resp := g.do(t, "GET", "/system_stats?token=", nil, h...)
		var body map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&body)
		// With no token there is nothing to check, so the refusal names
		// what the request lacks rather than the server's missing file.
		want := middleware.CodeNoCredentialLoaded
		switch {
		case len(h) == 0:
			want = middleware.CodeNoCredentials
		case h[0] == "Authorization: Bearer ":
			want = middleware.CodeMalformedHeader
		}
		if resp.StatusCode != 401 || body["code"] != string(want) {
			t.Fatalf("with %v: %d %q, want 401 %q", h, resp.StatusCode, body["code"], want)
		}
	}
	resp := g.do(t, "GET", "/readyz", nil)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz = %d, want 503", resp.StatusCode)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "no valid credential") {
		t.Fatalf("readyz body does not explain: %s", body)
	}
}

func TestPasswordFromEnvironmentWhenNoFile(t *testing.T) {
	g := startGateway(t, gatewayOpts{hashContent: ptr(""), configure: func(c *Config) { c.Password = "correct horse" }})
	rememberSecret("correct horse")
	if resp := g.do(t, "GET", "/system_stats", nil, "Authorization: Bearer correct horse"); resp.StatusCode != 401 {
		t.Fatalf("a password with a space cannot be a Bearer token: %d", resp.StatusCode)
	}
	if resp := g.do(t, "GET", "/system_stats?token=correct+horse", nil); resp.StatusCode != 200 {
		t.Fatalf("COMFYUI_PASSWORD as token = %d, want 200", resp.StatusCode)
	}
}

func TestAuthenticationDisabledIsAPlainProxy(t *testing.T) {
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.AuthEnabled = false }})
	if resp := g.do(t, "GET", "/system_stats", nil); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}
