package middleware

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// MaxEditBytes bounds a POST /queue, /history or /interrupt body the
// gateway reads to keep a user to their own prompts: a list of 1 MiB holds
// some 25,000 prompt ids.
const MaxEditBytes = 1 << 20

// MaxOwnViewBytes bounds the caller's own items a view of the queue or
// history holds, together: room for two of the largest prompts the
// gateway passes (MaxPromptBytes) as ComfyUI writes them back. Other
// users' items are never held, whatever their size.
const MaxOwnViewBytes = 64 << 20

// OwnPromptsOptions configures OwnPrompts.
type OwnPromptsOptions struct {
	// Key verifies the prompts' tags (QueueShare's Key).
	Key []byte
	// Open returns the body of ComfyUI's 200 answer to GET target, a path
	// with its query ("/queue", "/history", "/history/{id}?max_items=5"),
	// which OwnPrompts streams and closes.
	Open func(ctx context.Context, target string) (io.ReadCloser, error)
	// MaxOwnView bounds the caller's own items a view of the queue or
	// history holds (MaxOwnViewBytes).
	MaxOwnView int
	// Outputs tells whose prompt made each output file, for GET /view;
	// nil leaves /view as ComfyUI has it.
	Outputs *OutputOwners
	// Failed answers a request whose caller's prompts could not be told
	// apart: Open failed, or ComfyUI answered something that is not its
	// queue or history.
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
//   - POST /upload/mask: passed on only when the image its original_ref
//     names (which ComfyUI copies, masked, into the shared input folder)
//     is an input file or the caller's own output or temp file, with
//     original_ref as the gateway read it; else 403 not_your_file.
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
			case o.Outputs != nil && strings.EqualFold(r.Method, http.MethodPost) && path == "/upload/mask":
				o.serveMask(w, r, next, user)
			case o.Outputs != nil && path == "/view" &&
				(strings.EqualFold(r.Method, http.MethodGet) || strings.EqualFold(r.Method, http.MethodHead)):
				o.serveView(w, r, next, user)
			case r.Method == http.MethodGet && (path == "/queue" || path == "/history" ||
				strings.HasPrefix(path, "/history/") && !strings.Contains(path[len("/history/"):], "/")):
				o.serveOwnView(w, r, user, path == "/queue")
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
	err = o.read(r.Context(), path, func(answer io.Reader) (err error) {
		if path == "/queue" {
			owners, pending, err = QueueOwners(answer, o.Key)
		} else {
			owners, err = HistoryOwners(answer, o.Key)
		}
		return err
	})
	if err != nil {
		o.Failed(w, r, err)
		return
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
	var running []string
	err := o.read(r.Context(), "/queue", func(answer io.Reader) (err error) {
		running, err = RunningOwned(answer, o.Key, user)
		return err
	})
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

// QueueOwners reads ComfyUI's GET /queue answer from r, streamed: the
// verified owner of each prompt id, and which ids are pending. An id that
// appears on items of different owners (a client may choose its
// prompt_id), or on an item without a valid tag, has owner "": nobody's
// but the operator's.
func QueueOwners(r io.Reader, key []byte) (owners map[string]string, pending map[string]bool, err error) {
	owners, pending = map[string]string{}, map[string]bool{}
	err = ScanQueue(r, key, func(it QueueItem) error {
		if !it.HasID || it.ID == "" {
			return nil
		}
		note(owners, it.ID, it.User)
		if it.Pending {
			pending[it.ID] = true
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return owners, pending, nil
}

// note records owner for id; a second, different owner makes it nobody's.
func note(owners map[string]string, id, owner string) {
	if prev, seen := owners[id]; seen && prev != owner {
		owner = ""
	}
	owners[id] = owner
}

// RunningOwned is the ids of the running prompts in a GET /queue answer,
// read from r, that are user's and no one else's.
func RunningOwned(r io.Reader, key []byte, user string) ([]string, error) {
	running, owners, err := runningOwners(r, key)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, id := range running {
		if owners[id] == user {
			out = append(out, id)
		}
	}
	return out, nil
}

// runningOwners reads a GET /queue answer from r, streamed (ScanQueue):
// the ids of its running prompts, and the owner of every id: "" when the
// id is also on another user's item or an untagged one, as QueueOwners
// has it.
func runningOwners(r io.Reader, key []byte) (running []string, owners map[string]string, err error) {
	owners = map[string]string{}
	err = ScanQueue(r, key, func(it QueueItem) error {
		if !it.HasID || it.ID == "" {
			return nil
		}
		note(owners, it.ID, it.User)
		if !it.Pending {
			running = append(running, it.ID)
		}
		return nil
	})
	return running, owners, err
}

// HistoryOwners reads ComfyUI's GET /history answer from r, streamed: the
// verified owner of each entry, by its key. An entry is its user's when
// its prompt tuple's tag verifies for the key's id.
func HistoryOwners(r io.Reader, key []byte) (map[string]string, error) {
	owners := map[string]string{}
	err := ScanHistory(r, key, func(it HistoryItem) error {
		note(owners, it.ID, it.User)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return owners, nil
}

// serveOwnView answers GET /queue, /history or /history/{id} itself,
// showing the caller only their own prompts' details. ComfyUI's answer is
// read twice, each time streamed: once for who owns which prompt id, once
// to write the view, keeping only the caller's own items, up to
// o.MaxOwnView bytes together (403 own_prompts_too_large beyond, for this
// caller alone). An item whose id was not the caller's in the first read
// is never kept; one that was is kept only if its tag still verifies for
// the caller in the second. Of the client's query, ComfyUI gets max_items
// and offset, the only parameters its history reads.
func (o OwnPromptsOptions) serveOwnView(w http.ResponseWriter, r *http.Request, user string, queue bool) {
	target := "/queue"
	if !queue {
		target = r.URL.EscapedPath()
		q := url.Values{}
		for _, name := range []string{"max_items", "offset"} {
			if v, ok := r.URL.Query()[name]; ok {
				q[name] = v
			}
		}
		if len(q) > 0 {
			target += "?" + q.Encode()
		}
	}
	var owners map[string]string
	err := o.read(r.Context(), target, func(answer io.Reader) (err error) {
		if queue {
			owners, _, err = QueueOwners(answer, o.Key)
		} else {
			owners, err = HistoryOwners(answer, o.Key)
		}
		return err
	})
	var out []byte
	if err == nil {
		err = o.read(r.Context(), target, func(answer io.Reader) (err error) {
			if queue {
				out, err = OwnQueueView(answer, owners, o.Key, user, o.MaxOwnView)
				return err
			}
			var own []PromptOutputs
			out, own, err = ownHistoryView(answer, owners, o.Key, user, o.MaxOwnView)
			if err == nil && o.Outputs != nil {
				o.Outputs.Learn(own)
			}
			return err
		})
	}
	if errors.Is(err, ErrOwnViewTooLarge) {
		what, next := "queue", "delete some of them (POST /queue {\"delete\": [ids]}), or wait until they have run"
		if !queue {
			what, next = "history", "ask for fewer entries with ?max_items=, or delete some (POST /history {\"delete\": [ids]})"
		}
		InfoFrom(r).Reason = "own prompts: the caller's own " + what + " is over the view's bound"
		Refuse(w, r, http.StatusForbidden, CodeOwnPromptsTooLarge, "Your prompts are too large to show.",
			fmt.Sprintf("%s's own prompts in ComfyUI's %s are over %d MiB together, more than the gateway shows at once (other users' views are not affected); %s", whose(user), what, o.MaxOwnView>>20, next))
		return
	}
	if err != nil {
		o.Failed(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

// read opens ComfyUI's answer to GET target and passes it to fn, closing
// it after.
func (o OwnPromptsOptions) read(ctx context.Context, target string, fn func(io.Reader) error) error {
	body, err := o.Open(ctx, target)
	if err != nil {
		return err
	}
	defer body.Close()
	return fn(body)
}

// OwnQueueView writes, from a GET /queue answer read from r, what user
// sees of it: their items as they are; every other item keeps its number
// and place, with an opaque id ("hidden-" and an HMAC of its id) and an
// empty prompt, extra_data and outputs. Members of the answer other than
// the two lists are dropped. An item is user's when owners (QueueOwners of
// an earlier read) says its id is and its own tag verifies for user; only
// those are kept whole, up to max bytes together (ErrOwnViewTooLarge
// beyond), and every other item is read past.
func OwnQueueView(r io.Reader, owners map[string]string, key []byte, user string, max int) ([]byte, error) {
	budget := max
	// The view is assembled once, at its exact size, from pieces: the
	// caller's items as captured, and placeholders.
	var lists [2][][]byte
	size := 0
	err := scanQueue(r, key, queueScan{
		capture: func(it *QueueItem) bool { return owners[it.ID] == user },
		budget:  &budget,
	}, func(it QueueItem) error {
		l := &lists[btoi(it.Pending)]
		open := "["
		if it.Index > 0 {
			open = ",["
		}
		if it.Raw == nil || !it.Tagged || it.User != user || owners[it.ID] != user {
			number := json.RawMessage("0")
			if it.Members > 0 && it.Number != nil {
				number = it.Number
			}
			id := ""
			if it.HasID {
				id = it.ID
			}
			hidden, _ := json.Marshal(hiddenID(key, queueLists[btoi(it.Pending)], it.Index, id))
			p := slices.Concat([]byte(open), number, []byte(","), hidden, []byte(",{},{},[]]"))
			*l = append(*l, p)
			size += len(p)
			return nil
		}
		*l = append(*l, []byte(open))
		for k, m := range it.Raw {
			if k > 0 {
				*l = append(*l, []byte(","))
			}
			*l = append(*l, m)
			size += len(m) + 1
		}
		*l = append(*l, []byte("]"))
		size += len(open) + 1
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, size+40)
	out = append(out, `{"queue_running":[`...)
	for _, p := range lists[0] {
		out = append(out, p...)
	}
	out = append(out, `],"queue_pending":[`...)
	for _, p := range lists[1] {
		out = append(out, p...)
	}
	return append(out, `]}`...), nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
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

// OwnHistoryView keeps, of a GET /history or /history/{id} answer read
// from r, the entries that are user's: owners (HistoryOwners of an
// earlier read) says so and the entry's own tag verifies for user. Only
// those are kept, up to max bytes together (ErrOwnViewTooLarge beyond);
// every other entry is read past.
func OwnHistoryView(r io.Reader, owners map[string]string, key []byte, user string, max int) ([]byte, error) {
	out, _, err := ownHistoryView(r, owners, key, user, max)
	return out, err
}

// ownHistoryView is OwnHistoryView, with the files the kept entries'
// outputs list: the gateway learns whose they are from the history views
// the frontend asks for anyway.
func ownHistoryView(r io.Reader, owners map[string]string, key []byte, user string, max int) ([]byte, []PromptOutputs, error) {
	budget := max
	var kept []member
	var own []PromptOutputs
	err := scanHistory(r, key, historyScan{
		capture: func(id string) bool { return owners[id] == user },
		budget:  &budget,
	}, func(it HistoryItem) error {
		if it.Raw != nil && it.Tagged && it.User == user {
			kept = append(kept, member{it.ID, it.Raw})
			own = append(own, PromptOutputs{Owner: user, Files: it.Files})
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return writeObject(kept), own, nil
}

// servePrompt refuses a prompt whose chosen prompt_id is another user's
// (see OwnPrompts) and passes every other one on with the same body.
func (o OwnPromptsOptions) servePrompt(w http.ResponseWriter, r *http.Request, next http.Handler, user string) {
	body, ok := readPrompt(w, r, "while the gateway tags prompts with their user")
	if !ok {
		return
	}
	if o.Outputs != nil && !o.promptFilesAreOwn(w, r, user, body) {
		return
	}
	id := ChosenPromptID(body)
	if id != "" {
		var owners map[string]string
		err := o.read(r.Context(), "/queue", func(answer io.Reader) (err error) {
			owners, _, err = QueueOwners(answer, o.Key)
			return err
		})
		if err != nil {
			o.Failed(w, r, err)
			return
		}
		owner, queued := owners[id]
		if !queued || owner == user {
			err = o.read(r.Context(), "/history", func(answer io.Reader) (err error) {
				owners, err = HistoryOwners(answer, o.Key)
				return err
			})
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
