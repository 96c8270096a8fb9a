package server

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/middleware"
)

// requestLog returns the access log line of the request whose answer
// carried id in X-Request-Id, nil when it was not logged.
func requestLog(t *testing.T, g *gateway, id string) map[string]any {
	t.Helper()
	for _, s := range strings.Split(strings.TrimSpace(g.Logs.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(s), &m) == nil && m["message"] == "request" && m["request_id"] == id {
			return m
		}
	}
	return nil
}

// loggedUser is the "user" field of the access log line of resp's request.
func loggedUser(t *testing.T, g *gateway, resp *http.Response) string {
	t.Helper()
	line := requestLog(t, g, resp.Header.Get("X-Request-Id"))
	if line == nil {
		t.Fatalf("no access log line for request %s", resp.Header.Get("X-Request-Id"))
	}
	u, _ := line["user"].(string)
	return u
}

func basic(name, secret string) string {
	v := base64.StdEncoding.EncodeToString([]byte(name + ":" + secret))
	rememberSecret(v)
	return "Authorization: Basic " + v
}

// classFile is a credential file of two named users and a bare line.
type classFile struct {
	alice, bob, bare             string // the secrets
	aliceHash, bobHash, bareHash string
}

func newClassFile(t *testing.T) classFile {
	c := classFile{alice: "alice-secret-0123456789abcdefghij", bob: "bob-secret-0123456789abcdefghijk", bare: "bare-secret-0123456789abcdefghij"}
	c.aliceHash, c.bobHash, c.bareHash = lowCostHash(t, c.alice), lowCostHash(t, c.bob), lowCostHash(t, c.bare)
	return c
}

func (c classFile) content() string {
	return "alice:" + c.aliceHash + "\nbob:" + c.bobHash + "\n" + c.bareHash + "\n"
}

