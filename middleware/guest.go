package middleware

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// GuestOptions configures GuestPolicy.
type GuestOptions struct {
	// SessionID returns the guest's session ID (from its cookie); ok is
	// false when the request has no valid session.
	SessionID func(r *http.Request) (id [16]byte, ok bool)
	// Key keys the HMAC that derives a guest's ComfyUI client ids from its
	// session, so no one without it can compute another guest's ids.
	Key []byte
}

// GuestPolicy limits guest sessions, and only them, to what the login page
// promises: look, queue prompts, upload new input images. Everything else is
// answered by the gateway and never reaches ComfyUI.
//
// Looking is GET and HEAD of ComfyUI's own read routes (guestReads) and of
// static files; custom nodes' routes are refused, because some of them act
// on GET (ComfyUI-Manager's reboot and queue start, for one).
// /userdata (saved workflows, user files), /internal (logs, paths) and
// every write but the two below are refused with 403 and a JSON reason.
//
// Settings are answered by the gateway, as ComfyUI answers a user who has
// none: reads get 200 `{}` (GET /settings) or `null` (GET /settings/{id}),
// writes 200 `{}`. Without ComfyUI's multi-user mode its settings are the
// operator's, a free-form store any frontend extension writes into (some
// keep API keys there), and not part of looking; the frontend starts from
// its defaults on `{}`, as for any new user. Writes are answered rather
// than refused because the frontend saves settings by itself as the guest
// moves panels around, and would show an error for each; the guest's
// settings simply are not kept.
//
// Queueing (POST /prompt): the body must be a JSON object of at most
// MaxGuestPromptBytes; `client_id` is replaced by one derived from the
// guest's session, and `number`, `front` and `prompt_id` are dropped, so a
// guest's prompt goes to the back of the queue and cannot replace another
// prompt's history entry. A queued prompt runs whatever installed nodes it
// names: that is ComfyUI's own trust model, see README.
//
// Uploading (POST /upload/image): see guardUpload.
//
// Client ids: a guest's websocket `clientId` is replaced by the derived id,
// and `client_id` and comfy.org credentials are removed from other clients'
// entries in /queue and /history answers, so a guest can neither learn nor
// use another client's id to receive its progress and previews.
//
// /api/ twins get exactly the same answers.
func GuestPolicy(opts GuestOptions) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			info := InfoFrom(r)
			if info.Method != MethodGuest {
				next.ServeHTTP(w, r)
				return
			}
			id, ok := opts.SessionID(r)
			if !ok {
				refuseGuest(w, r, "the guest session could not be read")
				return
			}
			g := guestClient{prefix: guestPrefix(opts.Key, id)}
			rule, reason := guestRuleFor(r.Method, r.URL.EscapedPath())
			switch rule {
			case guestRead:
				next.ServeHTTP(w, r)
			case guestWebsocket:
				r2 := r.Clone(r.Context())
				r2.URL.RawQuery = setClientID(r.URL.RawQuery, g.id(r.URL.Query().Get("clientId")))
				r2.RequestURI = r2.URL.RequestURI()
				next.ServeHTTP(w, r2)
			case guestRedacted:
				serveRedacted(w, r, next, g)
			case guestPrompt:
				servePrompt(w, r, next, g)
			case guestUpload:
				guardUpload(w, r, next)
			case guestSettingsRead:
				info.Reason = "guest: settings are not shown, answered {}"
				answerGuestSettings(w, "{}")
			case guestSettingRead:
				info.Reason = "guest: settings are not shown, answered null"
				answerGuestSettings(w, "null")
			case guestSettingsWrite:
				info.Reason = "guest: settings are not saved, answered {}"
				answerGuestSettings(w, "{}")
			default:
				refuseGuest(w, r, reason)
			}
		})
	}
}

// guestPromise is the sentence every refusal ends with.
const guestPromise = "guests may look, queue prompts and upload new input images; log in with the password for anything else"

// answerGuestSettings answers a guest's settings request with body, never
// cached: the same browser may log in with the password next.
func answerGuestSettings(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(body))
}

func refuseGuest(w http.ResponseWriter, r *http.Request, reason string) {
	InfoFrom(r).Reason = "guest: " + reason
	Refuse(w, r, http.StatusForbidden, CodeGuestForbidden, "Forbidden for guests.", reason+"; "+guestPromise)
}

