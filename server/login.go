package server

import (
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/comfyui-auth/comfyui-auth/hashstore"
	"github.com/comfyui-auth/comfyui-auth/middleware"
)

// Paths the gateway serves itself.
const (
	loginPath        = "/login"
	logoutPath       = "/logout"
	guestModePath    = "/guest_mode"
	assetPrefix      = "/comfyui-auth/"
	logoutScriptPath = assetPrefix + "logout.js"
)

//go:embed web/*.html web/*.css web/*.js
var webFS embed.FS

var loginTemplate = template.Must(template.ParseFS(webFS, "web/login.html"))

// contentSecurityPolicy allows nothing but our own files: no inline script
// or style, no framing (clickjacking), and forms post only to us.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// loginPage is what login.html shows.
type loginPage struct {
	Username      string
	Wrong         bool
	LockedSeconds int
	Busy          bool
	Guest         bool
	NoCredential  bool
	HashFile      string
	Next          string
	// Named is set when the credentials have named users, whose username
	// field is not optional.
	Named bool
	// Code is the refusal code of a page answered with an error status.
	Code middleware.RefusalCode
}

// guestEnabled reports guest mode: the setting, or a GUEST_MODE file next to
// the hash file as ComfyUI-Login has it (checked on each call, so creating
// or removing the file takes effect at once).
func (s *Server) guestEnabled() bool {
	if s.cfg.GuestMode {
		return true
	}
	if s.cfg.HashFile == "" {
		return false
	}
	_, err := os.Stat(filepath.Join(filepath.Dir(s.cfg.HashFile), "GUEST_MODE"))
	return err == nil
}

// loginToken is what the login form's fields are checked as. A username
// that names a user in the credentials loaded now makes the token
// `username:password`, checked against that user's lines only; any other
// username is ComfyUI-Login's display name, which its login ignores, and the
// password alone is checked against the bare lines, as there.
func (s *Server) loginToken(username, password string) string {
	if username != "" && (storeUsers{s.store}).HasUser(username) {
		return username + ":" + password
	}
	return password
}

// client is r's Client, as ResolveClient resolved it.
func (s *Server) client(r *http.Request) middleware.Client {
	return middleware.ClientOf(r, s.clients)
}

func safeNext(p string) string {
	if middleware.SafeNextPath(p) && p != loginPath && p != logoutPath {
		return p
	}
	return ""
}

func (s *Server) handleLoginPage(w http.ResponseWriter, r *http.Request) {
	middleware.InfoFrom(r).Method = middleware.MethodPublic
	next := safeNext(r.URL.Query().Get("next"))
	if sess, ok := s.sessions.Current(r); ok && !sess.Guest {
		http.Redirect(w, r, orRoot(next), http.StatusFound)
		return
	}
	page := loginPage{
		Wrong: r.URL.Query().Get("wrong_password") == "1",
		Guest: s.guestEnabled(),
		Next:  next,
	}
	status := http.StatusOK
	if s.limiter != nil {
		if d, blocked := s.limiter.Locked(s.client(r).SameSiteKey()); blocked {
			page.LockedSeconds = max(1, int((d+time.Second-1)/time.Second))
			page.Wrong = false
		}
	}
	s.renderLogin(w, r, page, status)
}

func orRoot(next string) string {
	if next == "" {
		return "/"
	}
	return next
}

// wantsJSON reports whether the client asked for JSON rather than a page:
// scripts that post the login form get the refusal body every other
// refusal has, with its code.
func wantsJSON(r *http.Request) bool {
	a := r.Header.Get("Accept")
	return strings.Contains(a, "application/json") && !strings.Contains(a, "text/html")
}

