package middleware

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// MaxEditBytes bounds a POST /queue, /history or /interrupt body the
// gateway reads to keep a user to their own prompts: a list of 1 MiB holds
// some 25,000 prompt ids.
const MaxEditBytes = 1 << 20

// MaxOwnAnswerBytes bounds a ComfyUI /queue or /history answer the gateway
// holds to decide, or to show, which prompts are the caller's.
const MaxOwnAnswerBytes = 64 << 20

// OwnPromptsOptions configures OwnPrompts.
type OwnPromptsOptions struct {
	// Key verifies the prompts' tags (QueueShare's Key).
	Key []byte
	// Queue returns ComfyUI's GET /queue answer; History its GET /history.
	Queue   func(ctx context.Context) ([]byte, error)
	History func(ctx context.Context) ([]byte, error)
	// Outputs tells whose prompt made each output file, for GET /view;
	// nil leaves /view as ComfyUI has it.
	Outputs *OutputOwners
	// Failed answers a request whose caller's prompts could not be told
	// apart: Queue or History failed, or answered something that is not
	// ComfyUI's queue or history.
	Failed func(w http.ResponseWriter, r *http.Request, err error)
}

// OwnPrompts keeps every user but the operator to their own prompts. It
// applies to requests whose Info.User is a named user or UserGuest; the
// bare-line holder (UserDefault, the deployment's own token) and requests
// without a user pass unchanged. A prompt is the caller's when its
// extra_data carries QueueShare's tag for the caller and the prompt's id,
// verified under Key, so a tag a client writes or copies gives no rights.
//
//   - POST /queue: `delete` keeps the caller's ids; `clear` becomes a
//     delete of the caller's pending prompts. POST /history likewise, on
//     history entries. ComfyUI gets the gateway's own body
//     {"delete": [...]}; when nothing of the caller's is left, the gateway
//     answers 200 itself and ComfyUI is not asked.
//
//   - POST /interrupt: forwarded as {"prompt_id": id} only when id is the
//     caller's running prompt; without a prompt_id (ComfyUI's global
//     interrupt) it targets the caller's running prompt. Otherwise 200,
//     nothing done: the frontend ignores the answer either way.
//
//   - GET /queue: other users' items keep their place and number, with an
//     opaque id and an empty graph, extra_data and outputs, so the queue's
//     length still says how busy ComfyUI is. GET /history and
//     /history/{id}: only the caller's entries.
//
//   - GET and HEAD /view of an output or temp file: passed on only when
//     one of the caller's prompts in ComfyUI's history lists that file
//     (Outputs decides), with the query as the gateway read it; else 404
//     not_your_output. Input files (uploads) pass.
//
//   - POST /prompt with a prompt_id of the client's choosing: refused 409
//     prompt_id_taken when that id is in ComfyUI's queue or history and
//     not the caller's, since ComfyUI would file the new prompt's result
//     in place of the other user's history entry. It must run before
//     QueueShare, which sets a prompt_id on every prompt.
//
// Every answer the gateway writes itself says, in JSON, what it kept and
// what it left. Bodies are read up to MaxEditBytes (413 prompt_too_large
// beyond); a /queue or /history body that is not a JSON object gets 400
// prompt_unreadable, as ComfyUI would fail it. /api/ twins alike.
func OwnPrompts(o OwnPromptsOptions) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			info := InfoFrom(r)
			user := info.User
			if user == "" || user == UserDefault {
				next.ServeHTTP(w, r)
				return
			}
			path, ok := comfyPath(r.URL.EscapedPath())
			if !ok {
				next.ServeHTTP(w, r)
				return
			}
			if rest, ok := strings.CutPrefix(path, "/api/"); ok {
				path = "/" + rest
			}
			switch {
			case strings.EqualFold(r.Method, http.MethodPost) && path == "/prompt":
				o.servePrompt(w, r, next, user)
			case strings.EqualFold(r.Method, http.MethodPost) && (path == "/queue" || path == "/history"):
				o.serveEdit(w, r, next, user, path)
			case strings.EqualFold(r.Method, http.MethodPost) && path == "/interrupt":
				o.serveInterrupt(w, r, next, user)
			case o.Outputs != nil && path == "/view" &&
				(strings.EqualFold(r.Method, http.MethodGet) || strings.EqualFold(r.Method, http.MethodHead)):
				o.serveView(w, r, next, user)
			case r.Method == http.MethodGet && (path == "/queue" || path == "/history" ||
				strings.HasPrefix(path, "/history/") && !strings.Contains(path[len("/history/"):], "/")):
				o.serveOwnView(w, r, next, user, path == "/queue")
			default:
				next.ServeHTTP(w, r)
			}
		})
	}
}

