package middleware

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// MaxPromptBytes bounds a POST /prompt body the queue share reads whole to
// tag it. ComfyUI prompts with their layout are a few MB at most.
const MaxPromptBytes = 32 << 20

// MaxPromptIDBytes bounds a prompt_id a client chooses. The queue and
// history readers read an id of at most maxScannedValue bytes as ComfyUI
// writes it, \u escapes and all; a longer one would be an id they cannot
// read, so its prompt would count for no one and be no one's.
const MaxPromptIDBytes = 256

// QueueTagKey is the extra_data key under which the gateway tags each
// prompt with its user: {"user": NAME, "mac": HMAC}. ComfyUI keeps
// extra_data with the prompt in its queue and history, so the queue says
// who queued what; the MAC lets the gateway count only the tags it wrote.
const QueueTagKey = "comfyui_auth"

// QueueShareOptions configures QueueShare.
type QueueShareOptions struct {
	// Max is how many prompts one user may have pending or running; 0
	// tags prompts without counting them (for OwnPrompts alone).
	Max int
	// Key keys the tags' HMAC. It must outlive the gateway's process for
	// prompts queued before a restart to count after it.
	Key []byte
	// Queue opens ComfyUI's GET /queue answer, which QueueShare streams
	// and closes.
	Queue func(ctx context.Context) (io.ReadCloser, error)
	// QueueFailed answers a prompt whose user's count could not be made:
	// Queue failed, or its answer is not ComfyUI's queue.
	QueueFailed func(w http.ResponseWriter, r *http.Request, err error)
}

// QueueShare bounds each user's prompts in ComfyUI's queue: a POST /prompt
// (or /api/prompt) whose user already has Max prompts pending or running
// is refused 429 queue_share; other users are unaffected. The user is
// Info.User, so every guest counts as the one user "guest".
//
// Every prompt it passes on is tagged: extra_data[QueueTagKey] becomes
// {"user", "mac"}, the MAC binding the user to the prompt's prompt_id
// (the client's, or a new UUID set in the body), replacing whatever the
// client put there. The count is read from ComfyUI's GET /queue (running
// and pending), counting the prompt ids whose tag verifies: a client can
// neither forge a tag against another user nor strip its own, and the
// count needs no memory of the gateway's own, so it holds across a
// gateway restart as long as Key does.
//
// One user's prompts are checked one at a time, from the count until
// ComfyUI has answered the POST, so that simultaneous prompts cannot all
// pass on the same count. The body is read whole, up to MaxPromptBytes
// (413 prompt_too_large beyond), must be a JSON object whose extra_data,
// if any, is an object (400 prompt_unreadable otherwise), and goes on as
// the gateway's own UTF-8 `application/json`, so that ComfyUI reads the
// keys the gateway wrote.
func QueueShare(o QueueShareOptions) func(http.Handler) http.Handler {
	locks := &userLocks{held: map[string]*userLock{}}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.EqualFold(r.Method, http.MethodPost) || (r.URL.Path != "/prompt" && r.URL.Path != "/api/prompt") {
				next.ServeHTTP(w, r)
				return
			}
			info := InfoFrom(r)
			user := info.User
			body, ok := readPrompt(w, r, "while the gateway counts queued prompts (--max-queued-prompts)")
			if !ok {
				return
			}
			out, err := TagPrompt(body, o.Key, user)
			if err != nil {
				info.Reason = "prompt unreadable: " + err.Error()
				Refuse(w, r, http.StatusBadRequest, CodePromptUnreadable, "The prompt could not be read.",
					"the prompt must be a JSON object, with extra_data an object if present: "+err.Error())
				return
			}
			if o.Max <= 0 {
				next.ServeHTTP(w, withJSONBody(r, out))
				return
			}
			unlock, ok := locks.lock(r.Context(), user)
			if !ok {
				info.Reason = "client closed the request"
				w.WriteHeader(499)
				return
			}
			defer unlock()
			queue, err := o.Queue(r.Context())
			if err != nil {
				o.QueueFailed(w, r, err)
				return
			}
			id := ChosenPromptID(body)
			counts, inQueue, err := countQueued(queue, o.Key, id)
			queue.Close()
			if err != nil {
				o.QueueFailed(w, r, fmt.Errorf("GET /queue is not ComfyUI's queue: %w", err))
				return
			}
			// The count is of distinct prompt ids, so a second prompt under
			// an id already queued would not count: one id, one prompt.
			if inQueue {
				info.Reason = "queue share: prompt_id already queued"
				Refuse(w, r, http.StatusConflict, CodePromptIDTaken, "The prompt id is taken.",
					"prompt_id "+strconv.Quote(id)+" is already in ComfyUI's queue, and a second prompt under it would escape the queue share (--max-queued-prompts); leave prompt_id out to get a new one, or choose a new UUID")
				return
			}
			if n := counts[user]; n >= o.Max {
				info.Reason = fmt.Sprintf("queue share: %d of %d", n, o.Max)
				w.Header().Set("Retry-After", "10")
				Refuse(w, r, http.StatusTooManyRequests, CodeQueueShare, "Too many queued prompts.",
					fmt.Sprintf("%s already has %d prompts pending or running in ComfyUI's queue, the most each user may have (--max-queued-prompts); queue this one when one of them has finished, or cancel one", whose(user), n))
				return
			}
			next.ServeHTTP(w, withJSONBody(r, out))
		})
	}
}

func whose(user string) string {
	switch user {
	case UserGuest:
		return "guests together"
	case "":
		return "this gateway's one user"
	}
	return "user " + strconv.Quote(user)
}

