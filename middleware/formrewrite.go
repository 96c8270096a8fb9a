package middleware

import (
	"errors"
	"io"
	"net/http"
	"sync"
)

// serveRewrittenForm passes r on to next with its body replaced by what
// rewrite writes as it reads the original: the form streams through, never
// buffered whole. A refusal (an error of type E from rewrite) cuts the body
// short, so ComfyUI, which reads a whole form before writing anything,
// stores nothing; the client then gets refuse's answer in place of the
// proxy's 502 for the cut body, or after ComfyUI answered, if the refusal
// came too late to replace an answer already started.
func serveRewrittenForm[E error](w http.ResponseWriter, r *http.Request, next http.Handler,
	rewrite func(dst io.Writer) error, refuse func(w http.ResponseWriter, e E)) {
	pr, pw := io.Pipe()
	var (
		mu      sync.Mutex
		refusal E
		refused bool
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := rewrite(pw)
		var e E
		if errors.As(err, &e) {
			mu.Lock()
			refusal, refused = e, true
			mu.Unlock()
		}
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		pw.Close()
	}()
	r2 := r.Clone(r.Context())
	r2.Body = pr
	r2.ContentLength = -1
	r2.Header.Del("Content-Length")
	// The body is the rewrite, in plain bytes: ComfyUI must not inflate it.
	r2.Header.Del("Content-Encoding")
	cw := &refusalWriter{ResponseWriter: w, refusal: func() (func(), bool) {
		mu.Lock()
		defer mu.Unlock()
		e := refusal
		return func() { refuse(w, e) }, refused
	}}
	next.ServeHTTP(cw, r2)
	pr.CloseWithError(io.ErrClosedPipe) // ComfyUI answered early: stop reading
	<-done
	if !cw.wrote {
		if answer, ok := cw.refusal(); ok {
			answer()
		}
	}
}

// refusalWriter lets the proxy's answer through unless the form was
// refused, in which case the refusal is written instead of the 502 the
// proxy would give for a body cut short.
type refusalWriter struct {
	http.ResponseWriter
	// refusal says whether the form was refused, and how to answer it.
	refusal func() (answer func(), refused bool)
	wrote   bool
	swallow bool
}

func (c *refusalWriter) WriteHeader(code int) {
	if c.wrote {
		return
	}
	c.wrote = true
	if answer, ok := c.refusal(); ok {
		c.swallow = true
		answer()
		return
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *refusalWriter) Write(p []byte) (int, error) {
	if !c.wrote {
		c.WriteHeader(http.StatusOK)
	}
	if c.swallow {
		return len(p), nil
	}
	return c.ResponseWriter.Write(p)
}

func (c *refusalWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