// readEdit reads a body of at most MaxEditBytes, answering the refusal
// itself when it cannot.
func readEdit(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxEditBytes+1))
	if err != nil {
		InfoFrom(r).Reason = "own prompts: body unreadable: " + err.Error()
		Refuse(w, r, http.StatusBadRequest, CodePromptUnreadable, "The request could not be read.", "the request body could not be read: "+err.Error())
		return nil, false
	}
	if len(body) > MaxEditBytes {
		Refuse(w, r, http.StatusRequestEntityTooLarge, CodePromptTooLarge, "The request is too large.",
			fmt.Sprintf("a POST to /queue, /history or /interrupt may be %d MiB at most", MaxEditBytes>>20))
		return nil, false
	}
	return body, true
}

// Edit is a POST /queue or /history body as ComfyUI reads it: `clear` by
// Python truth, `delete` a list whose string items are prompt ids (other
// items match no prompt there).
type Edit struct {
	Clear  bool
	Delete []string
}

// ParseEdit reads a POST /queue or /history body.
func ParseEdit(body []byte) (Edit, error) {
	var e Edit
	ms, err := readObject(body)
	if err != nil {
		return e, err
	}
	for _, m := range ms {
		switch m.key {
		case "clear":
			e.Clear = truthy(m.val)
		case "delete":
			var items []json.RawMessage
			if err := json.Unmarshal(m.val, &items); err != nil {
				return e, errors.New("delete must be a list of prompt ids")
			}
			for _, it := range items {
				var id string
				if json.Unmarshal(it, &id) == nil {
					e.Delete = append(e.Delete, id)
				}
			}
		}
	}
	return e, nil
}

// truthy is Python's truth of a JSON value.
func truthy(raw json.RawMessage) bool {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return false
	}
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case float64:
		return x != 0
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	return false
}

// editAnswer is the gateway's own answer to an edit it did not forward
// whole.
type editAnswer struct {
	Done    []string `json:"done"`
	NotDone int      `json:"not_yours"`
	Note    string   `json:"note"`
}

func (o OwnPromptsOptions) serveEdit(w http.ResponseWriter, r *http.Request, next http.Handler, user, path string) {
	body, ok := readEdit(w, r)
	if !ok {
		return
	}
	e, err := ParseEdit(body)
	if err != nil {
		InfoFrom(r).Reason = "own prompts: unreadable edit: " + err.Error()
		Refuse(w, r, http.StatusBadRequest, CodePromptUnreadable, "The request could not be read.",
			"POST "+path+" takes a JSON object {\"clear\": true} or {\"delete\": [prompt ids]}: "+err.Error())
		return
	}
	var owners map[string]string
	var pending map[string]bool
	if path == "/queue" {
		raw, err := o.Queue(r.Context())
		if err == nil {
			owners, pending, err = QueueOwners(raw, o.Key)
		}
		if err != nil {
			o.Failed(w, r, err)
			return
		}
	} else {
		raw, err := o.History(r.Context())
		if err == nil {
			owners, err = HistoryOwners(raw, o.Key)
		}
		if err != nil {
			o.Failed(w, r, err)
			return
		}
	}
	keep := []string{}
	kept := map[string]bool{}
	add := func(id string) {
		if !kept[id] {
			kept[id] = true
			keep = append(keep, id)
		}
	}
	notYours := 0
	for _, id := range e.Delete {
		if owners[id] == user {
			add(id)
		} else {
			notYours++
		}
	}
	if e.Clear {
		for id, u := range owners {
			if u != user {
				notYours++
			} else if path == "/history" || pending[id] {
				add(id)
			}
		}
	}
	if notYours > 0 {
		InfoFrom(r).Reason = fmt.Sprintf("own prompts: %d of another user left alone", notYours)
	}
	if len(keep) == 0 {
		writeOwnAnswer(w, editAnswer{Done: keep, NotDone: notYours,
			Note: "nothing of " + whose(user) + " to delete; the gateway lets each user delete their own prompts only"})
		return
	}
	out, _ := json.Marshal(map[string][]string{"delete": keep})
	if notYours > 0 {
		w.Header().Set("X-Comfyui-Auth-Not-Yours", strconv.Itoa(notYours))
	}
	next.ServeHTTP(w, withJSONBody(r, out))
}

