package middleware

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestQueueShareAnswersWithoutPassingOn: what the middleware does on its
// own, with a Queue that says whatever the case needs.
func TestQueueShareAnswersWithoutPassingOn(t *testing.T) {
	key := []byte("k")
	mine, _ := TagPrompt([]byte(`{"prompt":{},"prompt_id":"p1"}`), key, "alice")
	var m map[string]json.RawMessage
	_ = json.Unmarshal(mine, &m)
	oneOfAlice := `{"queue_running":[],"queue_pending":[[1,"p1",{},` + string(m["extra_data"]) + `,[]]]}`
	tests := []struct {
		name, method, path, user, body, queue string
		queueErr                              error
		want                                  int
		passed                                bool
	}{
		{"other paths pass untouched", "POST", "/queue", "alice", `x`, oneOfAlice, nil, 200, true},
		{"GET /prompt passes", "GET", "/prompt", "alice", ``, oneOfAlice, nil, 200, true},
		{"at the share", "POST", "/prompt", "alice", `{}`, oneOfAlice, nil, 429, false},
		{"lower-case method counts too", "post", "/api/prompt", "alice", `{}`, oneOfAlice, nil, 429, false},
		{"another user", "POST", "/prompt", "bob", `{}`, oneOfAlice, nil, 200, true},
		{"queue unreadable", "POST", "/prompt", "bob", `{}`, ``, errors.New("down"), 502, false},
		{"not a queue", "POST", "/prompt", "bob", `{}`, `{"x":1}`, nil, 502, false},
		{"not JSON", "POST", "/prompt", "bob", `{`, oneOfAlice, nil, 400, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			passed := false
			next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { passed = true })
			h := QueueShare(QueueShareOptions{Max: 1, Key: key,
				Queue: func(context.Context) (io.ReadCloser, error) {
					return io.NopCloser(strings.NewReader(tt.queue)), tt.queueErr
				},
				QueueFailed: func(w http.ResponseWriter, r *http.Request, err error) {
					Refuse(w, r, http.StatusBadGateway, CodeQueueUnchecked, "x", err.Error())
				},
			})(next)
			r := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
			r = r.WithContext(WithInfo(r.Context(), &Info{User: tt.user}))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != tt.want || passed != tt.passed {
				t.Fatalf("%d passed=%v, want %d passed=%v: %s", rec.Code, passed, tt.want, tt.passed, rec.Body)
			}
		})
	}
}

// TestUserLockGivesUpWhenTheClientLeaves: a prompt waiting for its user's
// turn stops waiting when its request ends.
func TestUserLockGivesUpWhenTheClientLeaves(t *testing.T) {
	l := &userLocks{held: map[string]*userLock{}}
	unlock, ok := l.lock(context.Background(), "a")
	if !ok {
		t.Fatal("first lock")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, ok := l.lock(ctx, "a"); ok {
		t.Fatal("a second holder while the first holds")
	}
	if _, ok := l.lock(context.Background(), "b"); !ok {
		t.Fatal("another user waits on the first")
	}
	unlock()
	if len(l.held) != 1 {
		t.Fatalf("locks kept: %v", l.held)
	}
}

// FuzzTagPrompt: whatever the body, a tagged prompt is a JSON object whose
// extra_data (as ComfyUI reads it: the last of duplicate keys) carries the
// user's tag for the prompt_id ComfyUI will use, and counts once for that
// user; anything else is refused.
func FuzzTagPrompt(f *testing.F) {
	f.Add([]byte(`{"prompt":{"1":{"class_type":"X"}},"client_id":"c"}`), "alice")
	f.Add([]byte(`{"prompt":{},"prompt_id":5,"extra_data":{"comfyui_auth":{"user":"bob","mac":"x"},"comfyui_auth":1}}`), "guest")
	f.Add([]byte(`{"extra_data":null,"extra_data":{"a":1},"prompt_id":"a","prompt_id":"b"}`), "default")
	f.Add([]byte(`{"prompt":{},"front":true,"number":-1e308,"front":1}`), "alice")
	key := []byte("fuzz key")
	f.Fuzz(func(t *testing.T, body []byte, user string) {
		if strings.ContainsRune(user, 0) || !utf8.ValidString(user) {
			return // names are 1-64 of [A-Za-z0-9_.-], "default" or "guest"
		}
		out, err := TagPrompt(body, key, user)
		if err != nil {
			return
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("tagged %q is not JSON: %v", out, err)
		}
		if _, front := m["front"]; user != "" && user != UserDefault && (front || m["number"] != nil) {
			t.Fatalf("user %q keeps front or number: %s", user, out)
		}
		var id string
		if err := json.Unmarshal(m["prompt_id"], &id); err != nil || id == "" {
			t.Fatalf("prompt_id %s", m["prompt_id"])
		}
		queue := `{"queue_running":[[0,` + string(m["prompt_id"]) + `,{},` + string(m["extra_data"]) + `,[]]],"queue_pending":[]}`
		counts, err := CountQueued(strings.NewReader(queue), key)
		if err != nil || counts[user] != 1 || len(counts) != 1 {
			t.Fatalf("counts %v, %v for %s", counts, err, queue)
		}
	})
}

// FuzzCountQueued: any answer is read without panicking, and counts only
// tags that verify.
func FuzzCountQueued(f *testing.F) {
	f.Add([]byte(`{"queue_running":[],"queue_pending":[]}`))
	f.Add([]byte(`{"queue_running":[[1,"p",{},{"comfyui_auth":{"user":"a","mac":"00"}},[]]],"queue_pending":[[1]]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		counts, err := CountQueued(bytes.NewReader(raw), []byte("fuzz key"))
		if err == nil && len(counts) > 0 {
			t.Fatalf("counted unverifiable tags: %v", counts)
		}
	})
}

// BenchmarkCountQueued: a classroom's queue, 60 prompts of about 100 KB
// each (6 MB, the workflow layout included), counted once per POST /prompt.
func BenchmarkCountQueued(b *testing.B) {
	key := []byte("k")
	raw := classroomQueue(b, key)
	b.SetBytes(int64(len(raw)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := CountQueued(bytes.NewReader(raw), key); err != nil {
			b.Fatal(err)
		}
	}
}

// classroomQueue is ComfyUI's GET /queue answer for a classroom: 60 prompts
// of about 100 KB each (6 MB), tagged for 26 users, one running.
func classroomQueue(b *testing.B, key []byte) []byte {
	b.Helper()
	big := `{"prompt":{"1":{"class_type":"X","inputs":{"text":"` + strings.Repeat("x", 100<<10) + `"}}}}`
	var items []string
	for i := 0; i < 60; i++ {
		out, err := TagPrompt([]byte(big), key, "user"+string(rune('a'+i%26)))
		if err != nil {
			b.Fatal(err)
		}
		var m map[string]json.RawMessage
		_ = json.Unmarshal(out, &m)
		items = append(items, `[1,`+string(m["prompt_id"])+`,`+string(m["prompt"])+`,`+string(m["extra_data"])+`,["1"]]`)
	}
	return []byte(`{"queue_running":[` + items[0] + `],"queue_pending":[` + strings.Join(items[1:], ",") + `]}`)
}
