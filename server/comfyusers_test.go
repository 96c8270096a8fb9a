package server

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
	"github.com/comfyui-auth/comfyui-auth/middleware"
)

// multiUserGateway runs a gateway with --comfy-multi-user (and guests)
// before a --multi-user fake ComfyUI whose users.json holds users.
func multiUserGateway(t *testing.T, users []fakecomfy.User, configure func(*Config)) *gateway {
	t.Helper()
	content := lowCostHash(t, muToken)
	return startGateway(t, gatewayOpts{hashContent: &content,
		fake: fakecomfy.Options{MultiUser: true, Users: users},
		configure: func(c *Config) {
			c.ComfyMultiUser = true
			c.GuestMode = true
			if configure != nil {
				configure(c)
			}
		}})
}

// guestCookie logs in as a guest and returns the Cookie header line.
func guestCookie(t *testing.T, g *gateway) string {
	t.Helper()
	resp := g.do(t, "POST", "/login", form(map[string][]string{"guest_mode": {"1"}}), formType)
	for _, c := range resp.Cookies() {
		if c.Name == middleware.SessionCookie && c.Value != "" {
			rememberSecret(c.Value)
			return cookieHeader(c.Value)
		}
	}
	t.Fatal("no guest cookie")
	return ""
}

// registered returns the ids the fake's registry holds under name.
func registered(g *gateway, name string) []string {
	var ids []string
	for _, u := range g.Fake.Users() {
		if u.Name == name {
			ids = append(ids, u.ID)
		}
	}
	return ids
}

// sentComfyUser is the Comfy-User values ComfyUI received on the last
// request to path.
func sentComfyUser(t *testing.T, g *gateway, path string) []string {
	t.Helper()
	rec, ok := g.Fake.LastRequest(path)
	if !ok {
		t.Fatalf("ComfyUI received no %s", path)
	}
	for k := range rec.Header {
		if k != "Comfy-User" && strings.EqualFold(strings.ReplaceAll(k, "_", "-"), "comfy-user") {
			t.Errorf("ComfyUI received a client's %s header", k)
		}
	}
	return rec.Header["Comfy-User"]
}

// muToken is the bare user's raw token in these tests.
const muToken = "multi-user-test-token"

var bearer = "Authorization: Bearer " + muToken

// TestClientComfyUserIsReplacedByTheLogins: whatever Comfy-User a client
// sends, in any case, twice, or as Comfy_User, ComfyUI receives exactly
// one, the id of the user the gateway let in, and that user's files land
// in that user's directory. On a gateway without --comfy-multi-user the
// header is dropped and ComfyUI answers "Unknown user".
func TestClientComfyUserIsReplacedByTheLogins(t *testing.T) {
	g := multiUserGateway(t, []fakecomfy.User{{ID: "victim_1", Name: "victim"}}, nil)
	forged := []string{"Comfy-User: victim_1", "comfy-user: victim_1", "COMFY-USER: victim_1", "Comfy_User: victim_1"}
	resp := g.do(t, "POST", "/userdata/workflows%2Fmine.json", []byte("bare user's"), append(forged, bearer)...)
	if resp.StatusCode != 200 {
		t.Fatalf("save: %d %s", resp.StatusCode, readBody(t, resp))
	}
	ids := registered(g, middleware.UserDefault)
	if len(ids) != 1 {
		t.Fatalf("registry holds %v for %q, want one id", g.Fake.Users(), middleware.UserDefault)
	}
	if got := sentComfyUser(t, g, "/userdata/"); len(got) != 1 || got[0] != ids[0] {
		t.Fatalf("ComfyUI received Comfy-User %q, want [%s]", got, ids[0])
	}
	if b, ok := g.Fake.UserDataOf(ids[0], "workflows/mine.json"); !ok || string(b) != "bare user's" {
		t.Fatal("the file is not in the bare user's directory")
	}
	if _, ok := g.Fake.UserDataOf("victim_1", "workflows/mine.json"); ok {
		t.Fatal("the file landed in the directory the client named")
	}
}