func (o OwnPromptsOptions) serveInterrupt(w http.ResponseWriter, r *http.Request, next http.Handler, user string) {
	body, ok := readEdit(w, r)
	if !ok {
		return
	}
	// ComfyUI reads a body that is not JSON as no body: a global interrupt.
	asked := ""
	if ms, err := readObject(body); err == nil {
		for _, m := range ms {
			if m.key == "prompt_id" {
				asked = ""
				_ = json.Unmarshal(m.val, &asked)
			}
		}
	}
	raw, err := o.Queue(r.Context())
	var running []string
	if err == nil {
		running, err = RunningOwned(raw, o.Key, user)
	}
	if err != nil {
		o.Failed(w, r, err)
		return
	}
	target := ""
	for _, id := range running {
		if asked == "" || asked == id {
			target = id
			break
		}
	}
	if target == "" {
		InfoFrom(r).Reason = "own prompts: interrupt of no running prompt of the caller's"
		writeOwnAnswer(w, editAnswer{Done: []string{}, Note: "no running prompt of " + whose(user) +
			" to interrupt; the gateway lets each user interrupt their own prompts only"})
		return
	}
	out, _ := json.Marshal(map[string]string{"prompt_id": target})
	next.ServeHTTP(w, withJSONBody(r, out))
}

