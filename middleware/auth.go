package middleware

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/comfyui-auth/comfyui-auth/hashstore"
	"github.com/rs/zerolog"
)

// HashMatcher compares a presented token with the loaded hash strings in
// constant time (ComfyUI-Login's "the hash is the token" compatibility).
type HashMatcher interface {
	MatchHash(token string) (line int, gen uint64, ok bool)
}

// RawVerifier checks a raw token with bcrypt through the bounded pool.
type RawVerifier interface {
	// Cached answers from the success cache alone, without bcrypt.
	Cached(token string) (hashstore.Result, bool)
	// VerifyFor checks token for client, queueing fairly between clients.
	VerifyFor(ctx context.Context, client, token string) hashstore.Result
}

// SessionAuthenticator recognises a browser session: the cookie /login sets,
// since the ComfyUI frontend sends no Authorization header. A nil one means
// there are no sessions.
type SessionAuthenticator interface {
	// Authenticate returns the method (session or guest) and true when the
	// request carries a valid session.
	Authenticate(r *http.Request) (Method, bool)
}

// AuthOptions configures Auth.
type AuthOptions struct {
	Hashes   HashMatcher
	Verifier RawVerifier
	// AcceptHashToken lets the hash string itself in as a token.
	AcceptHashToken bool
	// Sessions, when set, is consulted after tokens.
	Sessions SessionAuthenticator
	// PublicPaths are exact raw paths that skip auth (login, logout).
	PublicPaths map[string]bool
	// LoginPath is where browsers without credentials are sent; empty means
	// browsers get the JSON 401 like everyone else.
	LoginPath string
	// Throttle, when set, is consulted before any raw-token bcrypt work and
	// told about raw tokens that were checked and did not match. The hash
	// token and sessions never reach it.
	Throttle Throttler
	// Trusted says whose X-Forwarded-For to believe when naming the client
	// for the bcrypt pool's fair queueing (the throttle has its own).
	Trusted TrustedProxies
	// PublicURL, when set, is the gateway's own origin (see IsCrossSite).
	PublicURL *url.URL
	Logger    zerolog.Logger
}

// Auth decides, for every request, whether it may reach ComfyUI:
//  1. public paths pass (health, login, static assets by GET/HEAD);
//  2. a token from `Authorization: Bearer <t>` or `?token=<t>` is compared
//     with the loaded hashes in constant time; if it is not a hash, it is
//     looked up in the raw-token success cache (no bcrypt), which admits it
//     even from a locked client unless that client spent its lock's budget
//     of distinct guesses (Throttler.LockedToken); otherwise a locked client
//     gets 429 with Retry-After, and anyone else has the token verified
//     through the bounded, fair bcrypt pool. A wrong or over-long raw token,
//     or one over the client's share of the pool, counts as one failure for
//     the client (cross-site requests in a separate budget, see Throttle);
//  3. a browser session, when sessions are configured;
//  4. otherwise: 401 for websocket upgrades, 302 to the login page for
//     browsers, 401 JSON with `WWW-Authenticate: Bearer` for everyone else.
//
// A malformed Authorization header is never an error page: it is reported in
// the 401's reason. A non-Bearer scheme (a Basic header added by a proxy in
// front) does not block a session or `?token=` credential.
func Auth(opts AuthOptions) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			info := InfoFrom(r)
			token, headerProblem := tokenFrom(r)
			// The access log keeps a client's X-Request-Id; never let that
			// be a credential (a confused client, or one probing our logs).
			if info.ID != "" && (info.ID == token || hashIs(opts.Hashes, info.ID)) {
				info.ID = requestID("")
				w.Header().Set("X-Request-Id", info.ID)
			}
			if IsPublic(r, opts.PublicPaths) {
				info.Method = MethodPublic
				next.ServeHTTP(w, r)
				return
			}
			if token != "" {
				if opts.AcceptHashToken {
					if _, gen, ok := opts.Hashes.MatchHash(token); ok {
						info.Method, info.Generation, info.User = MethodHashToken, gen, UserDefault
						next.ServeHTTP(w, r)
						return
					}
				}
				cached, hit := opts.Verifier.Cached(token)
				if opts.Throttle != nil {
					if retry, locked := opts.Throttle.Locked(r); locked {
						if opts.Throttle.LockedToken(r, token, hit) {
							info.Method, info.Generation, info.User = MethodRawToken, cached.Generation, UserDefault
							next.ServeHTTP(w, r)
							return
						}
						RefuseLocked(w, r, retry)
						return
					}
				}
				if hit {
					info.Method, info.Generation, info.User = MethodRawToken, cached.Generation, UserDefault
					next.ServeHTTP(w, r)
					return
				}
				res := opts.Verifier.VerifyFor(r.Context(), poolClient(r, opts), token)
				var retry time.Duration
				var locked bool
				if opts.Throttle != nil && (res.Outcome == hashstore.NoMatch || res.Outcome == hashstore.TooLong || res.Outcome == hashstore.ClientBusy) {
					retry, locked = opts.Throttle.Failed(r)
				}
				switch res.Outcome {
				case hashstore.Match:
					info.Method, info.Generation, info.User = MethodRawToken, res.Generation, UserDefault
					next.ServeHTTP(w, r)
					return
				case hashstore.Busy:
					info.Reason = "bcrypt pool busy"
					info.Refusal = RefusalShed
					w.Header().Set("Retry-After", "1")
					Refuse(w, r, http.StatusServiceUnavailable, CodePoolBusy,
						"Server busy verifying credentials; retry shortly.",
						"too many token checks are waiting; this token has not been checked yet")
					return
				case hashstore.ClientBusy:
					if locked {
						RefuseLocked(w, r, retry)
						return
					}
					info.Method = MethodNone
					info.Reason = "client already has its share of token checks waiting"
					info.Refusal = RefusalClientBusy
					w.Header().Set("Retry-After", "1")
					Refuse(w, r, http.StatusTooManyRequests, CodeClientBusy,
						"Too many token checks at once.",
						"this address already has token checks waiting; wait for their answers before sending other tokens (each different token counts as one failed attempt)")
					return
				case hashstore.TooLong:
					refuse(w, r, opts, CodeTokenTooLong, "token is longer than 72 bytes, the most bcrypt can check")
					return
				case hashstore.NoCredentials:
					refuse(w, r, opts, CodeNoCredentialLoaded, "the server has no valid credential loaded, so it refuses every token")
					return
				default:
					refuse(w, r, opts, CodeWrongToken, "token matches no configured credential")
					return
				}
			}
			if opts.Sessions != nil {
				if m, ok := opts.Sessions.Authenticate(r); ok {
					info.Method, info.User = m, UserDefault
					if m == MethodGuest {
						info.User = UserGuest
					}
					next.ServeHTTP(w, r)
					return
				}
			}
			if headerProblem != "" {
				refuse(w, r, opts, CodeMalformedHeader, headerProblem)
				return
			}
			refuse(w, r, opts, CodeNoCredentials, "no credentials: send `Authorization: Bearer <token>` or log in")
		})
	}
}