// TestEveryCredentialFormNamesItsUser: through the real server, each way a
// client can present a named or bare credential lets the right user in
// (the access log's "user" says who) and nothing else; ComfyUI never sees
// the credential (no Authorization header, no token parameter); a named
// user's hash is no token; and no secret reaches the log.
func TestEveryCredentialFormNamesItsUser(t *testing.T) {
	c := newClassFile(t)
	g := startGateway(t, gatewayOpts{hashContent: ptr(c.content()), configure: func(cfg *Config) { cfg.MaxLoginAttempts = 0 }})
	q := func(tok string) string { return "/system_stats?token=" + url.QueryEscape(tok) + "&keep=1" }
	tests := []struct {
		name    string
		path    string
		headers []string
		status  int
		user    string
		code    middleware.RefusalCode
	}{
		{"Bearer name:secret", "/system_stats", []string{"Authorization: Bearer alice:" + c.alice}, 200, "alice", ""},
		{"Basic name:secret", "/system_stats", []string{basic("alice", c.alice)}, 200, "alice", ""},
		{"lower-case basic", "/system_stats", []string{strings.Replace(basic("bob", c.bob), "Basic", "basic", 1)}, 200, "bob", ""},
		{"query name:secret", q("bob:" + c.bob), nil, 200, "bob", ""},
		{"Bearer bare token", "/system_stats", []string{"Authorization: Bearer " + c.bare}, 200, middleware.UserDefault, ""},
		{"Basic with a decorative name, bare secret", "/system_stats", []string{basic("comfy-sdk", c.bare)}, 200, middleware.UserDefault, ""},
		{"Basic with an empty name, bare secret", "/system_stats", []string{basic("", c.bare)}, 200, middleware.UserDefault, ""},
		{"bare line's hash as token", "/system_stats", []string{"Authorization: Bearer " + c.bareHash}, 200, middleware.UserDefault, ""},
		{"right user, wrong secret", "/system_stats", []string{"Authorization: Bearer alice:" + c.bob}, 401, "", middleware.CodeWrongToken},
		{"wrong user, right secret", "/system_stats", []string{"Authorization: Bearer bob:" + c.alice}, 401, "", middleware.CodeWrongToken},
		{"unknown user", "/system_stats", []string{"Authorization: Bearer carol:" + c.alice}, 401, "", middleware.CodeWrongToken},
		{"unknown user by Basic", "/system_stats", []string{basic("carol", c.alice)}, 401, "", middleware.CodeWrongToken},
		{"Basic right user, wrong secret", "/system_stats", []string{basic("alice", c.bob)}, 401, "", middleware.CodeWrongToken},
		{"query wrong user", q("bob:" + c.alice), nil, 401, "", middleware.CodeWrongToken},
		{"a named user's secret alone", "/system_stats", []string{"Authorization: Bearer " + c.alice}, 401, "", middleware.CodeWrongToken},
		{"a named user's hash as token", "/system_stats", []string{"Authorization: Bearer " + c.aliceHash}, 401, "", middleware.CodeWrongToken},
		{"a named user's hash under its name", "/system_stats", []string{"Authorization: Bearer alice:" + c.aliceHash}, 401, "", middleware.CodeWrongToken},
		{"a named user's hash by Basic", "/system_stats", []string{basic("alice", c.aliceHash)}, 401, "", middleware.CodeWrongToken},
		{"Basic not base64", "/system_stats", []string{"Authorization: Basic %%%"}, 401, "", middleware.CodeMalformedHeader},
		{"Basic without a colon", "/system_stats", []string{"Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("alice"))}, 401, "", middleware.CodeMalformedHeader},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := g.do(t, "GET", tc.path, nil, tc.headers...)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.status != 200 {
				var ref map[string]string
				if err := json.Unmarshal(body, &ref); err != nil || ref["code"] != string(tc.code) {
					t.Fatalf("refusal %s, want code %s", body, tc.code)
				}
				if tc.code == middleware.CodeMalformedHeader && !strings.Contains(ref["reason"], "Basic base64(name:secret)") {
					t.Fatalf("malformed Basic reason does not say the expected form: %q", ref["reason"])
				}
				return
			}
			if got := loggedUser(t, g, resp); got != tc.user {
				t.Fatalf("access log user %q, want %q", got, tc.user)
			}
			rec, ok := g.Fake.LastRequest("/system_stats")
			if !ok {
				t.Fatal("ComfyUI saw no request")
			}
			if a := rec.Header.Get("Authorization"); a != "" {
				t.Fatalf("ComfyUI saw Authorization %q", a)
			}
			if strings.Contains(rec.RawQuery, "token") || tc.path != "/system_stats" && rec.RawQuery != "keep=1" {
				t.Fatalf("ComfyUI saw query %q", rec.RawQuery)
			}
		})
	}
	logs := g.Logs.String()
	for _, s := range []string{c.alice, c.bob, c.bare, c.aliceHash, c.bobHash, c.bareHash} {
		if strings.Contains(logs, s) {
			t.Fatalf("a secret reached the log: %.10s...", s)
		}
	}
}

// TestLoginFormUsernameChoosesTheUser: through the real server, a username
// that names a user checks `username:password` against that user's lines;
// any other username is ComfyUI-Login's decoration and the password alone
// is checked against the bare lines. The session carries its user.
func TestLoginFormUsernameChoosesTheUser(t *testing.T) {
	c := newClassFile(t)
	g := startGateway(t, gatewayOpts{hashContent: ptr(c.content()), configure: func(cfg *Config) { cfg.MaxLoginAttempts = 0 }})
	tests := []struct {
		name, username, password string
		user                     string // "" when the login must fail
	}{
		{"named user", "alice", c.alice, "alice"},
		{"another named user", "bob", c.bob, "bob"},
		{"display name, bare password", "admin", c.bare, middleware.UserDefault},
		{"no username, bare password", "", c.bare, middleware.UserDefault},
		{"right user, wrong password", "alice", c.bob, ""},
		{"wrong user, right password", "bob", c.alice, ""},
		{"named user, bare password", "alice", c.bare, ""},
		{"unknown user, a named user's password", "carol", c.alice, ""},
		{"no username, a named user's password alone", "", c.alice, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := g.do(t, "POST", "/login", form(url.Values{"username": {tc.username}, "password": {tc.password}}), formType)
			var cookie string
			for _, ck := range resp.Cookies() {
				if ck.Name == middleware.SessionCookie && ck.Value != "" {
					rememberSecret(ck.Value)
					cookie = ck.Name + "=" + ck.Value
				}
			}
			if tc.user == "" {
				if cookie != "" || !strings.Contains(resp.Header.Get("Location"), "wrong_password=1") {
					t.Fatalf("login let in (cookie %v), Location %q", cookie != "", resp.Header.Get("Location"))
				}
				return
			}
			if cookie == "" {
				t.Fatalf("login refused: %d %s", resp.StatusCode, resp.Header.Get("Location"))
			}
			if got := loggedUser(t, g, resp); got != tc.user {
				t.Fatalf("login logged user %q, want %q", got, tc.user)
			}
			next := g.do(t, "GET", "/system_stats", nil, "Cookie: "+cookie)
			if next.StatusCode != 200 || loggedUser(t, g, next) != tc.user {
				t.Fatalf("session: %d, user %q, want 200 %q", next.StatusCode, loggedUser(t, g, next), tc.user)
			}
		})
	}
}