// TestComfyUserRidesTheWebsocketToo: the websocket upgrade carries the
// login's Comfy-User like any request.
func TestComfyUserRidesTheWebsocketToo(t *testing.T) {
	g := multiUserGateway(t, nil, nil)
	conn, resp, err := dialWS(t, g, "/ws?clientId=c1", http.Header{
		"Origin": {g.URL}, "Authorization": {"Bearer " + muToken}, "Comfy-User": {"someone-else"}})
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	conn.Close()
	ids := registered(g, middleware.UserDefault)
	if got := sentComfyUser(t, g, "/ws"); len(ids) != 1 || len(got) != 1 || got[0] != ids[0] {
		t.Fatalf("websocket upgrade carried Comfy-User %q, registry %v", got, g.Fake.Users())
	}
}

// TestGuestsAndTheBareUserAreComfyUsersOfTheirOwn: guests are the ComfyUI
// user "guest", all of them together; bare hash lines are "default".
func TestGuestsAndTheBareUserAreComfyUsersOfTheirOwn(t *testing.T) {
	g := multiUserGateway(t, nil, nil)
	if resp := g.do(t, "GET", "/settings", nil, bearer); resp.StatusCode != 200 {
		t.Fatalf("bare user: %d", resp.StatusCode)
	}
	bare := sentComfyUser(t, g, "/settings")
	for i := 0; i < 2; i++ {
		cookie := guestCookie(t, g)
		if resp := g.do(t, "GET", "/api/object_info", nil, cookie, "Comfy-User: "+bare[0]); resp.StatusCode != 200 {
			t.Fatalf("guest: %d", resp.StatusCode)
		}
		guest := sentComfyUser(t, g, "/api/object_info")
		want := registered(g, middleware.UserGuest)
		if len(want) != 1 || len(guest) != 1 || guest[0] != want[0] || guest[0] == bare[0] {
			t.Fatalf("guest %d sent %q; registry %v", i, guest, g.Fake.Users())
		}
	}
}

// TestUsersShowsNoOtherUserAndCreatesNone: GET /users answers the
// single-user shape, so the frontend shows no user-selection screen and
// nobody learns the other users' names; POST /users is refused.
func TestUsersShowsNoOtherUserAndCreatesNone(t *testing.T) {
	g := multiUserGateway(t, []fakecomfy.User{{ID: "alice_1", Name: "alice"}, {ID: "bob_2", Name: "bob"}}, nil)
	for _, p := range []string{"/users", "/api/users"} {
		resp := g.do(t, "GET", p, nil, bearer)
		body := readBody(t, resp)
		var m map[string]any
		if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &m) != nil {
			t.Fatalf("GET %s: %d %s", p, resp.StatusCode, body)
		}
		if _, ok := m["users"]; ok || strings.Contains(body, "alice") || m["storage"] != "server" || m["migrated"] != true {
			t.Fatalf("GET %s shows %s", p, body)
		}
		resp = g.do(t, "POST", p, []byte(`{"username":"mallory"}`), bearer, "Content-Type: application/json")
		body = readBody(t, resp)
		if resp.StatusCode != 403 || !strings.Contains(body, `"code":"users_managed"`) {
			t.Fatalf("POST %s: %d %s", p, resp.StatusCode, body)
		}
	}
	if got := len(g.Fake.Users()); got != 2 {
		t.Fatalf("registry has %d users, want the 2 it started with: %v", got, g.Fake.Users())
	}
	if _, ok := g.Fake.LastRequest("/users"); ok {
		t.Fatal("a client's /users reached ComfyUI")
	}
}