// poolClient names r's client for the bcrypt pool's fair queueing: the
// throttle's key (an address, an IPv6 /64), apart for cross-site requests
// so that a web page's wrong tokens do not push back its visitor's own.
func poolClient(r *http.Request, opts AuthOptions) string {
	key := throttleKey(opts.Trusted.ClientAddr(r)).String()
	if IsCrossSite(r, opts.PublicURL) {
		return "cross-site " + key
	}
	return key
}

// PoolClient is poolClient for the login handler, which has no AuthOptions.
func PoolClient(r *http.Request, trusted TrustedProxies, publicURL *url.URL) string {
	return poolClient(r, AuthOptions{Trusted: trusted, PublicURL: publicURL})
}

func hashIs(h HashMatcher, s string) bool {
	_, _, ok := h.MatchHash(s)
	return ok
}

// tokenFrom returns the presented token: the Bearer header first, then the
// `token` query parameter (websockets and <img src> cannot set headers). An
// empty token counts as none, so an empty `?token=` never matches anything.
func tokenFrom(r *http.Request) (token, problem string) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, rest, _ := strings.Cut(h, " ")
		rest = strings.TrimSpace(rest)
		switch {
		case !strings.EqualFold(scheme, "Bearer"):
			problem = "Authorization header is not `Bearer <token>`"
		case rest == "":
			problem = "Authorization header has `Bearer` but no token"
		case strings.ContainsAny(rest, " \t"):
			problem = "Authorization header has more than two words; expected `Bearer <token>`"
		default:
			return rest, ""
		}
	}
	if r.URL.RawQuery != "" && strings.Contains(r.URL.RawQuery, "token=") {
		if t := r.URL.Query().Get("token"); t != "" {
			return t, problem
		}
	}
	return "", problem
}

// IsWebSocket reports whether r asks for a websocket upgrade.
func IsWebSocket(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket") &&
		headerHasToken(r.Header.Get("Connection"), "upgrade")
}

func headerHasToken(v, token string) bool {
	for _, part := range strings.Split(v, ",") {
		if strings.EqualFold(strings.TrimSpace(part), token) {
			return true
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
