package middleware

// The whole-answer readers of ComfyUI's queue and history the streaming
// readers (comfyscan.go) replace, kept as the reference they are compared
// with: FuzzScanQueueAgreesWithEncodingJSON and its siblings, and the
// benchmarks.

import (
	"bytes"
	"crypto/hmac"
	"encoding/json"
	"errors"
)

// wholeCountQueued reads ComfyUI's GET /queue answer and returns, per user, how
// many distinct prompt ids in queue_running and queue_pending carry a tag
// that verifies under key. Untagged items and forged tags count for no one.
// An answer without both lists is an error.
func wholeCountQueued(raw, key []byte) (map[string]int, error) {
	counts, _, err := wholeCountQueuedIDs(raw, key)
	return counts, err
}

// wholeCountQueued is wholeCountQueued, with the set of every prompt id in the
// queue, tagged or not.
func wholeCountQueuedIDs(raw, key []byte) (map[string]int, map[string]bool, error) {
	// One decode of the whole answer: the prompts, most of its bytes, are
	// scanned twice (validation, then decoding) and never parsed further.
	var q struct {
		Running *[][]json.RawMessage `json:"queue_running"`
		Pending *[][]json.RawMessage `json:"queue_pending"`
	}
	if err := json.Unmarshal(raw, &q); err != nil {
		return nil, nil, err
	}
	if q.Running == nil || q.Pending == nil {
		return nil, nil, errors.New("queue_running or queue_pending is missing")
	}
	inQueue := map[string]bool{}
	type owned struct{ user, id string }
	seen := map[owned]bool{}
	for _, items := range [][][]json.RawMessage{*q.Running, *q.Pending} {
		for _, tuple := range items {
			var id string
			if len(tuple) > 1 && json.Unmarshal(tuple[1], &id) == nil {
				inQueue[id] = true
			}
			if user, id, ok := wholeTaggedItem(tuple, key); ok {
				seen[owned{user, id}] = true
			}
		}
	}
	counts := map[string]int{}
	for o := range seen {
		counts[o.user]++
	}
	return counts, inQueue, nil
}

// wholeTaggedItem reads one (number, prompt_id, prompt, extra_data, outputs)
// tuple and returns its user when its tag verifies.
func wholeTaggedItem(tuple []json.RawMessage, key []byte) (user, promptID string, ok bool) {
	if len(tuple) < 4 {
		return "", "", false
	}
	if json.Unmarshal(tuple[1], &promptID) != nil {
		return "", "", false
	}
	extra, err := readObject(tuple[3])
	if err != nil {
		return "", "", false
	}
	var tag queueTag
	found := false
	for _, m := range extra {
		if m.key == QueueTagKey {
			found = json.Unmarshal(m.val, &tag) == nil
		}
	}
	if !found || !hmac.Equal([]byte(tag.MAC), []byte(queueMAC(key, tag.User, promptID))) {
		return "", "", false
	}
	return tag.User, promptID, true
}

// wholeQueueOwners reads ComfyUI's GET /queue answer: the verified owner of
// each prompt id, and which ids are pending. An id that appears on items
// of different owners (a client may choose its prompt_id), or on an item
// without a valid tag, has owner "": nobody's but the operator's.
func wholeQueueOwners(raw, key []byte) (owners map[string]string, pending map[string]bool, err error) {
	q, err := wholeReadQueue(raw)
	if err != nil {
		return nil, nil, err
	}
	owners, pending = q.owners(key)
	return owners, pending, nil
}

// wholeComfyQueue is a GET /queue answer, each item's members kept raw.
type wholeComfyQueue struct {
	Running [][]json.RawMessage
	Pending [][]json.RawMessage
}

func wholeReadQueue(raw []byte) (wholeComfyQueue, error) {
	// One decode of the whole answer: the prompts, most of its bytes, are
	// scanned and copied, never parsed further.
	var q struct {
		Running *[][]json.RawMessage `json:"queue_running"`
		Pending *[][]json.RawMessage `json:"queue_pending"`
	}
	if err := json.Unmarshal(raw, &q); err != nil {
		return wholeComfyQueue{}, err
	}
	if q.Running == nil || q.Pending == nil {
		return wholeComfyQueue{}, errors.New("queue_running or queue_pending is missing")
	}
	return wholeComfyQueue{*q.Running, *q.Pending}, nil
}

func (q wholeComfyQueue) owners(key []byte) (owners map[string]string, pending map[string]bool) {
	owners, pending = map[string]string{}, map[string]bool{}
	for i, items := range [][][]json.RawMessage{q.Running, q.Pending} {
		for _, tuple := range items {
			id, owner := wholeItemOwner(tuple, key)
			if id == "" {
				continue
			}
			note(owners, id, owner)
			if i == 1 {
				pending[id] = true
			}
		}
	}
	return owners, pending
}

