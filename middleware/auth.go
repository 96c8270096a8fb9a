package middleware

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/rs/zerolog"
)

// AuthOptions configures Auth. The token fields build the built-in
// authenticators (see Auth); Extra adds more.
type AuthOptions struct {
	Hashes   HashMatcher
	Verifier RawVerifier
	// Users names the users of the credentials loaded now, for the Basic
	// header's name; nil means there are none.
	Users UserDirectory
	// AcceptHashToken lets the hash string itself in as a token.
	AcceptHashToken bool
	// Sessions, when set, recognises a browser session (the cookie /login
	// sets, since the ComfyUI frontend sends no Authorization header). It
	// is consulted after Bearer and query tokens.
	Sessions Authenticator
	// Extra authenticators are asked after the built-in ones, in order.
	Extra []Authenticator
	// PublicPaths are exact raw paths that skip auth (login, logout).
	PublicPaths map[string]bool
	// LoginPath is where browsers without credentials are sent; empty means
	// browsers get the JSON 401 like everyone else.
	LoginPath string
	// Throttle, when set, is consulted before any raw-token bcrypt work and
	// told about raw tokens that were checked and did not match. The hash
	// token and sessions never reach it.
	Throttle Throttler
	// Trusted and PublicURL resolve the client (see ClientResolver) when
	// ResolveClient did not run before Auth.
	Trusted   TrustedProxies
	PublicURL *url.URL
	Logger    zerolog.Logger
}

// authenticators is the chain Auth asks, in order: Bearer and query tokens,
// the browser session, the Basic header, then Extra. The Basic header comes
// after the session and the query token so that a Basic header a proxy in
// front adds for itself does not block them.
func (o AuthOptions) authenticators() []Authenticator {
	cr := ClientResolver{Trusted: o.Trusted, PublicURL: o.PublicURL}
	tokens := func(from TokenSource) *Tokens {
		return &Tokens{From: from, Hashes: o.Hashes, Verifier: o.Verifier, Users: o.Users,
			AcceptHashToken: o.AcceptHashToken, Throttle: o.Throttle, Client: cr}
	}
	chain := []Authenticator{tokens(BearerOrQueryToken)}
	if o.Sessions != nil {
		chain = append(chain, o.Sessions)
	}
	chain = append(chain, tokens(BasicToken))
	return append(chain, o.Extra...)
}

// Auth decides, for every request, whether it may reach ComfyUI:
//  1. public paths pass (the gateway's login and logout pages);
//  2. each Authenticator is asked in turn (see AuthOptions.authenticators):
//     the first that admits the request sets Info.Method, Info.User and
//     Info.Generation; the first that refuses it (a *Denial) is answered
//     at once;
//  3. otherwise: 401 for websocket upgrades, 302 to the login page for
//     browsers, 401 JSON with `WWW-Authenticate: Bearer` for everyone else.
//
// A malformed Authorization header is never an error page: it is reported in
// the 401's reason. A scheme other than Bearer and Basic, or a malformed
// one, does not block a session or `?token=` credential.
func Auth(opts AuthOptions) func(http.Handler) http.Handler {
	chain := opts.authenticators()
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			info := InfoFrom(r)
			// The access log keeps a client's X-Request-Id; never let that
			// be a credential (a confused client, or one probing our logs).
			if info.idFromClient && (isPresentedSecret(r, info.ID) || hashIs(opts.Hashes, info.ID)) {
				renewRequestID(w, info)
			}
			if IsPublic(r, opts.PublicPaths) {
				info.Method = MethodPublic
				next.ServeHTTP(w, r)
				return
			}
			for _, a := range chain {
				user, ok, err := a.Authenticate(w, r)
				if err != nil {
					deny(w, r, opts, err)
					return
				}
				if ok {
					info.Method, info.User, info.Generation, info.Line = user.Method, user.Name, user.Generation, user.Line
					next.ServeHTTP(w, r)
					return
				}
			}
			if problem := parseAuthorization(r.Header.Get("Authorization")).problem; problem != "" {
				refuse(w, r, opts, CodeMalformedHeader, problem)
				return
			}
			refuse(w, r, opts, CodeNoCredentials, "no credentials: send `Authorization: Bearer <token>` or log in")
		})
	}
}

