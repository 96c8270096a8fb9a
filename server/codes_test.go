package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
	"github.com/comfyui-auth/comfyui-auth/middleware"
	"golang.org/x/crypto/bcrypt"
)

var (
	dataCode  = regexp.MustCompile(`data-code="([a-z_]+)"`)
	plainCode = regexp.MustCompile(`(?m)^code: ([a-z_]+)$`)
)

// refusalCode reads the code of a refusal in whichever form it came: the
// JSON body's "code" (which must sit beside "error"), an HTML page's
// data-code, or a plain-text page's "code:" line.
func refusalCode(t *testing.T, contentType string, body []byte) middleware.RefusalCode {
	t.Helper()
	switch {
	case strings.HasPrefix(contentType, "application/json"):
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("refusal body is not JSON: %v: %s", err, body)
		}
		if e, _ := m["error"].(string); e == "" && m["status"] == nil {
			t.Errorf("refusal body has no error: %s", body)
		}
		c, _ := m["code"].(string)
		return middleware.RefusalCode(c)
	case strings.HasPrefix(contentType, "text/html"):
		if m := dataCode.FindSubmatch(body); m != nil {
			if !bytes.Contains(body, []byte("code: "+string(m[1]))) {
				t.Errorf("page has data-code %s but does not show it", m[1])
			}
			return middleware.RefusalCode(m[1])
		}
	case strings.HasPrefix(contentType, "text/plain"):
		if m := plainCode.FindSubmatch(body); m != nil {
			return middleware.RefusalCode(m[1])
		}
	}
	return ""
}

