package server

import (
	"os"

	"bufio"
	"fmt"
	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// protectedRoutes are ComfyUI routes (and their /api twins) a request
// without credentials must never reach.
var protectedRoutes = []struct{ method, path string }{
	{"GET", "/"}, {"GET", "/system_stats"}, {"GET", "/api/system_stats"},
	{"GET", "/prompt"}, {"POST", "/prompt"}, {"POST", "/api/prompt"},
	{"GET", "/queue"}, {"POST", "/api/queue"}, {"GET", "/history"}, {"POST", "/history"},
	{"POST", "/interrupt"}, {"POST", "/api/free"}, {"POST", "/upload/image"}, {"POST", "/api/upload/image"},
	{"GET", "/view?filename=a.png"}, {"GET", "/object_info"}, {"GET", "/api/extensions"},
	{"GET", "/userdata/workflows%2Fa.json"}, {"POST", "/api/userdata/workflows%2Fa.json"},
	{"DELETE", "/api/userdata/x.json"}, {"GET", "/internal/logs"}, {"GET", "/api/settings"},
	{"GET", "/ws?clientId=x"}, {"GET", "/api/ws?clientId=x"},
}

// TestNoCredentialConfiguredRefusesEveryProtectedPath: with no credential
// file, every protected route is refused whatever the client sends, and
// nothing reaches ComfyUI.
func TestNoCredentialConfiguredRefusesEveryProtectedPath(t *testing.T) {
	g := startGateway(t, gatewayOpts{hashContent: ptr("")})
	attempts := [][]string{nil, {"Authorization: Bearer "}, {"Authorization: Bearer " + seedHash},
		{"Authorization: Bearer " + seedToken}, {"Authorization: Bearer \"\""}, {"Cookie: comfyui_auth_session=x"}}
	for _, rt := range protectedRoutes {
		for _, h := range attempts {
			for _, q := range []string{"", "token=", "token=" + url.QueryEscape(seedHash)} {
				path := rt.path
				if q != "" {
					path += map[bool]string{true: "&", false: "?"}[strings.Contains(path, "?")] + q
				}
				resp := g.do(t, rt.method, path, nil, h...)
				if resp.StatusCode != 401 {
					t.Errorf("%s %s with %v = %d, want 401", rt.method, path, h, resp.StatusCode)
				}
			}
		}
	}
	if n := len(g.Fake.Requests()); n != 0 {
		t.Fatalf("%d requests reached ComfyUI with no credential configured", n)
	}
}

// TestPathTricksReachNothingProtected sends unauthenticated requests whose
// paths try to look public. Each must be refused by the gateway or, for a
// GET of something shaped like a static asset, reach ComfyUI only as a
// file it does not have (404), never as a protected route.
func TestPathTricksReachNothingProtected(t *testing.T) {
	g := startGateway(t, gatewayOpts{fake: fakecomfyNoOriginCheck})
	tricks := []string{
		"/login/../prompt", "/login/..%2fprompt", "/login/%2e%2e/prompt", "//prompt", "///api//prompt",
		"/%2e%2e/prompt", "/./prompt", "/prompt/.", "/PROMPT.js", "/prompt.js", "/api/prompt.js",
		"/prompt%00.js", "/prompt;.js", "/prompt%3F.js", "/api/userdata/x.js", "/userdata/a.css",
		"/internal/logs.ico", "/login%2f..%2fprompt", "/healthz/../prompt", "/readyz/../queue",
		"/Login", "/login/", "/login.js/../prompt", "/api/%2e%2e/prompt", "/%61pi/prompt",
	}
	for _, p := range tricks {
		for _, m := range []string{"GET", "POST"} {
			t.Run(m+" "+p, func(t *testing.T) {
				g.Fake.Reset()
				resp, err := rawRequest(g, m, p)
				if err != nil {
					t.Fatal(err)
				}
				switch resp.StatusCode {
				case 400, 401, 404, 405:
				default:
					t.Fatalf("status %d, want a refusal", resp.StatusCode)
				}
				for _, rec := range g.Fake.Requests() {
					if rec.Status != 404 && rec.Status != 405 && rec.Status != 0 {
						t.Fatalf("ComfyUI answered %s %s with %d", rec.Method, rec.Path, rec.Status)
					}
				}
			})
		}
	}
}

// rawRequest writes the request line by hand, so the client library does
// not clean or re-encode the path.
func rawRequest(g *gateway, method, path string) (*http.Response, error) {
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(g.URL, "http://"), 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", method, path, strings.TrimPrefix(g.URL, "http://"))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp, nil
}

// TestOverlongTokenIsRefusedWithoutBcrypt: bcrypt ignores bytes past 72, so
// a 73-byte token whose first 72 bytes are right must not pass, and must
// not cost a bcrypt check either.
func TestOverlongTokenIsRefusedWithoutBcrypt(t *testing.T) {
	tok72 := strings.Repeat("k", 72)
	g := startGateway(t, gatewayOpts{hashContent: ptr(lowCostHash(t, tok72)), configure: func(c *Config) { c.MaxLoginAttempts = 0 }})
	if s := status(t, g, tok72); s != 200 {
		t.Fatalf("72-byte token = %d, want 200", s)
	}
	before := g.Server.Verifier().Stats().Checks
	for _, tok := range []string{tok72 + "x", tok72 + tok72, strings.Repeat("z", 73)} {
		if s := status(t, g, tok); s != 401 {
			t.Fatalf("%d-byte token = %d, want 401", len(tok), s)
		}
	}
	if n := g.Server.Verifier().Stats().Checks - before; n != 0 {
		t.Fatalf("over-long tokens cost %d bcrypt checks", n)
	}
}

// The hash token is decided by the store's crypto/subtle comparison alone
// and never costs a bcrypt check, so how long it takes cannot depend on
// bcrypt; every raw token that is not cached goes through bcrypt, one check
// each. (That the comparison covers every hash with 32-byte digests is
// TestMatchHashComparesEqualLengthDigestsWithEveryHash in hashstore; timing
// itself is not asserted, since it would flake on a shared machine.)
func TestHashTokenSkipsBcryptAndRawTokensGoThroughIt(t *testing.T) {
	// A cost-4 pair: the bcrypt checks counted here need not be slow.
	token := "constant-time-raw-token-5b1d"
	hash := lowCostHash(t, token)
	g := startGateway(t, gatewayOpts{hashContent: &hash, configure: func(c *Config) { c.MaxLoginAttempts = 0 }})
	checks := func() int64 { return g.Server.Verifier().Stats().Checks }
	before := checks()
	for i := 0; i < 20; i++ {
		if s := status(t, g, hash); s != 200 {
			t.Fatalf("hash token = %d", s)
		}
	}
	if n := checks() - before; n != 0 {
		t.Fatalf("the hash token cost %d bcrypt checks, want 0", n)
	}
	for i, tok := range []string{"wrong-raw-token-1", "wrong-raw-token-2", hash[:59]} {
		before := checks()
		if s := status(t, g, tok); s != 401 {
			t.Fatalf("wrong token %d = %d, want 401", i, s)
		}
		if n := checks() - before; n != 1 {
			t.Fatalf("wrong token %d cost %d bcrypt checks, want 1", i, n)
		}
	}
	before = checks()
	if s := status(t, g, token); s != 200 {
		t.Fatalf("raw token = %d", s)
	}
	if n := checks() - before; n != 1 {
		t.Fatalf("the raw token cost %d bcrypt checks, want 1", n)
	}
}

// TestUpstreamNeverSeesCredentialsOnWebsockets is the websocket twin of
// TestUpstreamNeverSeesOurCredentials.
func TestUpstreamNeverSeesCredentialsOnWebsockets(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	rememberSecret("ws-cookie-secret-value")
	h := http.Header{"Origin": {g.URL}, "Authorization": {"Bearer " + seedHash},
		"Cookie": {"comfyui_auth_session=ws-cookie-secret-value; theme=dark"}, "Comfy-User": {"admin"}}
	conn, resp, err := dialWS(t, g, "/ws?clientId=c1&token="+url.QueryEscape(seedToken), h)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	conn.Close()
	rec, ok := g.Fake.LastRequest("/ws")
	if !ok {
		t.Fatal("the handshake did not reach ComfyUI")
	}
	if rec.Header.Get("Authorization") != "" || rec.Header.Get("Comfy-User") != "" ||
		strings.Contains(rec.RawQuery, "token") || strings.Contains(rec.Header.Get("Cookie"), "comfyui_auth_session") {
		t.Fatalf("upstream saw credentials: query %q, headers %v", rec.RawQuery, rec.Header)
	}
}

// TestNoSecretReachesTheLogs drives the scenarios that handle secrets (every
// credential kind, near misses of the hash, a broken file holding a partial
// hash, session cookies) and scans this gateway's whole log for them and for
// any 20-character piece of the hash. TestMain repeats the full-string scan
// over every gateway of the package.
func TestNoSecretReachesTheLogs(t *testing.T) {
	// A cost-4 pair keeps the near misses (which do run bcrypt) fast.
	token := "log-scan-raw-token-7f3a9c2e"
	hash := lowCostHash(t, token)
	g := startGateway(t, gatewayOpts{hashContent: ptr(hash), configure: func(c *Config) {
		c.PollInterval = 50 * time.Millisecond
		c.MaxLoginAttempts = 0
	}})
	cookie := "comfyui_auth_session=log-scan-cookie-value-123456"
	rememberSecret("log-scan-cookie-value-123456")
	for _, h := range [][]string{
		{"Authorization: Bearer " + hash}, {"Authorization: Bearer " + token},
		{"Authorization: Bearer " + hash[:59]}, {"Authorization: Bearer " + hash + "x"},
		{"Authorization: Basic " + token}, {"Authorization: Bearer " + token + " extra"},
		{"Cookie: " + cookie}, {"X-Request-Id: " + hash},
		{"X-Request-Id: " + token, "Authorization: Bearer " + token},
	} {
		g.do(t, "GET", "/queue?token="+url.QueryEscape(hash), nil, h...)
		g.do(t, "GET", "/ws?token="+url.QueryEscape(token), nil, h...)
		g.do(t, "GET", "/queue", nil, h...)
	}
	must(t, writeFile(g.HashFile, hash[:45]))
	eventually(t, 3*time.Second, "the truncated file is reported", func() bool { return g.Server.Store().Status().LastError != "" })
	must(t, writeFile(g.HashFile, hash+"\n"))
	eventually(t, 3*time.Second, "recovery", func() bool { return g.Server.Store().Status().LastError == "" })
	logs := g.Logs.String()
	for _, s := range []string{token, hash, "log-scan-cookie-value-123456"} {
		if strings.Contains(logs, s) {
			t.Fatalf("a secret reached the log: %q", s[:14])
		}
	}
	for i := 7; i+20 <= len(hash); i++ {
		if strings.Contains(logs, hash[i:i+20]) {
			t.Fatalf("a 20-character piece of the hash (offset %d) reached the log", i)
		}
	}
}

var fakecomfyNoOriginCheck = fakecomfy.Options{DisableOriginCheck: true}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o644) }
