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
	base := *s.upstream
	base.Path, base.RawPath, base.RawQuery, base.Fragment = "", "", "", ""
	open := func(ctx context.Context, target, why string) (io.ReadCloser, error) {
		u, err := url.Parse(base.String() + target)
		if err != nil || !strings.HasPrefix(target, "/") {
			return nil, fmt.Errorf("GET %q: not a path of ComfyUI's", target)
		}
		return openComfyAnswer(ctx, client, u, why)
	}
	// The owner index's reads run for every request waiting on them, not
	// for one, so no client's leaving ends them: each is bound as a whole
	// by --upstream-timeout instead.
	timeout := s.cfg.UpstreamTimeout
	s.outputOwners = middleware.NewOutputOwners(func(ctx context.Context, maxItems int) ([]middleware.PromptOutputs, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		target := "/history"
		if maxItems > 0 {
			target += "?max_items=" + strconv.Itoa(maxItems)
		}
		body, err := open(ctx, target, "to tell whose outputs /view serves")
		if err != nil {
			return nil, err
		}
		defer body.Close()
		return middleware.HistoryOutputs(body, s.queueKey)
	}, func(ctx context.Context) (map[string]bool, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		body, err := open(ctx, "/queue", "to tell who has a prompt running")
		if err != nil {
			return nil, err
		}
		defer body.Close()
		return middleware.RunningUsers(body, s.queueKey)
	})
	s.ownPrompts = middleware.OwnPrompts(middleware.OwnPromptsOptions{
		Key:        s.queueKey,
		MaxOwnView: ownViewBytes,
		Outputs:    s.outputOwners,
		Open: func(ctx context.Context, target string) (io.ReadCloser, error) {
			return open(ctx, target, "to tell the caller's prompts from others'")
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

// ownViewBytes bounds the caller's own items a per-user view of the
// queue or history holds (middleware.MaxOwnViewBytes); tests lower it.
var ownViewBytes = middleware.MaxOwnViewBytes

// openComfyAnswer is a GET of u (ComfyUI's /queue or /history), whose
// body the caller streams and closes; why completes the error sentence.
// Only the response headers are bound in time (--upstream-timeout): a
// large answer takes as long as ComfyUI takes to send it, and the reader
// waits as long as the client does.
func openComfyAnswer(ctx context.Context, client *http.Client, u *url.URL, why string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, upstreamCallError(err, why)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s answered %d", u.Path, resp.StatusCode)
	}
	if enc := resp.Header.Get("Content-Encoding"); enc != "" && enc != "identity" {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s is encoded with %s", u.Path, enc)
	}
	return &answerBody{resp.Body, why}, nil
}

// answerBody reports a read error of ComfyUI's answer as a failed call to
// ComfyUI (502 upstream_down, 504 upstream_timeout), not as an answer
// that is not ComfyUI's.
type answerBody struct {
	io.ReadCloser
	why string
}

func (b *answerBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = upstreamCallError(err, b.why)
	}
	return n, err
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