func writeOwnAnswer(w http.ResponseWriter, a editAnswer) {
	b, _ := json.Marshal(a)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// QueueOwners reads ComfyUI's GET /queue answer: the verified owner of
// each prompt id, and which ids are pending. An id that appears on items
// of different owners (a client may choose its prompt_id), or on an item
// without a valid tag, has owner "": nobody's but the operator's.
func QueueOwners(raw, key []byte) (owners map[string]string, pending map[string]bool, err error) {
	q, err := readQueue(raw)
	if err != nil {
		return nil, nil, err
	}
	owners, pending = q.owners(key)
	return owners, pending, nil
}

// comfyQueue is a GET /queue answer, each item's members kept raw.
type comfyQueue struct {
	Running [][]json.RawMessage
	Pending [][]json.RawMessage
}

func readQueue(raw []byte) (comfyQueue, error) {
	// One decode of the whole answer: the prompts, most of its bytes, are
	// scanned and copied, never parsed further.
	var q struct {
		Running *[][]json.RawMessage `json:"queue_running"`
		Pending *[][]json.RawMessage `json:"queue_pending"`
	}
	if err := json.Unmarshal(raw, &q); err != nil {
		return comfyQueue{}, err
	}
	if q.Running == nil || q.Pending == nil {
		return comfyQueue{}, errors.New("queue_running or queue_pending is missing")
	}
	return comfyQueue{*q.Running, *q.Pending}, nil
}

func (q comfyQueue) owners(key []byte) (owners map[string]string, pending map[string]bool) {
	owners, pending = map[string]string{}, map[string]bool{}
	for i, items := range [][][]json.RawMessage{q.Running, q.Pending} {
		for _, tuple := range items {
			id, owner := itemOwner(tuple, key)
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

// note records owner for id; a second, different owner makes it nobody's.
func note(owners map[string]string, id, owner string) {
	if prev, seen := owners[id]; seen && prev != owner {
		owner = ""
	}
	owners[id] = owner
}

// itemOwner is the prompt id of a queue tuple and its verified user (""
// when its tag does not verify).
func itemOwner(tuple []json.RawMessage, key []byte) (id, owner string) {
	if len(tuple) < 2 || json.Unmarshal(tuple[1], &id) != nil {
		return "", ""
	}
	if user, _, ok := taggedItem(tuple, key); ok {
		return id, user
	}
	return id, ""
}

// RunningOwned is the ids of the running prompts in a GET /queue answer
// that are user's and no one else's.
func RunningOwned(raw, key []byte, user string) ([]string, error) {
	q, err := readQueue(raw)
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

// HistoryOwners reads ComfyUI's GET /history answer: the verified owner of
// each entry, by its key. An entry is its user's when its prompt tuple's
// tag verifies for the key's id.
func HistoryOwners(raw, key []byte) (map[string]string, error) {
	ms, err := readObject(raw)
	if err != nil {
		return nil, err
	}
	return historyOwners(ms, key), nil
}

// historyOwners is HistoryOwners of an answer already read.
func historyOwners(ms []member, key []byte) map[string]string {
	owners := map[string]string{}
	for _, m := range ms {
		note(owners, m.key, historyOwner(m.key, m.val, key))
	}
	return owners
}

// historyOwner is the verified user of the history entry id, "" if none.
func historyOwner(id string, entry json.RawMessage, key []byte) string {
	var e struct {
		Prompt []json.RawMessage `json:"prompt"`
	}
	if json.Unmarshal(entry, &e) != nil {
		return ""
	}
	pid, owner := itemOwner(e.Prompt, key)
	if pid != id {
		return ""
	}
	return owner
}

// serveOwnView passes GET /queue, /history or /history/{id} to ComfyUI
// and shows the caller only their own prompts' details.
func (o OwnPromptsOptions) serveOwnView(w http.ResponseWriter, r *http.Request, next http.Handler, user string, queue bool) {
	r2 := r.Clone(r.Context())
	r2.Header.Del("Accept-Encoding")
	rec := &holdWriter{header: http.Header{}, status: http.StatusOK, max: MaxOwnAnswerBytes}
	next.ServeHTTP(rec, r2)
	if rec.status != http.StatusOK {
		rec.replay(w, rec.buf.Bytes())
		return
	}
	var out []byte
	var err error
	switch {
	case rec.overflow:
		err = fmt.Errorf("the answer is over %d MiB", MaxOwnAnswerBytes>>20)
	case rec.header.Get("Content-Encoding") != "" && rec.header.Get("Content-Encoding") != "identity":
		err = errors.New("the answer is encoded with " + rec.header.Get("Content-Encoding"))
	case queue:
		out, err = OwnQueueView(rec.buf.Bytes(), o.Key, user)
	default:
		var own []PromptOutputs
		out, own, err = ownHistoryView(rec.buf.Bytes(), o.Key, user)
		if o.Outputs != nil {
			o.Outputs.Learn(own)
		}
	}
	if err != nil {
		o.Failed(w, r, err)
		return
	}
	rec.header.Set("Content-Length", strconv.Itoa(len(out)))
	rec.replay(w, out)
}

// OwnQueueView rewrites a GET /queue answer for user: their items as they
// are; every other item keeps its number and place, with an opaque id
// ("hidden-" and an HMAC of its id) and an empty prompt, extra_data and
// outputs. Members of the answer other than the two lists are dropped.
func OwnQueueView(raw, key []byte, user string) ([]byte, error) {
	q, err := readQueue(raw)
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
// frontend's list keeps its keys, and telling nothing of the id.
func hiddenID(key []byte, list string, pos int, id string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("comfyui-auth hidden prompt\x00"))
	if id == "" {
		// No readable id: the position keeps the placeholders apart.
		m.Write([]byte(list + "\x00" + strconv.Itoa(pos)))
	}
	m.Write([]byte(id))
	return "hidden-" + hex.EncodeToString(m.Sum(nil)[:8])
}

// OwnHistoryView keeps, of a GET /history or /history/{id} answer, the
// entries that are user's.
func OwnHistoryView(raw, key []byte, user string) ([]byte, error) {
	out, _, err := ownHistoryView(raw, key, user)
	return out, err
}

// ownHistoryView is OwnHistoryView, with the files the kept entries'
// outputs list: the gateway learns whose they are from the history views
// the frontend asks for anyway.
func ownHistoryView(raw, key []byte, user string) ([]byte, []PromptOutputs, error) {
	ms, err := readObject(raw)
	if err != nil {
		return nil, nil, err
	}
	owners := historyOwners(ms, key)
	kept := ms[:0]
	var own []PromptOutputs
	for _, m := range ms {
		if owners[m.key] == user {
			kept = append(kept, m)
			own = append(own, PromptOutputs{Owner: user, Files: entryFiles(m.val)})
		}
	}
	return writeObject(kept), own, nil
}

// servePrompt refuses a prompt whose chosen prompt_id is another user's
// (see OwnPrompts) and passes every other one on with the same body.
func (o OwnPromptsOptions) servePrompt(w http.ResponseWriter, r *http.Request, next http.Handler, user string) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxPromptBytes+1))
	if err != nil {
		InfoFrom(r).Reason = "prompt unreadable: " + err.Error()
		Refuse(w, r, http.StatusBadRequest, CodePromptUnreadable, "The prompt could not be read.", "the prompt could not be read: "+err.Error())
		return
	}
	if len(body) > MaxPromptBytes {
		Refuse(w, r, http.StatusRequestEntityTooLarge, CodePromptTooLarge, "The prompt is too large.",
			fmt.Sprintf("a prompt may be %d MiB at most while the gateway tags prompts with their user", MaxPromptBytes>>20))
		return
	}
	if o.Outputs != nil && !o.promptFilesAreOwn(w, r, user, body) {
		return
	}
	id := ChosenPromptID(body)
	if id != "" {
		raw, err := o.Queue(r.Context())
		var owners map[string]string
		if err == nil {
			owners, _, err = QueueOwners(raw, o.Key)
		}
		if err != nil {
			o.Failed(w, r, err)
			return
		}
		owner, queued := owners[id]
		if !queued || owner == user {
			if raw, err = o.History(r.Context()); err == nil {
				owners, err = HistoryOwners(raw, o.Key)
			}
			if err != nil {
				o.Failed(w, r, err)
				return
			}
			owner, queued = owners[id]
		}
		if queued && owner != user {
			InfoFrom(r).Reason = "own prompts: prompt_id of another user's prompt"
			Refuse(w, r, http.StatusConflict, CodePromptIDTaken, "The prompt id is taken.",
				"prompt_id "+strconv.Quote(id)+" is another prompt's in ComfyUI's queue or history, and its result would replace that prompt's; leave prompt_id out to get a new one, or choose a new UUID")
			return
		}
	}
	r2 := r.Clone(r.Context())
	r2.Body = io.NopCloser(strings.NewReader(string(body)))
	r2.ContentLength = int64(len(body))
	r2.Header.Set("Content-Length", strconv.Itoa(len(body)))
	r2.Header.Del("Transfer-Encoding")
	r2.TransferEncoding = nil
	next.ServeHTTP(w, r2)
}

// ChosenPromptID is the prompt_id a POST /prompt body names as TagPrompt
// keeps it: the last prompt_id member, if a non-empty string; else "".
func ChosenPromptID(body []byte) string {
	ms, err := readObject(body)
	if err != nil {
		return ""
	}
	id := ""
	for _, m := range ms {
		if m.key == "prompt_id" {
			id = ""
			_ = json.Unmarshal(m.val, &id)
		}
	}
	return id
}
