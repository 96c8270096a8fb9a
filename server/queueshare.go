package server

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net/http"

	"github.com/comfyui-auth/comfyui-auth/middleware"
)

// maxWholeReads is how many prompts, queue and history edits and per-user
// views of the queue and history are handled at once: each may hold a
// 32 MiB prompt with its tagged copy, or a view's 64 MiB of its user's own
// prompts (about 160 MiB with buffer growth and the view written from
// them), so four keep that under about 1 GiB however many clients ask
// together; the others wait their turn.
const maxWholeReads = 4

// queueTagKey derives the queue share's tag key from the session key, so
// it lasts exactly as long as sessions do.
func queueTagKey(sessionKey []byte) []byte {
	m := hmac.New(sha256.New, sessionKey)
	m.Write([]byte("comfyui-auth queue share tag key"))
	return m.Sum(nil)
}

// setUpComfyUsers builds --comfy-multi-user's registry and the
// --max-queued-prompts check; New calls it once the session key is known.
func (s *Server) setUpComfyUsers() {
	if !s.cfg.ComfyMultiUser && s.cfg.MaxQueuedPrompts == 0 {
		return
	}
	client := newUpstreamClient(s.cfg.UpstreamTimeout)
	if s.cfg.ComfyMultiUser {
		s.comfyUsers = newComfyRegistry(s.upstream, client, s.logger.With().Str("component", "comfy-users").Logger())
		s.logger.Info().Msg("--comfy-multi-user: each user gets their own ComfyUI user, and the gateway sets Comfy-User on every request; ComfyUI must run with --multi-user")
	}
	// Prompts are tagged with their user in both modes: the queue share
	// counts the tags, and OwnPrompts keeps each user to their own.
	if s.queueKey == nil {
		s.queueKey = make([]byte, 32)
		if _, err := rand.Read(s.queueKey); err != nil {
			panic("crypto/rand failed: " + err.Error())
		}
	}
	if !s.queueKeyKept {
		s.logger.Warn().Msg("prompts are tagged with their user (--comfy-multi-user or --max-queued-prompts) under a key derived from the session key, which changes at each restart (no SECRET_KEY, --secret-key-file or --state-dir): prompts queued before a restart are not counted after it, and their users can no longer delete or see them")
	}
	s.wholeReads = middleware.NewWholeReads(maxWholeReads)
	queueURL := *s.upstream
	queueURL.Path = "/queue"
	s.queueShare = middleware.QueueShare(middleware.QueueShareOptions{
		Max: s.cfg.MaxQueuedPrompts,
		Key: s.queueKey,
		Queue: func(ctx context.Context) (io.ReadCloser, error) {
			return openComfyAnswer(ctx, client, &queueURL, "to count the prompts in its queue")
		},
		QueueFailed: func(w http.ResponseWriter, r *http.Request, err error) {
			s.refuseUnchecked(w, r, err, uncheckedAnswer{
				check: "queue share", code: middleware.CodeQueueUnchecked,
				what:    "ComfyUI's queue could not be read to count this user's prompts",
				outcome: "the prompt was not queued",
			})
		},
	})
	s.setUpOwnPrompts()
}

// upstreamError is the proxy's report of a failed request: counted, and
// with --comfy-multi-user a sign ComfyUI may be restarting, so the next
// request reads its user registry again.
func (s *Server) upstreamError(status int) {
	s.metrics.upstreamError(status)
	if s.comfyUsers != nil {
		s.comfyUsers.forget()
	}
}