// queueMAC is the tag of user's prompt promptID: HMAC-SHA256 over a fixed
// label, the user and the prompt id, NUL-separated (a user name has no
// NUL), 128 bits in hex.
func queueMAC(key []byte, user, promptID string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("comfyui-auth queue share\x00"))
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(promptID))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// queueTag is the value of extra_data[QueueTagKey].
type queueTag struct {
	User string `json:"user"`
	MAC  string `json:"mac"`
}

// TagPrompt returns a POST /prompt body with the queue tag of user: the
// last prompt_id, if a non-empty string, is kept (ComfyUI reads the last
// of duplicate keys), else a new UUID is set; extra_data loses every
// client QueueTagKey and gets the gateway's. For a named user or a guest,
// `front` and `number` are dropped: ComfyUI runs the lowest number first
// and takes both from the client, so a student keeping one prompt at the
// front while another runs would hold the GPU whatever their share; their
// prompts go behind those already pending. The operator (UserDefault)
// keeps both. Other members keep their bytes and order.
func TagPrompt(body, key []byte, user string) ([]byte, error) {
	ms, err := readObject(body)
	if err != nil {
		return nil, err
	}
	promptID := ""
	var extra json.RawMessage
	student := user != "" && user != UserDefault
	kept := ms[:0]
	for _, m := range ms {
		switch m.key {
		case "front", "number":
			if !student {
				kept = append(kept, m)
			}
		case "prompt_id":
			promptID = ""
			_ = json.Unmarshal(m.val, &promptID)
		case "extra_data":
			extra = m.val
		default:
			kept = append(kept, m)
		}
	}
	if len(promptID) > MaxPromptIDBytes {
		return nil, fmt.Errorf("prompt_id is %d bytes; the gateway tags prompt ids of at most %d (ComfyUI's are 36-character UUIDs)", len(promptID), MaxPromptIDBytes)
	}
	if promptID == "" {
		promptID = newPromptID()
	}
	var em []member
	if s := strings.TrimSpace(string(extra)); s != "" && s != "null" {
		if em, err = readObject(extra); err != nil {
			return nil, fmt.Errorf("extra_data: %w", err)
		}
	}
	ekept := em[:0]
	for _, m := range em {
		if m.key != QueueTagKey {
			ekept = append(ekept, m)
		}
	}
	tag, _ := json.Marshal(queueTag{User: user, MAC: queueMAC(key, user, promptID)})
	pid, _ := json.Marshal(promptID)
	kept = append(kept, member{"prompt_id", pid}, member{"extra_data", writeObject(append(ekept, member{QueueTagKey, tag}))})
	return writeObject(kept), nil
}

// newPromptID is a UUID4, the form ComfyUI gives prompt ids.
func newPromptID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// CountQueued reads ComfyUI's GET /queue answer from r and returns, per
// user, how many distinct prompt ids in queue_running and queue_pending
// carry a tag that verifies under key. Untagged items and forged tags
// count for no one. An answer without both lists is an error. The answer
// is streamed (ScanQueue): its memory is the tagged ids, not its size.
func CountQueued(r io.Reader, key []byte) (map[string]int, error) {
	counts, _, err := countQueued(r, key, "")
	return counts, err
}

// countQueued is CountQueued, and whether the prompt id chosen is on any
// item of the queue, tagged or not ("" is looked for on no item).
func countQueued(r io.Reader, key []byte, chosen string) (map[string]int, bool, error) {
	type owned struct{ user, id string }
	seen := map[owned]bool{}
	inQueue := false
	err := ScanQueue(r, key, func(it QueueItem) error {
		if it.HasID && chosen != "" && it.ID == chosen {
			inQueue = true
		}
		if it.Tagged {
			seen[owned{it.User, it.ID}] = true
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	counts := map[string]int{}
	for o := range seen {
		counts[o.user]++
	}
	return counts, inQueue, nil
}

// userLocks serialises each user's prompts, one lock per user held only
// while in use.
type userLocks struct {
	mu   sync.Mutex
	held map[string]*userLock
}

type userLock struct {
	ch   chan struct{}
	refs int
}

// lock waits for user's turn, or until ctx ends (ok false).
func (l *userLocks) lock(ctx context.Context, user string) (unlock func(), ok bool) {
	l.mu.Lock()
	ul := l.held[user]
	if ul == nil {
		ul = &userLock{ch: make(chan struct{}, 1)}
		l.held[user] = ul
	}
	ul.refs++
	l.mu.Unlock()
	release := func() {
		l.mu.Lock()
		if ul.refs--; ul.refs == 0 {
			delete(l.held, user)
		}
		l.mu.Unlock()
	}
	select {
	case ul.ch <- struct{}{}:
		return func() { <-ul.ch; release() }, true
	case <-ctx.Done():
		release()
		return nil, false
	}
}

// readPrompt reads a POST /prompt body whole, up to MaxPromptBytes; an
// unreadable or larger one is refused (400 prompt_unreadable, 413
// prompt_too_large, the bound's reason given by why) and ok is false.
func readPrompt(w http.ResponseWriter, r *http.Request, why string) (body []byte, ok bool) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxPromptBytes+1))
	if err != nil {
		InfoFrom(r).Reason = "prompt unreadable: " + err.Error()
		Refuse(w, r, http.StatusBadRequest, CodePromptUnreadable, "The prompt could not be read.", "the prompt could not be read: "+err.Error())
		return nil, false
	}
	if len(body) > MaxPromptBytes {
		Refuse(w, r, http.StatusRequestEntityTooLarge, CodePromptTooLarge, "The prompt is too large.",
			fmt.Sprintf("a prompt may be %d MiB at most %s", MaxPromptBytes>>20, why))
		return nil, false
	}
	return body, true
}