type guestRule int

const (
	guestRefused guestRule = iota
	guestRead
	guestWebsocket
	guestRedacted
	guestPrompt
	guestUpload
	guestSettingsRead // GET /settings
	guestSettingRead  // GET /settings/{id}
	guestSettingsWrite
)

// guestReads are ComfyUI 0.3.64's read routes a visitor's page uses, by
// their path without /api. A value of true means one more path segment
// follows (/history/{prompt_id}); prefixes are in guestReadPrefixes.
var guestReads = map[string]bool{
	"/": false, "/embeddings": false, "/models": false, "/extensions": false, "/view": false,
	"/system_stats": false, "/features": false, "/prompt": false, "/object_info": false,
	"/users": false, "/i18n": false, "/workflow_templates": false,
	"/experiment/models": false,
	"/models/":           true, "/object_info/": true, "/history/": true,
	"/view_metadata/": true, "/experiment/models/": true,
}

// guestReadPrefixes are read routes with a free tail: model previews and
// custom nodes' example workflows.
var guestReadPrefixes = []string{"/experiment/models/preview/", "/workflow_templates/"}

// staticSuffixes are the files a frontend loads from web.static: the app,
// its fonts and images, extensions' scripts, templates and docs.
var staticSuffixes = []string{
	".js", ".mjs", ".css", ".map", ".json", ".ico", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp",
	".avif", ".woff", ".woff2", ".ttf", ".otf", ".wasm", ".txt", ".md",
}

// guestRuleFor decides what a guest's request is, from its method and raw
// path; the reason explains a refusal.
func guestRuleFor(method, path string) (guestRule, string) {
	path, ok := comfyPath(path)
	if !ok {
		return guestRefused, "the path is not validly percent-encoded"
	}
	// Reasons name the path without /api, so both twins answer alike.
	core, api := path, false
	if rest, ok := strings.CutPrefix(path, "/api/"); ok {
		core, api = "/"+rest, true
	}
	if strings.Contains(core, "..") || strings.Contains(core, "//") {
		return guestRefused, "the path " + core + " is not one a visitor's page uses"
	}
	lower := strings.ToLower(core)
	switch {
	case strings.HasPrefix(lower, "/userdata") || strings.HasPrefix(lower, "/v2/userdata"):
		return guestRefused, method + " " + core + ": saved workflows and user files are closed to guests"
	case strings.HasPrefix(lower, "/internal"):
		return guestRefused, method + " " + core + ": ComfyUI's logs and internal routes are closed to guests"
	}
	// Settings come first, before static files: /settings/{id} takes any
	// one segment, /settings/Comfy.x.json included.
	if settings, one := settingsRoute(core); settings {
		switch {
		case method == http.MethodPost:
			return guestSettingsWrite, ""
		case (method == http.MethodGet || method == http.MethodHead) && one:
			return guestSettingRead, ""
		case method == http.MethodGet || method == http.MethodHead:
			return guestSettingsRead, ""
		}
	}
	switch method {
	case http.MethodGet, http.MethodHead:
		switch core {
		case "/ws":
			return guestWebsocket, ""
		case "/queue", "/history":
			return guestRedacted, ""
		}
		if strings.HasPrefix(core, "/history/") && !strings.Contains(core[len("/history/"):], "/") {
			return guestRedacted, ""
		}
		if readable(core) || !api && staticFile(core) {
			return guestRead, ""
		}
		return guestRefused, method + " " + core + " is not one of ComfyUI's read routes or a static file (custom nodes' routes are closed to guests)"
	case http.MethodPost:
		switch {
		case core == "/prompt":
			return guestPrompt, ""
		case core == "/upload/image":
			return guestUpload, ""
		}
	}
	return guestRefused, method + " " + core + " changes ComfyUI"
}

// settingsRoute reports whether core is one of ComfyUI's settings routes:
// /settings, or /settings/{id} (one, for any single segment).
func settingsRoute(core string) (settings, one bool) {
	if core == "/settings" {
		return true, false
	}
	id, ok := strings.CutPrefix(core, "/settings/")
	return ok && !strings.Contains(id, "/"), true
}