// refuseLogin answers a login the gateway turned away (page.Code says why):
// the login page with its message and the code for browsers, the JSON
// refusal body for clients that asked for JSON.
func (s *Server) refuseLogin(w http.ResponseWriter, r *http.Request, page loginPage, status int) {
	if !wantsJSON(r) {
		middleware.NoteCode(r, page.Code)
		s.renderLogin(w, r, page, status)
		return
	}
	errText, reason := "Server busy verifying credentials; retry shortly.", "the password has not been checked yet; send the form again in a few seconds"
	switch page.Code {
	case middleware.CodeLockedOut:
		errText, reason = "Too many failed attempts.", fmt.Sprintf("too many wrong passwords from this address; retry after %d seconds with the right password", page.LockedSeconds)
	case middleware.CodeGuestLoginLimited:
		errText, reason = "Too many guest logins.", fmt.Sprintf("too many guest sessions started from this address; retry after %d seconds", page.LockedSeconds)
	case middleware.CodeCredentialsReloaded:
		errText, reason = "Credentials changed during the check.", "the credentials were reloaded while the password was checked; send the form again"
	}
	middleware.Refuse(w, r, status, page.Code, errText, reason)
}

// renderLogin fills the parts of the page that come from the store: the
// greeting and the no-credential explanation.
func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, page loginPage, status int) {
	if snap := s.store.Snapshot(); snap != nil {
		// The vetted name only: a username line that is really the
		// password must never reach this public page. COMFYUI_USERNAME
		// stands in only when the credentials carry no name at all (with
		// COMFYUI_PASSWORD it is their name, and vetted as such).
		page.Username = s.store.DisplayName()
		if snap.Creds.Username == "" {
			page.Username = s.cfg.Username
		}
		page.Named = len(snap.UserNames()) > 0
	} else {
		page.NoCredential = true
		page.HashFile = s.cfg.HashFile
		page.Username = s.cfg.Username
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	if err := loginTemplate.Execute(w, page); err != nil {
		s.logger.Error().Err(err).Msg("rendering the login page")
	}
}

// handleLogin checks the password of POST /login (see loginToken for what
// the username field does); it goes through the bounded bcrypt pool, so the
// hash string itself is not a password and a flood of attempts cannot stall
// ComfyUI.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	info := middleware.InfoFrom(r)
	info.Method = middleware.MethodPublic
	if s.client(r).CrossSite {
		// Another site's page posting here (an auto-submitted form) is
		// never a login, and must not count toward its visitor's lock.
		info.Reason = "login: cross-site form refused"
		info.Refusal = middleware.RefusalCrossSite
		const msg = "This login form was sent from another site, so it was refused. Open the gateway's own login page and sign in there."
		if wantsJSON(r) {
			middleware.Refuse(w, r, http.StatusForbidden, middleware.CodeCrossSite, "Forbidden.", msg)
			return
		}
		middleware.NoteCode(r, middleware.CodeCrossSite)
		h := w.Header()
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, msg+"\ncode: "+string(middleware.CodeCrossSite)+"\n")
		return
	}
	if !s.readLoginForm(w, r) {
		return
	}
	middleware.ForgetRequestIDIf(w, r, r.PostForm.Get("password"))
	next := safeNext(r.PostForm.Get("next"))
	client := s.client(r)

	if r.PostForm.Get("guest_mode") == "1" {
		s.handleGuestLogin(w, r, next)
		return
	}

	password := s.loginToken(r.PostForm.Get("username"), r.PostForm.Get("password"))
	if s.limiter != nil {
		if d, blocked := s.limiter.Locked(client.Key()); blocked {
			// A password already verified and cached costs no bcrypt, so a
			// locked address (a shared NAT, the Docker bridge) may still
			// use it, within the lock's budget of distinct guesses.
			cached, hit := s.verifier.Cached(password)
			if !s.limiter.LockedToken(client.Key(), password, hit) {
				info.Reason = "login: throttled"
				info.Refusal = middleware.RefusalLocked
				w.Header().Set("Retry-After", fmt.Sprint(max(1, int((d+time.Second-1)/time.Second))))
				s.refuseLogin(w, r, loginPage{LockedSeconds: max(1, int((d+time.Second-1)/time.Second)), Guest: s.guestEnabled(), Next: next, Code: middleware.CodeLockedOut}, http.StatusTooManyRequests)
				return
			}
			s.loggedIn(w, r, client, next, cached)
			return
		}
	}

	res := s.verifier.VerifyFor(r.Context(), client.Key().String(), password)
	if _, ok := s.matchedHash(res); res.Outcome == hashstore.Match && !ok {
		// The credentials were reloaded during the check: check again
		// against those in force, so the session is bound to a line that is.
		res = s.verifier.VerifyFor(r.Context(), client.Key().String(), password)
	}
	switch res.Outcome {
	case hashstore.Match:
		s.loggedIn(w, r, client, next, res)
	case hashstore.Busy, hashstore.ClientBusy:
		if res.Outcome == hashstore.ClientBusy && s.limiter != nil {
			// Several different passwords at once from one address.
			s.limiter.Failed(client.Key())
		}
		info.Reason = "login: bcrypt pool busy"
		info.Refusal = middleware.RefusalShed
		code := middleware.CodePoolBusy
		if res.Outcome == hashstore.ClientBusy {
			info.Refusal = middleware.RefusalClientBusy
			code = middleware.CodeClientBusy
		}
		w.Header().Set("Retry-After", "2")
		s.refuseLogin(w, r, loginPage{Busy: true, Guest: s.guestEnabled(), Next: next, Code: code}, http.StatusServiceUnavailable)
	case hashstore.NoCredentials:
		info.Reason = "login: no credential configured"
		http.Redirect(w, r, loginPath, http.StatusFound)
	default:
		if s.limiter != nil {
			s.limiter.Failed(client.Key())
		}
		info.Reason = "login: wrong password"
		s.logger.Warn().Str("client", client.Addr.String()).Msg("browser login failed: wrong password")
		to := loginPath + "?wrong_password=1"
		if next != "" {
			to += "&next=" + url.QueryEscape(next)
		}
		http.Redirect(w, r, to, http.StatusFound)
	}
}

