package middleware

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
)

// WholeReads bounds how many requests the gateway handles at once that may
// hold a large body, or a user's share of a ComfyUI answer, in memory to
// judge it: POST /prompt (up to MaxPromptBytes), POST /queue, /history
// and /interrupt, and the GET /queue and /history views written per user
// (their user's own items, up to MaxOwnViewBytes, with the view written
// from them). ComfyUI's answers themselves are streamed, not held.
// Without a bound, one client's few hundred connections asking for a view
// of their large prompts at once would hold that many copies of them. Each user (Info.User; all guests are one) holds one turn
// at a time, so one user's flood of such requests waits behind itself and
// leaves the other turns to everyone else.
type WholeReads struct {
	slots   chan struct{}
	users   userLocks
	waiting atomic.Int64
}

// NewWholeReads admits n such requests at once; the others wait their turn.
func NewWholeReads(n int) *WholeReads {
	return &WholeReads{slots: make(chan struct{}, n), users: userLocks{held: map[string]*userLock{}}}
}

// Waiting is how many requests wait for a turn now.
func (b *WholeReads) Waiting() int64 { return b.waiting.Load() }

// acquire waits for user's turn and then a free slot; release gives both
// back. ok is false when ctx ended first.
func (b *WholeReads) acquire(ctx context.Context, user string) (release func(), ok bool) {
	b.waiting.Add(1)
	defer b.waiting.Add(-1)
	unlock, ok := b.users.lock(ctx, user)
	if !ok {
		return nil, false
	}
	select {
	case b.slots <- struct{}{}:
		return func() { <-b.slots; unlock() }, true
	case <-ctx.Done():
		unlock()
		return nil, false
	}
}

// BoundWholeReads lets the requests WholeReads covers through b's slots
// one turn each, waiting as long as the client does (499 when it leaves).
// Every other request passes at once.
func BoundWholeReads(b *WholeReads) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if b == nil || !readsWhole(r) {
				next.ServeHTTP(w, r)
				return
			}
			release, ok := b.acquire(r.Context(), InfoFrom(r).User)
			if !ok {
				InfoFrom(r).Reason = "client closed the request"
				w.WriteHeader(499)
				return
			}
			defer release()
			next.ServeHTTP(w, r)
		})
	}
}

// readsWhole reports whether OwnPrompts or QueueShare may read r's body or
// ComfyUI's answer to it whole: their routes, matched as each of them does.
func readsWhole(r *http.Request) bool {
	post := strings.EqualFold(r.Method, http.MethodPost)
	if post && (r.URL.Path == "/prompt" || r.URL.Path == "/api/prompt") {
		return true
	}
	path, ok := comfyPath(r.URL.EscapedPath())
	if !ok {
		return false
	}
	if rest, ok := strings.CutPrefix(path, "/api/"); ok {
		path = "/" + rest
	}
	switch {
	case post:
		return path == "/prompt" || path == "/queue" || path == "/history" || path == "/interrupt"
	case r.Method == http.MethodGet:
		return path == "/queue" || path == "/history" || strings.HasPrefix(path, "/history/")
	}
	return false
}
