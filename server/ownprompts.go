package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/comfyui-auth/comfyui-auth/middleware"
)

// setUpOwnPrompts builds the check that keeps named users and guests to
// their own prompts in ComfyUI's queue and history. It is on whenever
// prompts are tagged per user (--comfy-multi-user or
// --max-queued-prompts) and credentials are checked; setUpComfyUsers has
// then built the tagging and its key.
func (s *Server) setUpOwnPrompts() {
	if s.queueShare == nil || s.store == nil {
		return
	}
	client := newUpstreamClient(s.cfg.UpstreamTimeout)
	queueURL, historyURL := *s.upstream, *s.upstream
	queueURL.Path, historyURL.Path = "/queue", "/history"
	s.ownPrompts = middleware.OwnPrompts(middleware.OwnPromptsOptions{
		Key: s.queueKey,
		Queue: func(ctx context.Context) ([]byte, error) {
			return readComfyAnswer(ctx, client, &queueURL, "to tell the caller's queued prompts from others'")
		},
		History: func(ctx context.Context) ([]byte, error) {
			return readComfyAnswer(ctx, client, &historyURL, "to tell the caller's history from others'")
		},
		Failed: s.ownPromptsFailed,
	})
}

// readComfyAnswer is a GET of u, read whole up to MaxOwnAnswerBytes; why
// completes the error sentence.
func readComfyAnswer(ctx context.Context, client *http.Client, u *url.URL, why string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, upstreamCallError(err, why)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s answered %d", u.Path, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, middleware.MaxOwnAnswerBytes+1))
	if err != nil {
		return nil, upstreamCallError(err, why)
	}
	if len(b) > middleware.MaxOwnAnswerBytes {
		return nil, fmt.Errorf("GET %s is over %d MiB", u.Path, middleware.MaxOwnAnswerBytes>>20)
	}
	return b, nil
}

// ownPromptsFailed answers a request whose caller's prompts could not be
// told from others': ComfyUI down or slow as the proxy says it, else 502
// own_prompts_unchecked. Nothing is passed on or shown unchecked.
func (s *Server) ownPromptsFailed(w http.ResponseWriter, r *http.Request, err error) {
	info := middleware.InfoFrom(r)
	if r.Context().Err() != nil {
		info.Reason = "client closed the request"
		w.WriteHeader(499)
		return
	}
	w.Header().Set("Retry-After", "5")
	var re *registryError
	if errors.As(err, &re) {
		info.Reason = "own prompts: " + re.reason
		middleware.Refuse(w, r, re.status, re.code, "The queue could not be checked.", re.reason+" Nothing was done.")
		return
	}
	info.Reason = "own prompts: " + err.Error()
	s.logger.Warn().Err(err).Msg("ComfyUI's queue or history could not be read to tell a user's prompts from others'")
	middleware.Refuse(w, r, http.StatusBadGateway, middleware.CodeOwnPromptsUnchecked, "The queue could not be checked.",
		"ComfyUI's queue or history could not be read to tell this user's prompts from others' ("+err.Error()+"); nothing was done or shown; retry, and check ComfyUI's log")
}