// loggedIn issues the session for a right password, bound to the hash line
// it matched. Should the credentials have been reloaded since the check, the
// browser is asked to retry rather than get a session bound to a line that
// may be gone.
func (s *Server) loggedIn(w http.ResponseWriter, r *http.Request, client middleware.Client, next string, res hashstore.Result) {
	hash, ok := s.matchedHash(res)
	if !ok {
		info := middleware.InfoFrom(r)
		info.Reason = "login: credentials reloaded during the check"
		w.Header().Set("Retry-After", "1")
		s.refuseLogin(w, r, loginPage{Busy: true, Guest: s.guestEnabled(), Next: next, Code: middleware.CodeCredentialsReloaded}, http.StatusServiceUnavailable)
		return
	}
	sess := s.sessions.IssueUser(w, r, hash)
	info := middleware.InfoFrom(r)
	info.Generation = res.Generation
	info.User = middleware.ResultUser(res)
	s.logger.Info().Str("client", client.Addr.String()).Str("user", info.User).Str("session", hex.EncodeToString(sess.ID[:4])).
		Uint64("generation", res.Generation).Msg("browser login")
	http.Redirect(w, r, orRoot(next), http.StatusFound)
}

// handleLogout ends the session for good: the cookie value is revoked until
// it would have expired, so a copy of it no longer works, before or after a
// restart (see Sessions.End; a failure to keep it on disk is logged there).
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	middleware.InfoFrom(r).Method = middleware.MethodPublic
	_ = s.sessions.End(w, r)
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, loginPath, http.StatusFound)
}

// handleGuestMode tells the frontend whether this browser is a guest.
func (s *Server) handleGuestMode(w http.ResponseWriter, r *http.Request) {
	middleware.InfoFrom(r).Method = middleware.MethodPublic
	sess, ok := s.sessions.Current(r)
	middleware.WriteJSON(w, http.StatusOK, map[string]bool{"guestMode": ok && sess.Guest})
}

// handleAsset serves the embedded stylesheet and the logout extension. They
// are public: neither holds anything secret, and the login page needs its
// stylesheet before anyone is logged in.
func handleAsset(w http.ResponseWriter, r *http.Request) {
	middleware.InfoFrom(r).Method = middleware.MethodPublic
	name := strings.TrimPrefix(r.URL.Path, assetPrefix)
	if name == "" || strings.ContainsAny(name, "/\\") || strings.HasSuffix(name, ".html") {
		http.NotFound(w, r)
		return
	}
	data, err := webFS.ReadFile(path.Join("web", name))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	switch path.Ext(name) {
	case ".css":
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
	case ".js":
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(data)
	}
}