// wholeItemOwner is the prompt id of a queue tuple and its verified user (""
// when its tag does not verify).
func wholeItemOwner(tuple []json.RawMessage, key []byte) (id, owner string) {
	if len(tuple) < 2 || json.Unmarshal(tuple[1], &id) != nil {
		return "", ""
	}
	if user, _, ok := wholeTaggedItem(tuple, key); ok {
		return id, user
	}
	return id, ""
}

// wholeRunningOwned is the ids of the running prompts in a GET /queue answer
// that are user's and no one else's.
func wholeRunningOwned(raw, key []byte, user string) ([]string, error) {
	q, err := wholeReadQueue(raw)
	if err != nil {
		return nil, err
	}
	owners, _ := q.owners(key)
	var out []string
	for _, tuple := range q.Running {
		var id string
		if len(tuple) > 1 && json.Unmarshal(tuple[1], &id) == nil && owners[id] == user {
			out = append(out, id)
		}
	}
	return out, nil
}

// wholeRunningUsers reads ComfyUI's GET /queue answer: the verified users
// of its running prompts.
func wholeRunningUsers(raw, key []byte) (map[string]bool, error) {
	q, err := wholeReadQueue(raw)
	if err != nil {
		return nil, err
	}
	owners, _ := q.owners(key)
	users := map[string]bool{}
	for _, tuple := range q.Running {
		var id string
		if len(tuple) > 1 && json.Unmarshal(tuple[1], &id) == nil && owners[id] != "" {
			users[owners[id]] = true
		}
	}
	return users, nil
}

// wholeHistoryOwners reads ComfyUI's GET /history answer: the verified owner of
// each entry, by its key. An entry is its user's when its prompt tuple's
// tag verifies for the key's id.
func wholeHistoryOwners(raw, key []byte) (map[string]string, error) {
	ms, err := readObject(raw)
	if err != nil {
		return nil, err
	}
	return wholeHistoryOwnersOf(ms, key), nil
}

// wholeHistoryOwners is wholeHistoryOwners of an answer already read.
func wholeHistoryOwnersOf(ms []member, key []byte) map[string]string {
	owners := map[string]string{}
	for _, m := range ms {
		note(owners, m.key, wholeHistoryOwner(m.key, m.val, key))
	}
	return owners
}

// wholeHistoryOwner is the verified user of the history entry id, "" if none.
func wholeHistoryOwner(id string, entry json.RawMessage, key []byte) string {
	var e struct {
		Prompt []json.RawMessage `json:"prompt"`
	}
	if json.Unmarshal(entry, &e) != nil {
		return ""
	}
	pid, owner := wholeItemOwner(e.Prompt, key)
	if pid != id {
		return ""
	}
	return owner
}

// wholeOwnQueueView rewrites a GET /queue answer for user: their items as they
// are; every other item keeps its number and place, with an opaque id
// ("hidden-" and an HMAC of its id) and an empty prompt, extra_data and
// outputs. Members of the answer other than the two lists are dropped.
func wholeOwnQueueView(raw, key []byte, user string) ([]byte, error) {
	q, err := wholeReadQueue(raw)
	if err != nil {
		return nil, err
	}
	owners, _ := q.owners(key)
	var b bytes.Buffer
	b.Grow(len(raw))
	for n, list := range []struct {
		name  string
		items [][]json.RawMessage
	}{{"queue_running", q.Running}, {"queue_pending", q.Pending}} {
		b.WriteString([]string{`{"`, `,"`}[n] + list.name + `":[`)
		for j, tuple := range list.items {
			if j > 0 {
				b.WriteByte(',')
			}
			var id string
			owned := len(tuple) > 1 && json.Unmarshal(tuple[1], &id) == nil && owners[id] == user
			if !owned {
				number := json.RawMessage("0")
				if len(tuple) > 0 {
					number = tuple[0]
				}
				hidden, _ := json.Marshal(hiddenID(key, list.name, j, id))
				tuple = []json.RawMessage{number, hidden, json.RawMessage("{}"), json.RawMessage("{}"), json.RawMessage("[]")}
			}
			b.WriteByte('[')
			for k, m := range tuple {
				if k > 0 {
					b.WriteByte(',')
				}
				b.Write(m)
			}
			b.WriteByte(']')
		}
		b.WriteByte(']')
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// hiddenID stands for another user's prompt id: stable for one id, so the

// wholeOwnHistoryView keeps, of a GET /history or /history/{id} answer, the
// entries that are user's.
func wholeOwnHistoryView(raw, key []byte, user string) ([]byte, error) {
	ms, err := readObject(raw)
	if err != nil {
		return nil, err
	}
	owners := wholeHistoryOwnersOf(ms, key)
	kept := ms[:0]
	for _, m := range ms {
		if owners[m.key] == user {
			kept = append(kept, m)
		}
	}
	return writeObject(kept), nil
}

// servePrompt refuses a prompt whose chosen prompt_id is another user's
