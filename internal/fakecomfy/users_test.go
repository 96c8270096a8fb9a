package fakecomfy_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
)

// TestMultiUserRegistryFollowsUserManager: --multi-user's GET /users lists
// the registry in users.json order, POST /users makes `<name>_<uuid>` ids
// and refuses a display name twice, and comfy-user picks the directory;
// an unknown id is 500 on /userdata and 401 on /settings, as in ComfyUI.
func TestMultiUserRegistryFollowsUserManager(t *testing.T) {
	fake, ts := fakecomfy.Start(t, fakecomfy.Options{MultiUser: true,
		Users: []fakecomfy.User{{ID: "zed_1", Name: "zed"}, {ID: "amy_2", Name: "amy"}}})

	st, _, body := do(t, "GET", ts.URL+"/api/users", "", nil, nil)
	if want := `{"storage": "server", "users": {"zed_1": "zed", "amy_2": "amy"}}`; st != 200 || string(body) != want {
		t.Fatalf("GET /users: %d %s, want %s", st, body, want)
	}
	st, _, body = do(t, "POST", ts.URL+"/users", "", nil, strings.NewReader(`{"username": "Bob Smith!"}`))
	var id string
	if st != 200 || json.Unmarshal(body, &id) != nil || !regexp.MustCompile(`^Bob-Smith-_[0-9a-f-]{36}$`).MatchString(id) {
		t.Fatalf("POST /users: %d %s", st, body)
	}
	st, _, body = do(t, "POST", ts.URL+"/users", "", nil, strings.NewReader(`{"username": "amy"}`))
	if st != 400 || !strings.Contains(string(body), "Duplicate username.") {
		t.Fatalf("duplicate: %d %s", st, body)
	}
	if st, _, _ = do(t, "POST", ts.URL+"/users", "", nil, strings.NewReader(`{}`)); st != 500 {
		t.Fatalf("no username: %d, want 500 (KeyError)", st)
	}

	as := func(user string) http.Header {
		if user == "" {
			return nil
		}
		return http.Header{"Comfy-User": {user}}
	}
	if st, _, _ = do(t, "POST", ts.URL+"/userdata/workflows%2Fa.json", "", as(id), strings.NewReader("bob's")); st != 200 {
		t.Fatalf("bob saves: %d", st)
	}
	if st, _, _ = do(t, "POST", ts.URL+"/userdata/workflows%2Fa.json", "", as("amy_2"), strings.NewReader("amy's")); st != 200 {
		t.Fatalf("amy saves: %d", st)
	}
	if b, _ := fake.UserDataOf(id, "workflows/a.json"); string(b) != "bob's" {
		t.Errorf("bob's file holds %q", b)
	}
	if b, _ := fake.UserDataOf("amy_2", "workflows/a.json"); string(b) != "amy's" {
		t.Errorf("amy's file holds %q", b)
	}
	for _, tt := range []struct {
		user, path string
		want       int
	}{
		{"", "/userdata?dir=workflows", 500}, // "default" is not in users.json
		{"nobody", "/userdata/workflows%2Fa.json", 500},
		{"nobody", "/settings", 401},
		{"amy_2", "/settings", 200},
		{"amy_2", "/userdata?dir=workflows", 200},
	} {
		if st, _, _ := do(t, "GET", ts.URL+tt.path, "", as(tt.user), nil); st != tt.want {
			t.Errorf("GET %s as %q: %d, want %d", tt.path, tt.user, st, tt.want)
		}
	}

	fake.ForgetUsers()
	if st, _, _ := do(t, "GET", ts.URL+"/settings", "", as("amy_2"), nil); st != 401 {
		t.Errorf("after users.json is lost amy is unknown: got %d", st)
	}
}

// TestSingleUserModeIgnoresComfyUser: without --multi-user every request is
// the default user's, whatever comfy-user says.
func TestSingleUserModeIgnoresComfyUser(t *testing.T) {
	fake, ts := fakecomfy.Start(t, fakecomfy.Options{})
	st, _, _ := do(t, "POST", ts.URL+"/userdata/a.json", "", http.Header{"Comfy-User": {"someone"}}, strings.NewReader("x"))
	if st != 200 {
		t.Fatalf("save: %d", st)
	}
	if b, ok := fake.UserData("a.json"); !ok || string(b) != "x" {
		t.Fatal("the file did not land in the default user's directory")
	}
	if st, _, body := do(t, "GET", ts.URL+"/users", "", nil, nil); st != 200 || !strings.Contains(string(body), `"migrated":true`) {
		t.Fatalf("GET /users: %d %s", st, body)
	}
}

// TestHeldQueueMovesOnlyWhenAdvanced: with HoldQueue, prompts wait in
// queue_pending, with their extra_data, until Advance runs them one by one.
func TestHeldQueueMovesOnlyWhenAdvanced(t *testing.T) {
	fake, ts := fakecomfy.Start(t, fakecomfy.Options{HoldQueue: true})
	var ids []string
	for i := 0; i < 2; i++ {
		st, m := postPrompt(t, ts, `{"prompt":{"1":{"class_type":"X","inputs":{}}},"extra_data":{"mark":"m"}}`)
		if st != 200 {
			t.Fatalf("prompt: %d", st)
		}
		ids = append(ids, m["prompt_id"].(string))
	}
	queue := func() (running, pending []string) {
		_, _, body := do(t, "GET", ts.URL+"/queue", "", nil, nil)
		var q map[string][][]json.RawMessage
		if err := json.Unmarshal(body, &q); err != nil {
			t.Fatal(err)
		}
		for key, dst := range map[string]*[]string{"queue_running": &running, "queue_pending": &pending} {
			for _, it := range q[key] {
				var id string
				_ = json.Unmarshal(it[1], &id)
				if !strings.Contains(string(it[3]), `"mark":"m"`) {
					t.Errorf("extra_data lost: %s", it[3])
				}
				*dst = append(*dst, id)
			}
		}
		return
	}
	if r, p := queue(); len(r) != 0 || len(p) != 2 {
		t.Fatalf("before Advance: running %v pending %v", r, p)
	}
	if got := fake.Advance(); got != ids[0] {
		t.Fatalf("Advance started %q, want %q", got, ids[0])
	}
	if r, p := queue(); len(r) != 1 || r[0] != ids[0] || len(p) != 1 {
		t.Fatalf("after one Advance: running %v pending %v", r, p)
	}
	fake.Advance()
	fake.Advance()
	if r, p := queue(); len(r) != 0 || len(p) != 0 || !fake.HasHistory(ids[0]) || !fake.HasHistory(ids[1]) {
		t.Fatalf("after three: running %v pending %v", r, p)
	}
}
