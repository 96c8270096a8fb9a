// Package middleware holds the http.Handler wrappers between the public port
// and the proxy: the access log, the auth decision, and the checks that go
// with it. Each wrapper has one constructor shaped
// func(next http.Handler) http.Handler.
//
// Who is asking is decided once per request, in this order:
//
//   - ResolveClient resolves the Client (address through --trusted-proxies,
//     throttle key, HTTPS, cross-site) into Info.Client; everything after
//     it reads that, never the headers again;
//   - Auth asks its Authenticators in turn (Bearer and query tokens, the
//     browser session, the Basic header); each returns a User, or "not
//     mine" (false, nil), or a *Denial. The first User sets Info.User and
//     Info.Method; the first Denial is the answer;
//   - every credential check counts failures in the one Throttler, keyed
//     by Client.Key, so a wrong password and a wrong token from one client
//     count toward the same lock.
//
// Adding a credential kind (OIDC, say) is one new file and two lines of
// wiring: a type with Authenticate(w, r) (User, bool, error) that returns
// (User{}, false, nil) for requests without its credential, a User with a
// Method of its own (a constant declared in that file) and a Name that is
// not "default" or "guest" for a valid one, and a *Denial for a credential
// it refuses (counting the failure in the Throttler under
// ClientOf(r, ...).Key() if a guess costs anything); then append it to
// AuthOptions.Extra in server.authOptions. Logs, metrics, the CSRF check
// (sessions only) and the proxy need nothing more: they read Info.
// A login callback, if the kind has one, is a route of the server package
// beside /login.
package middleware

import (
	"context"
	"net/http"
)

// Method says how a request was let in; it goes to the access log and metrics.
type Method string

// The ways a request can be let in, or not.
const (
	MethodNone      Method = "none"
	MethodPublic    Method = "public"
	MethodDisabled  Method = "disabled"
	MethodHashToken Method = "hash-token"
	MethodRawToken  Method = "raw-token"
	MethodSession   Method = "session"
	MethodGuest     Method = "guest"
)

// The reserved identities. Named users cannot take these names (the
// credential file refuses them), so a name always means one principal.
const (
	// UserDefault is whoever holds a bare hash line: ComfyUI-Login's
	// single, unnamed user.
	UserDefault = "default"
	// UserGuest is every guest session, together.
	UserGuest = "guest"
)

// Info is per-request state shared by the access log (which creates it) and
// the handlers inside it (which fill it). One pointer per request, so the
// auth decision does not have to rebuild the request to report itself.
type Info struct {
	ID     string
	Method Method
	// Reason is why a request was refused, for the log (never a secret).
	Reason string
	// Refusal classifies a refusal that cost no credential check, for
	// whoever summarises floods (the access log, metrics); empty otherwise.
	Refusal Refusal
	// Code is the refusal code the gateway answered with, if it refused.
	Code RefusalCode
	// Generation is the credential generation that admitted the request.
	Generation uint64
	// Line is the 1-based credential line of generation Generation that
	// admitted the request, 0 for guests and unauthenticated requests (see
	// User.Line).
	Line int
	// User is who the request was let in as: a named user's name from the
	// credential file, UserDefault for the bare (unnamed) hash lines, or
	// UserGuest for a guest session. Empty when nobody was authenticated
	// (a refusal, a public page).
	User string
	// Client is who sent the request, resolved once by ResolveClient.
	Client Client
	// Forwarded is set when the request is handed to ComfyUI; an answer
	// without it is the gateway's own (a refusal, a page of its own).
	Forwarded bool
	// ProxyHeader is, once Forwarded, the header map of the writer the
	// proxy answers through, so ComfyUI's headers can be handed over
	// rather than copied value by value.
	ProxyHeader http.Header

	// idFromClient: ID is the client's own X-Request-Id, which Auth makes
	// sure is not a credential; an id the gateway made cannot be one.
	idFromClient bool
}

// Refusal says why a credential was not checked.
type Refusal string

// The refusals the auth decision and the login handler record.
const (
	// RefusalLocked: the client is locked out by the failure throttle (429).
	RefusalLocked Refusal = "locked"
	// RefusalShed: the bcrypt pool had no room or no worker in time (503).
	RefusalShed Refusal = "shed"
	// RefusalClientBusy: the client already had its share of checks
	// queued or running (429); counted as a failure.
	RefusalClientBusy Refusal = "client-busy"
	// RefusalCrossSite: a login form posted from another site (403).
	RefusalCrossSite Refusal = "cross-site"
)

type infoKey struct{}

// WithInfo returns a context carrying info.
func WithInfo(ctx context.Context, info *Info) context.Context {
	return context.WithValue(ctx, infoKey{}, info)
}

// InfoFrom returns the request's Info. A request that did not pass through
// AccessLog gets a throwaway one, so callers never check for nil.
func InfoFrom(r *http.Request) *Info {
	if info, ok := r.Context().Value(infoKey{}).(*Info); ok {
		return info
	}
	return &Info{}
}