// holdWorker starts a gateway with one bcrypt worker that the token "hold"
// keeps busy until the test ends; the holding request runs in the
// background and is answered at cleanup.
func holdWorker(t *testing.T, configure func(*Config)) *gateway {
	t.Helper()
	release := make(chan struct{})
	g := startGateway(t, gatewayOpts{hashContent: ptr(lowCostHash(t, "codes-right")), configure: func(c *Config) {
		c.BcryptWorkers = 1
		c.BcryptQueue = 1
		c.BcryptMaxWait = time.Millisecond
		c.bcryptCompare = func(h, p []byte) error {
			if strings.HasPrefix(string(p), "hold") {
				<-release
			}
			return bcrypt.CompareHashAndPassword(h, p)
		}
		if configure != nil {
			configure(c)
		}
	}})
	done := make(chan struct{})
	t.Cleanup(func() { close(release); <-done })
	go func() {
		defer close(done)
		req, _ := http.NewRequest("GET", g.URL+"/queue", nil)
		req.Header.Set("Authorization", "Bearer hold")
		if resp, err := noRedirect.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	eventually(t, 10*time.Second, "the worker is busy", func() bool { return g.Server.Verifier().Stats().InFlight == 1 })
	return g
}

// untilStatus repeats send until it answers status (at most 60 times) and
// returns that answer.
func untilStatus(t *testing.T, status int, send func() *http.Response) *http.Response {
	t.Helper()
	for i := 0; i < 60; i++ {
		resp := send()
		if resp.StatusCode == status {
			return resp
		}
		resp.Body.Close()
	}
	t.Fatalf("no %d after 60 tries", status)
	return nil
}

// rawExchange sends raw on a new connection and reads one answer.
func rawExchange(t *testing.T, g *gateway, raw string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	return resp
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestEveryRefusalCarriesItsCode provokes each refusal the gateway answers
// itself, through the real server, and checks its status and code: a
// refusal site that loses its code, or answers with another one, fails
// here. JSON clients get the code in the body; browsers get it on the page.
func TestEveryRefusalCarriesItsCode(t *testing.T) {
	right := "codes-right"
	acceptJSON := "Accept: application/json"
	acceptHTML := "Accept: text/html"
	std := func(t *testing.T) *gateway {
		return startGateway(t, gatewayOpts{hashContent: ptr(lowCostHash(t, right))})
	}
	guest := func(t *testing.T) (*gateway, string) {
		return guestGateway(t, fakecomfy.Options{})
	}
	tests := []struct {
		name   string
		status int
		code   middleware.RefusalCode
		send   func(t *testing.T) *http.Response
	}{
		{"no credentials", 401, middleware.CodeNoCredentials, func(t *testing.T) *http.Response {
			return std(t).do(t, "GET", "/queue", nil)
		}},
		{"malformed header", 401, middleware.CodeMalformedHeader, func(t *testing.T) *http.Response {
			return std(t).do(t, "GET", "/queue", nil, "Authorization: Basic dXNlcnBhc3M=") // "userpass": no colon
		}},
		{"wrong token", 401, middleware.CodeWrongToken, func(t *testing.T) *http.Response {
			return std(t).do(t, "GET", "/queue", nil, "Authorization: Bearer not-the-token")
		}},
		{"token too long", 401, middleware.CodeTokenTooLong, func(t *testing.T) *http.Response {
			return std(t).do(t, "GET", "/queue", nil, "Authorization: Bearer "+strings.Repeat("x", 80))
		}},
		{"no credential loaded", 401, middleware.CodeNoCredentialLoaded, func(t *testing.T) *http.Response {
			g := startGateway(t, gatewayOpts{hashContent: ptr("")})
			return g.do(t, "GET", "/queue", nil, "Authorization: Bearer some-token")
		}},
		{"locked out", 429, middleware.CodeLockedOut, func(t *testing.T) *http.Response {
			g := std(t)
			return untilStatus(t, 429, func() *http.Response {
				return g.do(t, "GET", "/queue", nil, "Authorization: Bearer wrong-guess")
			})
		}},
		{"locked out, login JSON", 429, middleware.CodeLockedOut, func(t *testing.T) *http.Response {
			g := std(t)
			return untilStatus(t, 429, func() *http.Response {
				return g.do(t, "POST", "/login", form(url.Values{"password": {"wrong-guess"}}), formType, acceptJSON)
			})
		}},
		{"locked out, login page", 429, middleware.CodeLockedOut, func(t *testing.T) *http.Response {
			g := std(t)
			return untilStatus(t, 429, func() *http.Response {
				return g.do(t, "POST", "/login", form(url.Values{"password": {"wrong-guess"}}), formType, acceptHTML)
			})
		}},
		{"pool busy", 503, middleware.CodePoolBusy, func(t *testing.T) *http.Response {
			return holdWorker(t, nil).do(t, "GET", "/queue", nil, "Authorization: Bearer waits")
		}},
		{"pool busy, login page", 503, middleware.CodePoolBusy, func(t *testing.T) *http.Response {
			return holdWorker(t, nil).do(t, "POST", "/login", form(url.Values{"password": {right}}), formType, acceptHTML)
		}},
		{"client busy", 429, middleware.CodeClientBusy, func(t *testing.T) *http.Response {
			g := holdWorker(t, func(c *Config) { c.BcryptMaxWait = time.Minute; c.MaxLoginAttempts = 0 })
			// A second check of this client waits in the queue; the third
			// is over its share.
			go func() {
				req, _ := http.NewRequest("GET", g.URL+"/queue", nil)
				req.Header.Set("Authorization", "Bearer hold-second")
				if resp, err := noRedirect.Do(req); err == nil {
					resp.Body.Close()
				}
			}()
			eventually(t, 10*time.Second, "a second check queued", func() bool { return g.Server.Verifier().Stats().Queued == 1 })
			return g.do(t, "GET", "/queue", nil, "Authorization: Bearer third")
		}},
		{"credentials reloaded during both password checks", 503, middleware.CodeCredentialsReloaded, func(t *testing.T) *http.Response {
			// Each check of the right password sees the file replaced (by
			// another hash of the same password) before it answers, so the
			// match is against credentials no longer in force, twice.
			hashes := []string{lowCostHash(t, right), lowCostHash(t, right), lowCostHash(t, right)}
			var g *gateway
			var checks atomic.Int32
			g = startGateway(t, gatewayOpts{hashContent: ptr(hashes[0]), configure: func(c *Config) {
				c.bcryptCompare = func(h, p []byte) error {
					if string(p) == right {
						n := int(checks.Add(1))
						gen := g.Server.Store().Snapshot().Generation
						if err := os.WriteFile(g.HashFile, []byte(hashes[n%3]+"\n"), 0o644); err != nil {
							t.Error(err) // a worker goroutine: no Fatal here
						}
						deadline := time.Now().Add(10 * time.Second)
						for g.Server.Store().Snapshot().Generation == gen && time.Now().Before(deadline) {
							time.Sleep(10 * time.Millisecond)
						}
					}
					return bcrypt.CompareHashAndPassword(h, p)
				}
			}})
			return g.do(t, "POST", "/login", form(url.Values{"password": {right}}), formType, acceptJSON)
		}},
		{"cross origin", 403, middleware.CodeCrossOrigin, func(t *testing.T) *http.Response {
			g := std(t)
			_, cookie := g.login(t, right)
			return g.do(t, "POST", "/prompt", []byte(`{"prompt":{}}`), cookie, "Origin: http://evil.example", "Content-Type: application/json")
		}},
		{"cross-site login, plain text", 403, middleware.CodeCrossSite, func(t *testing.T) *http.Response {
			return std(t).do(t, "POST", "/login", form(url.Values{"password": {right}}), formType, "Origin: http://evil.example")
		}},
		{"cross-site login, JSON", 403, middleware.CodeCrossSite, func(t *testing.T) *http.Response {
			return std(t).do(t, "POST", "/login", form(url.Values{"password": {right}}), formType, "Origin: http://evil.example", acceptJSON)
		}},
		{"guest forbidden", 403, middleware.CodeGuestForbidden, func(t *testing.T) *http.Response {
			g, cookie := guest(t)
			return g.do(t, "GET", "/internal/logs", nil, cookie)
		}},
		{"guest bad request", 400, middleware.CodeGuestBadRequest, func(t *testing.T) *http.Response {
			g, cookie := guest(t)
			return g.do(t, "POST", "/prompt", []byte(`not json`), cookie, "Origin: "+g.URL, "Content-Type: application/json")
		}},
		{"guest prompt too large", 413, middleware.CodeGuestTooLarge, func(t *testing.T) *http.Response {
			g, cookie := guest(t)
			body := append([]byte(`{"prompt":"`), bytes.Repeat([]byte("x"), middleware.MaxGuestPromptBytes+1)...)
			return g.do(t, "POST", "/prompt", body, cookie, "Origin: "+g.URL, "Content-Type: application/json")
		}},
		{"guest logins limited", 429, middleware.CodeGuestLoginLimited, func(t *testing.T) *http.Response {
			g, _ := guest(t)
			return untilStatus(t, 429, func() *http.Response {
				return g.do(t, "POST", "/login", form(url.Values{"guest_mode": {"1"}}), formType, acceptHTML)
			})
		}},
		{"login form too large", 413, middleware.CodeLoginFormTooLarge, func(t *testing.T) *http.Response {
			return std(t).do(t, "POST", "/login", form(url.Values{"password": {strings.Repeat("x", 5000)}}), formType, acceptHTML)
		}},
		{"login form too large, JSON", 413, middleware.CodeLoginFormTooLarge, func(t *testing.T) *http.Response {
			return std(t).do(t, "POST", "/login", form(url.Values{"password": {strings.Repeat("x", 5000)}}), formType, acceptJSON)
		}},
		{"login form unreadable", 400, middleware.CodeLoginFormUnreadable, func(t *testing.T) *http.Response {
			return std(t).do(t, "POST", "/login", []byte("password=%zz"), formType, acceptHTML)
		}},
		{"login form timeout", 408, middleware.CodeLoginFormTimeout, func(t *testing.T) *http.Response {
			g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.loginReadTimeout = 200 * time.Millisecond }})
			return rawExchange(t, g, "POST /login HTTP/1.1\r\nHost: gw\r\nAccept: text/html\r\n"+
				"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\npassword=")
		}},
		{"upstream down", 502, middleware.CodeUpstreamDown, func(t *testing.T) *http.Response {
			g := startGateway(t, gatewayOpts{hashContent: ptr(lowCostHash(t, right)), configure: func(c *Config) { c.Upstream = "http://" + closedAddr(t) }})
			return g.do(t, "GET", "/queue", nil, "Authorization: Bearer "+right)
		}},
		{"upstream down, page", 502, middleware.CodeUpstreamDown, func(t *testing.T) *http.Response {
			g := startGateway(t, gatewayOpts{hashContent: ptr(lowCostHash(t, right)), configure: func(c *Config) { c.Upstream = "http://" + closedAddr(t) }})
			return g.do(t, "GET", "/queue", nil, "Authorization: Bearer "+right, acceptHTML)
		}},
		{"upstream timeout", 504, middleware.CodeUpstreamTimeout, func(t *testing.T) *http.Response {
			g := startGateway(t, gatewayOpts{hashContent: ptr(lowCostHash(t, right)),
				configure: func(c *Config) { c.UpstreamTimeout = 300 * time.Millisecond },
				fake: fakecomfy.Options{Delay: func(r *http.Request) time.Duration {
					if r.URL.Path == "/queue" {
						return time.Minute
					}
					return 0
				}}})
			return g.do(t, "GET", "/queue", nil, "Authorization: Bearer "+right)
		}},
		{"not ready", 503, middleware.CodeNotReady, func(t *testing.T) *http.Response {
			return startGateway(t, gatewayOpts{hashContent: ptr("")}).do(t, "GET", "/readyz", nil)
		}},
		{"method not allowed", 405, middleware.CodeMethodNotAllowed, func(t *testing.T) *http.Response {
			return std(t).do(t, "POST", "/readyz", nil)
		}},
		{"queue share", 429, middleware.CodeQueueShare, func(t *testing.T) *http.Response {
			g := shareGateway(t, 1, false)
			g.do(t, "POST", "/prompt", []byte(onePrompt), bearer).Body.Close()
			return g.do(t, "POST", "/prompt", []byte(onePrompt), bearer)
		}},
		{"queue unchecked", 502, middleware.CodeQueueUnchecked, func(t *testing.T) *http.Response {
			notComfy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, "this is not ComfyUI")
			}))
			t.Cleanup(notComfy.Close)
			g := startGateway(t, gatewayOpts{hashContent: ptr(lowCostHash(t, muToken)), configure: func(c *Config) {
				c.MaxQueuedPrompts = 1
				c.Upstream = notComfy.URL
			}})
			return g.do(t, "POST", "/prompt", []byte(onePrompt), bearer)
		}},
		{"prompt unreadable", 400, middleware.CodePromptUnreadable, func(t *testing.T) *http.Response {
			return shareGateway(t, 1, false).do(t, "POST", "/prompt", []byte(`{"prompt":{},"extra_data":[]}`), bearer)
		}},
		{"prompt too large", 413, middleware.CodePromptTooLarge, func(t *testing.T) *http.Response {
			body := append([]byte(`{"prompt":"`), bytes.Repeat([]byte("x"), middleware.MaxPromptBytes)...)
			return shareGateway(t, 1, false).do(t, "POST", "/api/prompt", body, bearer)
		}},
		{"own prompts unchecked", 502, middleware.CodeOwnPromptsUnchecked, func(t *testing.T) *http.Response {
			notComfy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, "this is not ComfyUI")
			}))
			t.Cleanup(notComfy.Close)
			c := newClassFile(t)
			g := startGateway(t, gatewayOpts{hashContent: ptr(c.content()), configure: func(cfg *Config) {
				cfg.MaxQueuedPrompts = 1
				cfg.Upstream = notComfy.URL
			}})
			return g.do(t, "GET", "/queue", nil, "Authorization: Bearer alice:"+c.alice)
		}},
		{"own prompts too large", 403, middleware.CodeOwnPromptsTooLarge, func(t *testing.T) *http.Response {
			defer func(n int) { ownViewBytes = n }(ownViewBytes)
			ownViewBytes = 1 << 10
			c := startClass(t, func(cfg *Config) { cfg.MaxQueuedPrompts = 5 })
			c.post(t, "/prompt", hugePrompt("A", 2<<10), c.alice)
			return c.do(t, "GET", "/queue", nil, c.alice)
		}},
		{"prompt id taken", 409, middleware.CodePromptIDTaken, func(t *testing.T) *http.Response {
			c := startClass(t, func(cfg *Config) { cfg.MaxQueuedPrompts = 5 })
			id := c.queue(t, c.alice, "A")
			return c.do(t, "POST", "/prompt", []byte(`{"prompt":{},"prompt_id":"`+id+`"}`), c.bob, "Content-Type: application/json")
		}},
		{"not your output", 404, middleware.CodeNotYourOutput, func(t *testing.T) *http.Response {
			c := startClass(t, func(cfg *Config) { cfg.ComfyMultiUser = true })
			id := c.queue(t, c.alice, "A")
			c.runAll(t, id)
			return c.do(t, "GET", "/view?"+c.outputsOf(t, id)[0].query(), nil, c.bob)
		}},
		{"not your file", 403, middleware.CodeNotYourFile, func(t *testing.T) *http.Response {
			c := startClass(t, func(cfg *Config) { cfg.ComfyMultiUser = true })
			return c.do(t, "POST", "/prompt", []byte(`{"prompt":{"1":{"class_type":"LoadImage","inputs":{"image":"../output/ComfyUI_00001_.png"}}}}`),
				c.bob, "Content-Type: application/json")
		}},
		{"user registry", 502, middleware.CodeUserRegistry, func(t *testing.T) *http.Response {
			g := startGateway(t, gatewayOpts{hashContent: ptr(lowCostHash(t, muToken)), configure: func(c *Config) { c.ComfyMultiUser = true }})
			return g.do(t, "GET", "/settings", nil, bearer)
		}},
		{"users managed", 403, middleware.CodeUsersManaged, func(t *testing.T) *http.Response {
			return multiUserGateway(t, nil, nil).do(t, "POST", "/users", []byte(`{"username":"x"}`), bearer)
		}},
		{"too many connections", 503, middleware.CodeTooManyConnections, func(t *testing.T) *http.Response {
			g := startGateway(t, gatewayOpts{configure: func(c *Config) {
				c.MaxConns = 1
				c.MaxConnsPerClient = 1
				c.ReadHeaderTimeout = time.Minute
			}})
			holdConn(t, g, "127.0.0.1")
			eventually(t, 10*time.Second, "the one connection is held", func() bool { return g.Server.conns.Open() == 1 })
			return rawExchange(t, g, "GET /queue HTTP/1.1\r\nHost: gw\r\n\r\n")
		}},
	}
	seen := map[middleware.RefusalCode]bool{}
	ran := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ran++
			resp := tt.send(t)
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			got := refusalCode(t, resp.Header.Get("Content-Type"), body)
			if resp.StatusCode != tt.status || got != tt.code {
				t.Fatalf("%d with code %q, want %d with %q:\n%s", resp.StatusCode, got, tt.status, tt.code, body)
			}
			seen[tt.code] = true
		})
	}
	// Codes with no case here must say why in untested.
	untested := map[middleware.RefusalCode]string{
		middleware.CodeGuestUnchecked: "needs ComfyUI to send a guest an answer that is not JSON: TestGuestAnswerThatCannotBeCheckedIsRefusedWithItsCode",
	}
	for _, c := range middleware.RefusalCodes {
		if ran == len(tests) && !seen[c] && untested[c] == "" && !t.Failed() {
			t.Errorf("code %s is provoked by no case", c)
		}
	}
}

// TestAccessLogNamesTheRefusalCode: the access log line of a refusal says
// its code, so an operator can count causes without parsing sentences; the
// token refused is not in it.
func TestAccessLogNamesTheRefusalCode(t *testing.T) {
	g := startGateway(t, gatewayOpts{hashContent: ptr(lowCostHash(t, "codes-right"))})
	wrong := "log-code-wrong-token"
	rememberSecret(wrong)
	resp := g.do(t, "GET", "/queue", nil, "Authorization: Bearer "+wrong)
	resp.Body.Close()
	eventually(t, 10*time.Second, "the refusal is logged with its code", func() bool {
		return strings.Contains(g.Logs.String(), `"code":"wrong_token"`)
	})
	if strings.Contains(g.Logs.String(), wrong) {
		t.Fatal("the log holds the refused token")
	}
}