// comfyPath decodes an escaped request path as ComfyUI's router (aiohttp
// 3.11, yarl's path_safe) does before matching routes: every escape but %2F
// and %25, so /userdat%61 is /userdata there and must be judged as such
// here. ok is false for a malformed escape.
func comfyPath(escaped string) (string, bool) {
	if !strings.Contains(escaped, "%") {
		return escaped, true
	}
	var b strings.Builder
	for i := 0; i < len(escaped); i++ {
		if escaped[i] != '%' {
			b.WriteByte(escaped[i])
			continue
		}
		if i+2 >= len(escaped) || !isHexDigit(escaped[i+1]) || !isHexDigit(escaped[i+2]) {
			return "", false
		}
		c := unhex(escaped[i+1])<<4 | unhex(escaped[i+2])
		if c == '/' || c == '%' {
			b.WriteString(strings.ToUpper(escaped[i : i+3]))
		} else {
			b.WriteByte(c)
		}
		i += 2
	}
	return b.String(), true
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

func readable(core string) bool {
	if one, ok := guestReads[core]; ok && !one {
		return true
	}
	for p, one := range guestReads {
		if one && strings.HasPrefix(core, p) && len(core) > len(p) && !strings.Contains(core[len(p):], "/") {
			return true
		}
	}
	for _, p := range guestReadPrefixes {
		if strings.HasPrefix(core, p) && len(core) > len(p) {
			return true
		}
	}
	return false
}

func staticFile(core string) bool {
	lower := strings.ToLower(core)
	for _, s := range staticSuffixes {
		if strings.HasSuffix(lower, s) {
			return true
		}
	}
	return false
}

// guestClient derives a guest's ComfyUI client ids. Every id is
// "guest-<prefix>-<16 hex>", where prefix is an HMAC of the session ID:
// other guests cannot compute it, and each tab of one guest still gets its
// own id (from the id it asked for), so tabs do not steal each other's
// progress. An id that already carries this session's prefix is kept, so
// the id ComfyUI hands back in its status frame survives reconnects.
type guestClient struct{ prefix string }

func guestPrefix(key []byte, session [16]byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("comfyui-auth guest client id\x00"))
	m.Write(session[:])
	return hex.EncodeToString(m.Sum(nil)[:12])
}

func (g guestClient) id(asked string) string {
	mine := "guest-" + g.prefix + "-"
	if rest, ok := strings.CutPrefix(asked, mine); ok && len(rest) == 16 && isHex(rest) {
		return asked
	}
	sum := sha256.Sum256([]byte(asked))
	return mine + hex.EncodeToString(sum[:8])
}

// owns reports whether id is one of this guest's.
func (g guestClient) owns(id string) bool {
	return g.id(id) == id
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// setClientID replaces every clientId parameter of a raw query with one,
// keeping the other parameters as the client encoded them. aiohttp reads the
// first of several, so none of the guest's may survive.
func setClientID(raw, id string) string {
	kept := []string{}
	for _, p := range strings.Split(raw, "&") {
		if p == "" {
			continue
		}
		key, _, _ := strings.Cut(p, "=")
		if k, err := url.QueryUnescape(key); err == nil && k == "clientId" || key == "clientId" {
			continue
		}
		kept = append(kept, p)
	}
	return strings.Join(append(kept, "clientId="+url.QueryEscape(id)), "&")
}

// guestErr is a guest request the gateway answers itself, with its status.
type guestErr struct {
	status int
	reason string
}

func (e *guestErr) Error() string { return fmt.Sprintf("%d: %s", e.status, e.reason) }

func writeGuestErr(w http.ResponseWriter, r *http.Request, e *guestErr) {
	if e.status == http.StatusForbidden {
		refuseGuest(w, r, e.reason)
		return
	}
	InfoFrom(r).Reason = "guest: " + e.reason
	code := CodeGuestBadRequest
	switch e.status {
	case http.StatusRequestEntityTooLarge:
		code = CodeGuestTooLarge
	case http.StatusBadGateway:
		code = CodeGuestUnchecked
	}
	Refuse(w, r, e.status, code, http.StatusText(e.status)+".", e.reason)
}