// TestRemovingAUsersLinesEndsOnlyTheirSessions: through the real server,
// sessions of alice, bob and the bare user; alice's line is removed from
// the file; within the reload, alice's session is refused and the others
// go on, each still as its own user. A Basic header a proxy in front adds
// does not block a session.
func TestRemovingAUsersLinesEndsOnlyTheirSessions(t *testing.T) {
	c := newClassFile(t)
	g := startGateway(t, gatewayOpts{hashContent: ptr(c.content()), configure: func(cfg *Config) { cfg.PollInterval = 50 * time.Millisecond }})
	cookies := map[string]string{}
	for user, pw := range map[string][2]string{"alice": {"alice", c.alice}, "bob": {"bob", c.bob}, middleware.UserDefault: {"", c.bare}} {
		resp := g.do(t, "POST", "/login", form(url.Values{"username": {pw[0]}, "password": {pw[1]}}), formType)
		for _, ck := range resp.Cookies() {
			if ck.Name == middleware.SessionCookie && ck.Value != "" {
				rememberSecret(ck.Value)
				cookies[user] = ck.Name + "=" + ck.Value
			}
		}
		if cookies[user] == "" {
			t.Fatalf("%s could not log in: %d", user, resp.StatusCode)
		}
	}
	check := func(user string, want int) {
		t.Helper()
		resp := g.do(t, "GET", "/system_stats", nil, "Cookie: "+cookies[user], "Accept: application/json", basic("front-proxy", "its-own-password"))
		if resp.StatusCode != want {
			t.Fatalf("%s's session: %d, want %d", user, resp.StatusCode, want)
		}
		if want == 200 && loggedUser(t, g, resp) != user {
			t.Fatalf("%s's session logged as %q", user, loggedUser(t, g, resp))
		}
	}
	for user := range cookies {
		check(user, 200)
	}
	gen := g.Server.Store().Snapshot().Generation
	must(t, writeFile(g.HashFile, "bob:"+c.bobHash+"\n"+c.bareHash+"\n"))
	eventually(t, 5*time.Second, "the file without alice is loaded", func() bool { return g.Server.Store().Snapshot().Generation > gen })
	// The Basic header is checked once the session is refused.
	check("alice", 401)
	check("bob", 200)
	check(middleware.UserDefault, 200)
}

