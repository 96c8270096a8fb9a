package middleware

import (
	"fmt"
	"net/http"
)

// User is who an Authenticator let a request in as.
type User struct {
	// Name is a named user's name from the credential file, UserDefault
	// for the bare hash lines, or UserGuest for a guest session.
	Name string
	// Method says how: the access log's "auth" field.
	Method Method
	// Generation is the credential generation that admitted the request,
	// 0 where none applies (guest sessions).
	Generation uint64
	// Line is the 1-based credential line of generation Generation that
	// admitted the request (the line a token matched, the line a session is
	// bound to), 0 for guests: what must stay loaded for the admission to
	// hold, for whoever keeps a connection open past the request (a
	// websocket).
	Line int
}

// Authenticator recognises one kind of credential, after Caddy's
// caddyauth.Authenticator. Authenticate answers one of three ways:
//
//   - (user, true, nil): r carries a valid credential of its kind;
//   - (User{}, false, nil): r carries no credential of its kind, or only
//     a malformed one (Auth reports the Authorization header's problems
//     itself, once nobody admitted the request). Not being authenticated
//     is never an error: the next authenticator is asked;
//   - (User{}, false, err): r presents a credential of its kind and it is
//     refused (a *Denial: a wrong token, a locked client, a full bcrypt
//     pool), or something broke. Auth answers at once and asks no later
//     authenticator, so a wrong token is never rescued by a session cookie
//     and a locked client never reaches bcrypt through another door.
//
// w is there for authenticators that must set a header or cookie of their
// own (a refreshed session, a challenge); the built-in ones leave it alone.
type Authenticator interface {
	Authenticate(w http.ResponseWriter, r *http.Request) (User, bool, error)
}

// Denial is the error an Authenticator returns for a credential it refuses:
// what Auth answers with. Its text never holds the credential.
type Denial struct {
	// Status is 401, 429 or 503.
	Status int
	Code   RefusalCode
	// Message is the short human line of the refusal body ("error");
	// unused for a 401, whose line is always "Authentication required.".
	Message string
	// Reason says what happened and what to do next.
	Reason string
	// RetryAfter, when not empty, is the Retry-After header's value.
	RetryAfter string
	// Refusal classifies a refusal that cost no credential check.
	Refusal Refusal
	// LogReason, when set, is the access log's reason instead of Reason.
	LogReason string
}

func (d *Denial) logReason() string {
	if d.LogReason != "" {
		return d.LogReason
	}
	return d.Reason
}

func (d *Denial) Error() string {
	return fmt.Sprintf("%s (%d %s)", d.Reason, d.Status, d.Code)
}