// TestFirstRequestsTogetherRegisterOneUser: a user's first requests,
// arriving at once, create one registry entry, not one each.
func TestFirstRequestsTogetherRegisterOneUser(t *testing.T) {
	g := multiUserGateway(t, nil, nil)
	var wg sync.WaitGroup
	statuses := make(chan int, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", g.URL+"/settings", nil)
			req.Header.Set("Authorization", "Bearer "+muToken)
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(statuses)
	for st := range statuses {
		if st != 200 {
			t.Errorf("a first request got %d", st)
		}
	}
	if ids := registered(g, middleware.UserDefault); len(ids) != 1 {
		t.Fatalf("registry holds %d entries for the user: %v", len(ids), g.Fake.Users())
	}
}

// TestLostRegistryIsRepairedAfterUnknownUser: when ComfyUI restarts
// without users.json, the request that meets "Unknown user" makes the
// gateway read the registry again, and the next one registers the user
// anew.
func TestLostRegistryIsRepairedAfterUnknownUser(t *testing.T) {
	g := multiUserGateway(t, nil, nil)
	if resp := g.do(t, "GET", "/settings", nil, bearer); resp.StatusCode != 200 {
		t.Fatalf("first: %d", resp.StatusCode)
	}
	g.Fake.ForgetUsers()
	first := g.do(t, "GET", "/settings", nil, bearer)
	if first.StatusCode != 401 {
		t.Fatalf("ComfyUI's Unknown user: %d, want ComfyUI's 401 passed on", first.StatusCode)
	}
	if resp := g.do(t, "GET", "/settings", nil, bearer); resp.StatusCode != 200 {
		t.Fatalf("after Unknown user: %d, want the user registered again", resp.StatusCode)
	}
	if ids := registered(g, middleware.UserDefault); len(ids) != 1 {
		t.Fatalf("registry: %v", g.Fake.Users())
	}
}

// TestNoComfyUserMeansNoRequest: when the user cannot be registered,
// because ComfyUI is down or runs without --multi-user, the request is
// refused with a reason and never reaches ComfyUI without Comfy-User.
func TestNoComfyUserMeansNoRequest(t *testing.T) {
	t.Run("without --multi-user", func(t *testing.T) {
		content := lowCostHash(t, muToken)
		g := startGateway(t, gatewayOpts{hashContent: &content, configure: func(c *Config) { c.ComfyMultiUser = true }})
		resp := g.do(t, "GET", "/settings", nil, bearer)
		body := readBody(t, resp)
		if resp.StatusCode != 502 || !strings.Contains(body, `"code":"user_registry"`) || !strings.Contains(body, "--multi-user") {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		if _, ok := g.Fake.LastRequest("/settings"); ok {
			t.Fatal("the request reached ComfyUI without a Comfy-User")
		}
	})
	t.Run("ComfyUI down", func(t *testing.T) {
		content := lowCostHash(t, muToken)
		g := startGateway(t, gatewayOpts{hashContent: &content, configure: func(c *Config) {
			c.ComfyMultiUser = true
			c.Upstream = "http://" + closedAddr(t)
		}})
		resp := g.do(t, "GET", "/settings", nil, bearer)
		body := readBody(t, resp)
		if resp.StatusCode != 502 || !strings.Contains(body, `"code":"upstream_down"`) || !strings.Contains(body, "user registry") {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		resp = g.do(t, "GET", "/", nil, bearer, "Accept: text/html")
		if body := readBody(t, resp); resp.StatusCode != 502 || !strings.Contains(body, `http-equiv="refresh"`) {
			t.Fatalf("a browser got %d %s, want the page that retries", resp.StatusCode, body)
		}
	})
	t.Run("ComfyUI gone after the user was registered", func(t *testing.T) {
		g := multiUserGateway(t, nil, nil)
		if resp := g.do(t, "GET", "/settings", nil, bearer); resp.StatusCode != 200 {
			t.Fatalf("first: %d", resp.StatusCode)
		}
		g.Server.comfyUsers.forget()
		g.Upstream.Close()
		resp := g.do(t, "GET", "/settings", nil, bearer)
		body := readBody(t, resp)
		// The user keeps the id read before, and the proxy reports ComfyUI
		// down as for any request.
		if resp.StatusCode != 502 || !strings.Contains(body, `"code":"upstream_down"`) || strings.Contains(body, "user registry") {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
}

// TestWithoutMultiUserTheClientHeaderIsDropped: with --comfy-multi-user
// off the gateway still never forwards a client's Comfy-User.
func TestWithoutMultiUserTheClientHeaderIsDropped(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	g.do(t, "GET", "/settings", nil, "Authorization: Bearer "+seedToken, "Comfy-User: x", "Comfy_User: y")
	if got := sentComfyUser(t, g, "/settings"); len(got) != 0 {
		t.Fatalf("ComfyUI received Comfy-User %q", got)
	}
}

func TestParseComfyUsersKeepsTheFirstIDOfAName(t *testing.T) {
	tests := []struct {
		raw  string
		want map[string]string
		err  bool
	}{
		{`{"storage":"server","users":{"a_2":"a","a_1":"a","b_1":"b"}}`, map[string]string{"a": "a_2", "b": "b_1"}, false},
		{`{"users":{"bad id":"a","a_1":"a"}}`, map[string]string{"a": "a_1"}, false},
		{`{"users":{"../x":"a"}}`, map[string]string{}, false},
		{`{"storage":"server","migrated":true}`, nil, true},
		{`{"users":["a"]}`, nil, true},
		{`[]`, nil, true},
	}
	for _, tt := range tests {
		got, err := parseComfyUsers([]byte(tt.raw))
		if (err != nil) != tt.err {
			t.Errorf("%s: err %v", tt.raw, err)
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("%s: %v, want %v", tt.raw, got, tt.want)
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("%s: %v, want %v", tt.raw, got, tt.want)
			}
		}
	}
}

func FuzzParseComfyUsers(f *testing.F) {
	f.Add([]byte(`{"storage":"server","users":{"a_1":"a"}}`))
	f.Add([]byte(`{"storage":"server","migrated":true}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		ids, err := parseComfyUsers(raw)
		if err != nil {
			return
		}
		for _, id := range ids {
			if !sendableID(id) {
				t.Fatalf("unsendable id %q", id)
			}
		}
	})
}

// TestMultiUserSettingsAreChecked: --comfy-multi-user needs someone to be
// logged in, and a negative share is refused, each naming its field.
func TestMultiUserSettingsAreChecked(t *testing.T) {
	tests := []struct {
		field string
		set   func(*Config)
	}{
		{"ComfyMultiUser", func(c *Config) { c.ComfyMultiUser, c.AuthEnabled = true, false }},
		{"MaxQueuedPrompts", func(c *Config) { c.MaxQueuedPrompts = -1 }},
	}
	for _, tt := range tests {
		c := testConfig()
		c.HashFile = "/nonexistent"
		tt.set(&c)
		var fe *FieldError
		if err := c.Validate(); !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("%s: Validate = %v", tt.field, err)
		}
	}
	c := testConfig()
	c.HashFile, c.ComfyMultiUser, c.MaxQueuedPrompts = "/nonexistent", true, 3
	if err := c.Validate(); err != nil {
		t.Fatalf("a valid multi-user configuration: %v", err)
	}
}

// TestBareUserKeepsTheSingleUserDirectory: with "default": "default" in
// users.json, the bare lines' user is ComfyUI's user/default/, the
// directory of a single-user ComfyUI, and no new user is made.
func TestBareUserKeepsTheSingleUserDirectory(t *testing.T) {
	g := multiUserGateway(t, []fakecomfy.User{{ID: "default", Name: "default"}}, nil)
	if resp := g.do(t, "GET", "/settings", nil, bearer); resp.StatusCode != 200 {
		t.Fatalf("%d", resp.StatusCode)
	}
	if got := sentComfyUser(t, g, "/settings"); len(got) != 1 || got[0] != "default" {
		t.Fatalf("Comfy-User %q, want default", got)
	}
	if n := len(g.Fake.Users()); n != 1 {
		t.Fatalf("registry: %v", g.Fake.Users())
	}
}
