package middleware

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// taggedQueue is a GET /queue answer whose items are prompts tagged by
// TagPrompt for the given users (running first), plus one untagged item.
func taggedQueue(t testing.TB, key []byte, users ...string) (raw []byte, ids []string) {
	var items []string
	for _, u := range users {
		out, err := TagPrompt([]byte(`{"prompt":{"1":{"class_type":"Node_`+u+`"}}}`), key, u)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		_ = json.Unmarshal(out, &m)
		var id string
		_ = json.Unmarshal(m["prompt_id"], &id)
		ids = append(ids, id)
		items = append(items, `[`+string(rune('1'+len(items)))+`,`+string(m["prompt_id"])+`,`+string(m["prompt"])+`,`+string(m["extra_data"])+`,["1"]]`)
	}
	items = append(items, `[9,"untagged",{"1":{"class_type":"Node_untagged"}},{},["1"]]`)
	return []byte(`{"queue_running":[` + items[0] + `],"queue_pending":[` + strings.Join(items[1:], ",") + `]}`), ids
}

// TestOwnQueueViewShowsOnlyTheCallersItems: the caller's items pass
// whole; every other one, untagged included, keeps its number and place
// as an empty placeholder with an opaque id.
func TestOwnQueueViewShowsOnlyTheCallersItems(t *testing.T) {
	key := []byte("k")
	raw, ids := taggedQueue(t, key, "bob", "alice", "bob")
	out, err := queueViewOf(raw, key, "alice")
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if !strings.Contains(s, "Node_alice") || !strings.Contains(s, ids[1]) {
		t.Fatalf("alice's item is not shown: %s", s)
	}
	for _, secret := range []string{"Node_bob", "Node_untagged", ids[0], ids[2], "untagged", `"user":"bob"`} {
		if strings.Contains(s, secret) {
			t.Errorf("%q shown to alice: %s", secret, s)
		}
	}
	var q map[string][][]json.RawMessage
	if err := json.Unmarshal(out, &q); err != nil || len(q["queue_running"]) != 1 || len(q["queue_pending"]) != 3 {
		t.Fatalf("the queue's shape changed: %v %s", err, s)
	}
	if string(q["queue_pending"][2][0]) != "9" {
		t.Errorf("an item lost its number: %s", q["queue_pending"][2][0])
	}
}

// TestParseEditReadsClearAsPythonTruth: ComfyUI tests `clear` with
// Python's truth and compares `delete`'s items with prompt ids.
func TestParseEditReadsClearAsPythonTruth(t *testing.T) {
	tests := []struct {
		body   string
		clear  bool
		delete []string
		err    bool
	}{
		{`{"clear":true}`, true, nil, false},
		{`{"clear":1}`, true, nil, false},
		{`{"clear":"no"}`, true, nil, false},
		{`{"clear":0}`, false, nil, false},
		{`{"clear":""}`, false, nil, false},
		{`{"clear":null,"delete":["a",2,"b"]}`, false, []string{"a", "b"}, false},
		{`{"delete":"a"}`, false, nil, true},
		{`[]`, false, nil, true},
		{`{"clear":true} x`, false, nil, true},
	}
	for _, tt := range tests {
		e, err := ParseEdit([]byte(tt.body))
		if (err != nil) != tt.err || err == nil && (e.Clear != tt.clear || !slices.Equal(e.Delete, tt.delete)) {
			t.Errorf("%s: %+v %v", tt.body, e, err)
		}
	}
}

// FuzzOwnQueueView: whatever ComfyUI answers, a caller whose key nobody
// knows sees no item's details: every item is a placeholder.
func FuzzOwnQueueView(f *testing.F) {
	raw, _ := taggedQueue(f, []byte("another key"), "alice", "bob")
	f.Add(raw)
	f.Add([]byte(`{"queue_running":[],"queue_pending":[[1],[],[1,2,3,4,5,6]]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		out, err := queueViewOf(raw, []byte("fuzz key"), "alice")
		if err != nil {
			return
		}
		var q map[string]json.RawMessage
		if err := json.Unmarshal(out, &q); err != nil {
			t.Fatalf("not JSON: %v: %s", err, out)
		}
		for _, k := range []string{"queue_running", "queue_pending"} {
			var items [][]json.RawMessage
			if err := json.Unmarshal(q[k], &items); err != nil {
				t.Fatalf("%s: %v", k, err)
			}
			for _, it := range items {
				var id string
				if len(it) != 5 || json.Unmarshal(it[1], &id) != nil || !strings.HasPrefix(id, "hidden-") ||
					string(it[2]) != "{}" || string(it[3]) != "{}" || string(it[4]) != "[]" {
					t.Fatalf("item shown: %s", out)
				}
			}
		}
	})
}

// FuzzOwnHistoryView: whatever ComfyUI answers, no entry is shown to a
// caller whose prompts' key nobody knows.
func FuzzOwnHistoryView(f *testing.F) {
	f.Add([]byte(`{"p":{"prompt":[1,"p",{},{"comfyui_auth":{"user":"alice","mac":"00"}},[]],"outputs":{}}}`))
	f.Add([]byte(`{"p":{"prompt":[]},"q":1}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		out, err := historyViewOf(raw, []byte("fuzz key"), "alice")
		if err == nil && string(out) != "{}" {
			t.Fatalf("entries shown: %s", out)
		}
	})
}

// FuzzParseEdit: no body makes ParseEdit panic; what it reads is a JSON
// object, and ids come from a delete list only.
func FuzzParseEdit(f *testing.F) {
	f.Add([]byte(`{"clear":true,"delete":["a"]}`))
	f.Add([]byte(`{"delete":[1,"b",null],"delete":["c"]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		e, err := ParseEdit(body)
		if err != nil {
			return
		}
		var m map[string]any
		if json.Unmarshal(body, &m) != nil {
			t.Fatalf("ParseEdit read what is not a JSON object: %q", body)
		}
		if _, isList := m["delete"].([]any); !isList && len(e.Delete) > 0 {
			t.Fatalf("ids read from a delete that is not a list: %q", body)
		}
	})
}

// BenchmarkOwnQueueView: a classroom's queue, 60 prompts of about 100 KB
// each (6 MB), shown to one student, once per GET /queue of theirs.
func BenchmarkOwnQueueView(b *testing.B) {
	key := []byte("k")
	raw := classroomQueue(b, key)
	b.SetBytes(int64(len(raw)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := queueViewOf(raw, key, "usera"); err != nil {
			b.Fatal(err)
		}
	}
}

// queueViewOf is what user sees of the queue raw: its owners read once,
// then the view written from a second read, as serveOwnView does.
func queueViewOf(raw, key []byte, user string) ([]byte, error) {
	owners, _, err := QueueOwners(bytes.NewReader(raw), key)
	if err != nil {
		return nil, err
	}
	return OwnQueueView(bytes.NewReader(raw), owners, key, user, MaxOwnViewBytes)
}

// historyViewOf is queueViewOf for the history.
func historyViewOf(raw, key []byte, user string) ([]byte, error) {
	owners, err := HistoryOwners(bytes.NewReader(raw), key)
	if err != nil {
		return nil, err
	}
	return OwnHistoryView(bytes.NewReader(raw), owners, key, user, MaxOwnViewBytes)
}
