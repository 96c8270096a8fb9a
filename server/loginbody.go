package server

import (
	"errors"
	"html/template"
	"net/http"
	"os"
	"time"

	"github.com/comfyui-auth/comfyui-auth/middleware"
)

// Bounds on the POST /login body. The form has a password, a username, a
// `next` path and a guest flag: a few hundred bytes from a real browser.
const (
	// loginBodyMax is the largest login form read; a bigger one gets 413
	// without being read (a declared Content-Length above it is refused
	// before reading anything).
	loginBodyMax = 4 << 10
	// loginReadTimeout bounds how long the form may take to arrive once
	// the headers are in; a slower one gets 408.
	loginReadTimeout = 10 * time.Second
)

var loginErrorTemplate = template.Must(template.New("loginerror").Parse(`<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Login form not accepted</title>
<link rel="stylesheet" href="/comfyui-auth/login.css"></head><body><main data-code="{{.Code}}">
<h1>Login form not accepted</h1><p>{{.Msg}}</p><p><a href="/login">Back to the login page</a></p>
<p class="hint">code: {{.Code}}</p>
</main></body></html>
`))

type loginErrorPage struct {
	Msg  string
	Code middleware.RefusalCode
}

// readLoginForm reads the POST /login form within loginBodyMax bytes and
// the read timeout, and answers 413, 408 or 400 itself when it cannot; it
// reports whether the form is in r.PostForm. The read deadline is lifted
// again once the form is in, so a slow bcrypt queue cannot trip it.
func (s *Server) readLoginForm(w http.ResponseWriter, r *http.Request) bool {
	info := middleware.InfoFrom(r)
	if r.ContentLength > loginBodyMax {
		info.Reason = "login: form too large"
		s.loginError(w, r, http.StatusRequestEntityTooLarge, middleware.CodeLoginFormTooLarge, "The login form is larger than the gateway accepts (4 KiB). Reload the login page and try again; a script should send only the password field.")
		return false
	}
	timeout := s.cfg.loginReadTimeout
	if timeout <= 0 {
		timeout = loginReadTimeout
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(timeout))
	r.Body = http.MaxBytesReader(w, r.Body, loginBodyMax)
	err := r.ParseForm()
	_ = rc.SetReadDeadline(time.Time{})
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return true
	case errors.As(err, &tooBig):
		info.Reason = "login: form too large"
		s.loginError(w, r, http.StatusRequestEntityTooLarge, middleware.CodeLoginFormTooLarge, "The login form is larger than the gateway accepts (4 KiB). Reload the login page and try again; a script should send only the password field.")
	case errors.Is(err, os.ErrDeadlineExceeded):
		info.Reason = "login: form not received in time"
		s.loginError(w, r, http.StatusRequestTimeout, middleware.CodeLoginFormTimeout, "The login form did not arrive within "+timeout.String()+". Check your connection and try again.")
	default:
		info.Reason = "login: unreadable form"
		s.loginError(w, r, http.StatusBadRequest, middleware.CodeLoginFormUnreadable, "The login form could not be read; reload the page and try again.")
	}
	return false
}

// loginError answers a login form that could not be read with a short page.
func (s *Server) loginError(w http.ResponseWriter, r *http.Request, status int, code middleware.RefusalCode, msg string) {
	if wantsJSON(r) {
		middleware.Refuse(w, r, status, code, "Login form not accepted.", msg)
		return
	}
	middleware.NoteCode(r, code)
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = loginErrorTemplate.Execute(w, loginErrorPage{Msg: msg, Code: code})
}
