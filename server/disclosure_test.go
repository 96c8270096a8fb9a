package server

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/hashstore"
)

// nonLoopbackIP returns an address of this machine that is not loopback, so
// a test can be a stranger to a gateway listening on it; "" when none.
func nonLoopbackIP(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			ln, err := net.Listen("tcp", n.IP.String()+":0")
			if err == nil {
				ln.Close()
				return n.IP.String()
			}
		}
	}
	return ""
}

// getWith sends GET url with an optional Bearer token and header pairs, and
// leaves the body open for the caller.
func getWith(t *testing.T, c *http.Client, url, token string, headers ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func readyzBody(t *testing.T, resp *http.Response) map[string]any {
	t.Helper()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("/readyz body: %v", err)
	}
	return body
}

// TestReadyzTellsStrangersOnlyAStatusWord: an unauthenticated caller from
// elsewhere (another address, or relayed by a proxy) learns the status word
// and nothing else: not the hash file's path, not ComfyUI's address, not an
// error text. The operator gets the details with a token, from loopback
// (the healthcheck inside the container), and in the log.
func TestReadyzTellsStrangersOnlyAStatusWord(t *testing.T) {
	ip := nonLoopbackIP(t)
	listen := "127.0.0.1:0"
	if ip != "" {
		listen = "0.0.0.0:0" // reachable over loopback and from ip
	} else {
		t.Log("no non-loopback address on this machine: only the relayed-stranger cases run")
	}
	hashFile := ""
	g := startGateway(t, gatewayOpts{hashContent: ptr(""), configure: func(c *Config) {
		c.Listen = listen
		hashFile = c.HashFile
	}})
	secrets := func(body map[string]any) []string {
		b, _ := json.Marshal(body)
		var leaks []string
		for _, s := range []string{hashFile, "qwen-api-user.token", g.Upstream.URL, strings.TrimPrefix(g.Upstream.URL, "http://"), "does not exist"} {
			if strings.Contains(string(b), s) {
				leaks = append(leaks, s)
			}
		}
		return leaks
	}
	stranger := func(name string, c *http.Client, url string, headers ...string) {
		t.Helper()
		resp := getWith(t, c, url, "", headers...)
		body := readyzBody(t, resp)
		// The code says what the status word says, no more.
		if resp.StatusCode != http.StatusServiceUnavailable || len(body) != 2 || body["status"] != "not ready" || body["code"] != "not_ready" {
			t.Errorf("%s: %d %v, want 503 {\"status\":\"not ready\",\"code\":\"not_ready\"} and nothing else", name, resp.StatusCode, body)
		}
		if leaks := secrets(body); len(leaks) > 0 {
			t.Errorf("%s: /readyz tells a stranger %q", name, leaks)
		}
	}
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(g.URL, "http://"))
	loop := "http://127.0.0.1:" + port
	if ip != "" {
		stranger("from "+ip, noRedirect, "http://"+ip+":"+port+"/readyz")
	}
	// A loopback peer relaying someone else is a stranger too.
	for _, h := range [][]string{{"X-Forwarded-For", "203.0.113.7"}, {"Forwarded", "for=203.0.113.7"}, {"X-Real-Ip", "203.0.113.7"}, {"Via", "1.1 nginx"}} {
		stranger("relayed with "+h[0], noRedirect, loop+"/readyz", h...)
	}

	// Now a credential appears; garbage written over it makes the gateway
	// degraded: still a word only for strangers.
	must(t, os.WriteFile(g.HashFile, []byte(lowCostHash(t, "readyz password")), 0o644))
	eventually(t, 10*time.Second, "the credential is loaded", func() bool { return g.Server.Store().Status().Ready })
	must(t, os.WriteFile(g.HashFile, []byte("$2b$12$short"), 0o644))
	eventually(t, 10*time.Second, "the broken file is noticed", func() bool { return g.Server.Store().Status().LastError != "" })
	resp := getWith(t, noRedirect, loop+"/readyz", "", "X-Forwarded-For", "203.0.113.7")
	if body := readyzBody(t, resp); resp.StatusCode != 200 || len(body) != 1 || body["status"] != "degraded" {
		t.Errorf("degraded, to a stranger: %d %v, want 200 {\"status\":\"degraded\"}", resp.StatusCode, body)
	}

	// With the hash as a token, from the same place: the details.
	snapHash := g.Server.Store().Snapshot().Creds.Hashes[0]
	resp = getWith(t, noRedirect, loop+"/readyz", snapHash, "X-Forwarded-For", "203.0.113.7")
	body := readyzBody(t, resp)
	if resp.StatusCode != 200 || body["status"] != "degraded" || !strings.Contains(fmt.Sprint(body["reason"]), "keeping the credentials") {
		t.Errorf("degraded, to a caller with the hash token: %d %v, want the reason", resp.StatusCode, body)
	}
	// A wrong token is refused like anywhere else.
	if resp := statusWith(t, noRedirect, loop+"/readyz", "not-the-token", "X-Forwarded-For", "203.0.113.7"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/readyz with a wrong token = %d, want 401", resp.StatusCode)
	}
	// The operator also finds the reason in the log.
	if !strings.Contains(g.Logs.String(), `"readiness":"not ready"`) || !strings.Contains(g.Logs.String(), "does not exist") {
		t.Errorf("the log does not record the readiness change and its reason")
	}
}