// deny answers an authenticator's refusal. An error that is not a *Denial
// means the check itself broke: the request is refused (fail closed) with
// 503, and the error logged, since it may be the gateway's bug.
func deny(w http.ResponseWriter, r *http.Request, opts AuthOptions, err error) {
	var d *Denial
	if !errors.As(err, &d) {
		opts.Logger.Error().Err(err).Msg("an authenticator failed; the request is refused")
		d = &Denial{Status: http.StatusServiceUnavailable, Code: CodePoolBusy, RetryAfter: "1",
			Message: "Server busy verifying credentials; retry shortly.",
			Reason:  "the credential could not be checked; retry shortly"}
	}
	if d.Status == http.StatusUnauthorized {
		refuse(w, r, opts, d.Code, d.Reason)
		return
	}
	info := InfoFrom(r)
	info.Method = MethodNone
	info.Reason = d.logReason()
	info.Refusal = d.Refusal
	if d.RetryAfter != "" {
		w.Header().Set("Retry-After", d.RetryAfter)
	}
	Refuse(w, r, d.Status, d.Code, d.Message, d.Reason)
}

func hashIs(h HashMatcher, s string) bool {
	if h == nil {
		return false
	}
	_, _, ok := h.MatchHash(s)
	return ok
}

// IsWebSocket reports whether r asks for a websocket upgrade, read as the
// proxy reads it: the upgrade token in any Connection line, and websocket
// as the first Upgrade value, the one forwarded. A first Connection line
// without the token ("keep-alive") must not hide an upgrade the proxy
// still carries out from CSRF and the websocket tracking.
func IsWebSocket(r *http.Request) bool {
	// Canonical keys read from the map directly: most requests are not
	// upgrades, and Get would canonicalise the key for each.
	if !strings.EqualFold(firstValue(r.Header, "Upgrade"), "websocket") {
		return false
	}
	return HeaderHasToken(r.Header, "Connection", "upgrade")
}

// HeaderHasToken reports whether any line of h's header name (a canonical
// key) lists token among its comma-separated values, ignoring case, as
// ReverseProxy and net/http read Connection and Expect.
func HeaderHasToken(h http.Header, name, token string) bool {
	for _, v := range h[name] {
		for _, part := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

// refuse answers an unauthenticated request in the form its client can use:
// a websocket handshake gets 401 (client libraries report a redirect as a
// confusing "HTTP 200" rejection), a browser page load goes to the login
// page, and API clients get ComfyUI-Login's JSON body plus a reason.
func refuse(w http.ResponseWriter, r *http.Request, opts AuthOptions, code RefusalCode, reason string) {
	info := InfoFrom(r)
	info.Method = MethodNone
	info.Reason = reason
	info.Code = code
	if opts.LoginPath != "" && !IsWebSocket(r) && strings.Contains(r.Header.Get("Accept"), "text/html") &&
		(r.Method == http.MethodGet || r.Method == http.MethodHead) {
		http.Redirect(w, r, loginRedirect(opts.LoginPath, r), http.StatusFound)
		return
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="comfyui"`)
	Refuse(w, r, http.StatusUnauthorized, code, "Authentication required.", reason)
}

// loginRedirect sends the browser to the login page with `next` set to the
// page it asked for, so it lands there after logging in. The query is kept
// unless it carries a `token`, which must not travel on to the login page.
func loginRedirect(loginPath string, r *http.Request) string {
	next := r.URL.EscapedPath()
	if q := r.URL.RawQuery; q != "" && !strings.Contains(q, "token") {
		next += "?" + q
	}
	if next == "/" || !SafeNextPath(next) {
		return loginPath
	}
	return loginPath + "?next=" + url.QueryEscape(next)
}

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
