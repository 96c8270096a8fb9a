package middleware

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// CloseUnreadBody makes every answer the gateway gives itself to a request
// whose body it did not read (a 401, 403, 405, 429 or 503 refusal, a guest's
// `{}`, a login page error) leave at once and close the connection.
//
// Without it, net/http tries to read up to 256 KiB of the unread body before
// writing the answer, with no deadline: a client announcing a body it never
// sends holds the connection, and its descriptor, for ever. When the
// handler writes its status and the body has not been read to the end, this
// wrapper sets `Connection: close`, which stops net/http draining before the
// answer, and moves the connection's read deadline to the past, which stops
// the drain after it; the answer is written and the connection closed.
//
// Requests handed to ComfyUI (Info.Forwarded) are left alone: the proxy
// streams their body while the answer may already be coming back. Only
// HTTP/1.x needs this; an HTTP/2 stream's unread body is dropped by the
// stream reset, without holding the connection.
func CloseUnreadBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 1 || r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		body := &watchedBody{ReadCloser: r.Body}
		r.Body = body
		next.ServeHTTP(&closeUnreadWriter{ResponseWriter: w, r: r, body: body}, r)
	})
}

// watchedBody remembers whether the body was read to its end.
type watchedBody struct {
	io.ReadCloser
	sawEOF atomic.Bool
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.sawEOF.Store(true)
	}
	return n, err
}

type closeUnreadWriter struct {
	http.ResponseWriter
	r     *http.Request
	body  *watchedBody
	wrote bool
}

// aLongTimeAgo is a read deadline that has passed: reads fail at once.
var aLongTimeAgo = time.Unix(1, 0)

func (w *closeUnreadWriter) WriteHeader(code int) {
	if !w.wrote && code >= 200 {
		w.wrote = true
		if !w.body.sawEOF.Load() && !InfoFrom(w.r).Forwarded {
			w.Header().Set("Connection", "close")
			_ = http.NewResponseController(w.ResponseWriter).SetReadDeadline(aLongTimeAgo)
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *closeUnreadWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

func (w *closeUnreadWriter) Flush() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *closeUnreadWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *closeUnreadWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