// TestReadyzGivesDetailsToTheLocalHealthcheck: `comfyui-auth healthcheck`
// runs inside the container and asks over loopback with no forwarding
// header; it gets the reason, so an unhealthy container says why.
func TestReadyzGivesDetailsToTheLocalHealthcheck(t *testing.T) {
	g := startGateway(t, gatewayOpts{hashContent: ptr("")})
	body := readyzBody(t, g.do(t, "GET", "/readyz", nil))
	if body["status"] != "not ready" || !strings.Contains(fmt.Sprint(body["reason"]), "does not exist") || body["upstream"] != "ok" {
		t.Fatalf("local /readyz = %v, want the reason and the parts", body)
	}
}

// TestRawTokenInTheHashFileIsNotFingerprinted: a password pasted where the
// hash belongs is reported by line number only, never with the fingerprint
// and length that would let a reader confirm a guess offline.
func TestRawTokenInTheHashFileIsNotFingerprinted(t *testing.T) {
	const password = "Summer2024!"
	rememberSecret(password)
	g := startGateway(t, gatewayOpts{hashContent: ptr(password + "\n")})
	body := readyzBody(t, g.do(t, "GET", "/readyz", nil)) // loopback: the details
	reason := fmt.Sprint(body["reason"])
	if !strings.Contains(reason, "raw token") {
		t.Fatalf("reason %q does not say what is wrong", reason)
	}
	fp := hashstore.Fingerprint(password)
	for where, text := range map[string]string{"/readyz": reason, "the log": g.Logs.String()} {
		if strings.Contains(text, fp) || strings.Contains(text, fmt.Sprintf("(%d characters", len(password))) {
			t.Errorf("%s gives the fingerprint or the length of the pasted password", where)
		}
	}
}

// TestPasswordOnTheUsernameLineIsNeverShown: ComfyUI-Login's layout is
// hash then username; a raw token or password pasted as that second line
// is never printed on the public login page, and is logged as an error.
func TestPasswordOnTheUsernameLineIsNeverShown(t *testing.T) {
	const password = "the-raw-token-on-line-two"
	g := startGateway(t, gatewayOpts{hashContent: ptr(lowCostHash(t, password) + "\n" + password + "\n")})
	page := readBody(t, g.do(t, "GET", "/login", nil))
	if strings.Contains(page, password) {
		t.Fatal("the login page shows the password from the username line")
	}
	eventually(t, 5*time.Second, "the error is logged", func() bool {
		return strings.Contains(g.Logs.String(), `"level":"error"`) && strings.Contains(g.Logs.String(), "line 2 of the credential file is the raw token or password")
	})
	// The same file with a real name greets by it.
	must(t, os.WriteFile(g.HashFile, []byte(lowCostHash(t, password)+"\nbob\n"), 0o644))
	eventually(t, 10*time.Second, "the login page greets bob", func() bool {
		return strings.Contains(readBody(t, g.do(t, "GET", "/login", nil)), "Welcome back, <strong>bob</strong>")
	})
}

// TestPasswordAsUsernameFromTheEnvironmentIsNeverShown: the same holds for
// COMFYUI_USERNAME set to the COMFYUI_PASSWORD hashed in memory.
func TestPasswordAsUsernameFromTheEnvironmentIsNeverShown(t *testing.T) {
	const password = "env-password-also-username"
	rememberSecret(password)
	g := startGateway(t, gatewayOpts{hashContent: ptr(""), configure: func(c *Config) {
		c.Password, c.Username = password, password
	}})
	if page := readBody(t, g.do(t, "GET", "/login", nil)); strings.Contains(page, password) {
		t.Fatal("the login page shows COMFYUI_PASSWORD given as COMFYUI_USERNAME")
	}
}
