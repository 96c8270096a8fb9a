package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

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
	timeout := s.cfg.UpstreamTimeout
	s.outputOwners = middleware.NewOutputOwners(func(ctx context.Context, maxItems int) ([]middleware.PromptOutputs, error) {
		// The read runs for every request waiting on it, not for one.
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return readHistoryOutputs(ctx, client, historyURL, s.queueKey, maxItems)
	}, func(ctx context.Context) (map[string]bool, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		raw, err := readComfyAnswer(ctx, client, &queueURL, "to tell who has a prompt running")
		if err != nil {
			return nil, err
		}
		return middleware.RunningUsers(raw, s.queueKey)
	})
	s.ownPrompts = middleware.OwnPrompts(middleware.OwnPromptsOptions{
		Key:     s.queueKey,
		Outputs: s.outputOwners,
		Queue: func(ctx context.Context) ([]byte, error) {
			return readComfyAnswer(ctx, client, &queueURL, "to tell the caller's queued prompts from others'")
		},
		History: func(ctx context.Context) ([]byte, error) {
			return readComfyAnswer(ctx, client, &historyURL, "to tell the caller's history from others'")
		},
		Failed: func(w http.ResponseWriter, r *http.Request, err error) {
			s.refuseUnchecked(w, r, err, uncheckedAnswer{
				check: "own prompts", code: middleware.CodeOwnPromptsUnchecked,
				what:    "ComfyUI's queue or history could not be read to tell this user's prompts from others'",
				outcome: "nothing was done or shown",
			})
		},
	})
}

// readComfyAnswer is a GET of u (ComfyUI's /queue or /history), read whole
// up to MaxOwnAnswerBytes; why completes the error sentence.
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

// readHistoryOutputs is ComfyUI's GET /history (its newest maxItems
// entries when maxItems > 0), each entry's verified user and output files.
// It is the one place the /view check reads ComfyUI's history.
func readHistoryOutputs(ctx context.Context, client *http.Client, u url.URL, key []byte, maxItems int) ([]middleware.PromptOutputs, error) {
	if maxItems > 0 {
		u.RawQuery = "max_items=" + strconv.Itoa(maxItems)
	}
	raw, err := readComfyAnswer(ctx, client, &u, "to tell whose outputs /view serves")
	if err != nil {
		return nil, err
	}
	return middleware.HistoryOutputs(raw, key)
}

// uncheckedAnswer is what a check that reads ComfyUI's queue or history
// (the queue share, own prompts) says when it could not.
type uncheckedAnswer struct {
	check   string // names the check in the log's reason
	code    middleware.RefusalCode
	what    string // what could not be done, as a sentence's start
	outcome string // what became of the request
}

// refuseUnchecked answers a request a check could not judge because
// ComfyUI's answer could not be read: ComfyUI down or slow as the proxy
// says it, else 502 with a.code. Nothing is passed on or shown unchecked.
func (s *Server) refuseUnchecked(w http.ResponseWriter, r *http.Request, err error, a uncheckedAnswer) {
	info := middleware.InfoFrom(r)
	if r.Context().Err() != nil {
		info.Reason = "client closed the request"
		w.WriteHeader(499)
		return
	}
	w.Header().Set("Retry-After", "5")
	var re *registryError
	if errors.As(err, &re) {
		info.Reason = a.check + ": " + re.reason
		middleware.Refuse(w, r, re.status, re.code, "The queue could not be checked.", re.reason+" "+sentence(a.outcome)+".")
		return
	}
	info.Reason = a.check + ": " + err.Error()
	s.logger.Warn().Err(err).Str("check", a.check).Msg(a.what)
	middleware.Refuse(w, r, http.StatusBadGateway, a.code, "The queue could not be checked.",
		a.what+" ("+err.Error()+"); "+a.outcome+"; retry, and check ComfyUI's log")
}

// sentence is s with its first letter in upper case.
func sentence(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