// TestClientIsResolvedOnce: through the real server, the session cookie's
// Secure flag, the X-Forwarded-Proto and X-Forwarded-For ComfyUI receives,
// the access log's client and the warning about an ignored
// X-Forwarded-Proto all come from one resolution of the client, so they
// agree: a trusted proxy's https is https to ComfyUI too, and a trusted
// proxy's last hop saying http is neither Secure nor "ignored".
func TestClientIsResolvedOnce(t *testing.T) {
	tests := []struct {
		name       string
		trusted    string
		proto, xff string
		secure     bool
		upProto    string // what ComfyUI receives
		upFor      string
		warned     bool
	}{
		{"trusted proxy says https", "127.0.0.0/8", "https", "198.51.100.7", true, "https", "198.51.100.7", false},
		{"trusted proxy's last hop says http", "127.0.0.0/8", "https, http", "198.51.100.7", false, "http", "198.51.100.7", false},
		{"untrusted peer says https", "10.0.0.0/8", "https", "198.51.100.7", false, "http", "127.0.0.1", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := startLoginGateway(t, func(c *Config) { c.TrustedProxies = tc.trusted })
			hdr := []string{"X-Forwarded-Proto: " + tc.proto, "X-Forwarded-For: " + tc.xff}
			resp := g.do(t, "POST", "/login", form(url.Values{"password": {testPassword}}), append(hdr, formType)...)
			ck := sessionCookie(t, resp)
			if ck.Secure != tc.secure {
				t.Errorf("Secure = %v, want %v", ck.Secure, tc.secure)
			}
			next := g.do(t, "GET", "/system_stats", nil, append(hdr, "Cookie: "+ck.Name+"="+ck.Value)...)
			if next.StatusCode != 200 {
				t.Fatalf("session request: %d", next.StatusCode)
			}
			rec, _ := g.Fake.LastRequest("/system_stats")
			if p, f := rec.Header.Get("X-Forwarded-Proto"), rec.Header.Get("X-Forwarded-For"); p != tc.upProto || f != tc.upFor {
				t.Errorf("ComfyUI got X-Forwarded-Proto %q, X-Forwarded-For %q; want %q, %q", p, f, tc.upProto, tc.upFor)
			}
			if line := requestLog(t, g, next.Header.Get("X-Request-Id")); line == nil || line["client"] != tc.upFor {
				t.Errorf("access log client %v, want %s", line["client"], tc.upFor)
			}
			if warned := strings.Contains(g.Logs.String(), "ignoring X-Forwarded-Proto"); warned != tc.warned {
				t.Errorf("warned about an ignored X-Forwarded-Proto: %v, want %v", warned, tc.warned)
			}
		})
	}
}

// TestUserMetricsAreCapped: through the real server, requests are counted
// per user for the first 64 named users; later names share user="other",
// and default keeps its own series whatever the count.
func TestUserMetricsAreCapped(t *testing.T) {
	const n = maxUserSeries + 3
	var file strings.Builder
	secrets := make([]string, n)
	for i := range n {
		secrets[i] = fmt.Sprintf("metrics-user-secret-%02d-0123456789", i)
		fmt.Fprintf(&file, "u%02d:%s\n", i, lowCostHash(t, secrets[i]))
	}
	bare := "metrics-bare-secret-0123456789abc"
	file.WriteString(lowCostHash(t, bare) + "\n")
	g := startGateway(t, gatewayOpts{hashContent: ptr(file.String()), configure: func(c *Config) { c.MetricsListen = "127.0.0.1:0" }})
	for i := range n {
		for range 2 {
			if s := g.do(t, "GET", "/system_stats", nil, fmt.Sprintf("Authorization: Bearer u%02d:%s", i, secrets[i])).StatusCode; s != 200 {
				t.Fatalf("u%02d: %d", i, s)
			}
		}
	}
	g.do(t, "GET", "/system_stats", nil, "Authorization: Bearer "+bare)
	page := scrape(t, g)
	series := 0
	for _, l := range strings.Split(page, "\n") {
		if strings.HasPrefix(l, "comfyui_auth_user_requests_total{") {
			series++
		}
	}
	if series != maxUserSeries+2 {
		t.Errorf("%d user series, want %d (64 named, other, default)", series, maxUserSeries+2)
	}
	for _, want := range []string{
		`comfyui_auth_user_requests_total{user="u00"} 2`,
		fmt.Sprintf(`comfyui_auth_user_requests_total{user="u%02d"} 2`, maxUserSeries-1),
		`comfyui_auth_user_requests_total{user="other"} 6`,
		`comfyui_auth_user_requests_total{user="default"} 1`,
	} {
		if !strings.Contains(page, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(page, fmt.Sprintf(`user="u%02d"`, maxUserSeries)) {
		t.Errorf("a user past the cap has a series of its own")
	}
}

// TestLoginPageSaysTheUsernameMattersWithNamedUsers: with named users the
// username field is no longer "optional" on the login page.
func TestLoginPageSaysTheUsernameMattersWithNamedUsers(t *testing.T) {
	for _, tc := range []struct {
		name, content, want string
	}{
		{"bare lines only", lowCostHash(t, "page-bare-secret-0123456789") + "\n", "(optional)"},
		{"named users", newClassFile(t).content(), "(the name you were given"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := startGateway(t, gatewayOpts{hashContent: ptr(tc.content)})
			body, _ := io.ReadAll(g.do(t, "GET", "/login", nil).Body)
			if !strings.Contains(string(body), tc.want) {
				t.Fatalf("login page lacks %q", tc.want)
			}
		})
	}
}
