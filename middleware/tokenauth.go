package middleware

import (
	"context"
	"net/http"
	"time"

	"github.com/comfyui-auth/comfyui-auth/hashstore"
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

// UserDirectory says whether a name is a user in the credentials loaded
// now. The Basic header and the login form use it to tell a user name from
// the decorative name clients send with a bare credential.
type UserDirectory interface {
	HasUser(name string) bool
}

// TokenSource reads one form of token from a request: ok is false when
// the request carries none of that form (or only a malformed one).
type TokenSource func(r *http.Request, users UserDirectory) (token string, ok bool)

// Tokens authenticates a token: the hash string itself (when
// AcceptHashToken), then a raw token through the success cache and the
// bounded, fair bcrypt pool, with the failure throttle around it. Where the
// token comes from is From: BearerOrQueryToken or BasicToken.
type Tokens struct {
	From     TokenSource
	Hashes   HashMatcher
	Verifier RawVerifier
	Users    UserDirectory
	// AcceptHashToken lets a bare line's hash string itself in as a token.
	AcceptHashToken bool
	// Throttle, when set, is consulted before any raw-token bcrypt work and
	// told about raw tokens that were checked and did not match. The hash
	// token never reaches it.
	Throttle Throttler
	// Client resolves the client when ResolveClient did not run.
	Client ClientResolver
}

var _ Authenticator = (*Tokens)(nil)

// Authenticate implements Authenticator. A token that is the hash string
// of a bare line is let in at once. Otherwise it is looked up in the raw-
// token success cache (no bcrypt), which admits it even from a locked
// client unless that client spent its lock's budget of distinct guesses
// (Throttler.LockedToken); otherwise a locked client gets 429 with
// Retry-After, and anyone else has the token verified through the bcrypt
// pool. A wrong or over-long raw token, or one over the client's share of
// the pool, counts as one failure for the client (cross-site requests in a
// separate budget, see Throttle).
func (t *Tokens) Authenticate(_ http.ResponseWriter, r *http.Request) (User, bool, error) {
	token, ok := t.From(r, t.Users)
	if !ok {
		return User{}, false, nil
	}
	if t.AcceptHashToken {
		if line, gen, ok := t.Hashes.MatchHash(token); ok {
			return User{Name: UserDefault, Method: MethodHashToken, Generation: gen, Line: line}, true, nil
		}
	}
	key := ClientOf(r, t.Client).Key()
	cached, hit := t.Verifier.Cached(token)
	if t.Throttle != nil {
		if retry, locked := t.Throttle.Locked(key); locked {
			if t.Throttle.LockedToken(key, token, hit) {
				return rawUser(cached), true, nil
			}
			return User{}, false, lockedDenial(retry)
		}
	}
	if hit {
		return rawUser(cached), true, nil
	}
	res := t.Verifier.VerifyFor(r.Context(), key.String(), token)
	var retry time.Duration
	var locked bool
	if t.Throttle != nil && (res.Outcome == hashstore.NoMatch || res.Outcome == hashstore.TooLong || res.Outcome == hashstore.ClientBusy) {
		retry, locked = t.Throttle.Failed(key)
	}
	switch res.Outcome {
	case hashstore.Match:
		return rawUser(res), true, nil
	case hashstore.Busy:
		return User{}, false, &Denial{Status: http.StatusServiceUnavailable, Code: CodePoolBusy, RetryAfter: "1", Refusal: RefusalShed, LogReason: "bcrypt pool busy",
			Message: "Server busy verifying credentials; retry shortly.",
			Reason:  "too many token checks are waiting; this token has not been checked yet"}
	case hashstore.ClientBusy:
		if locked {
			return User{}, false, lockedDenial(retry)
		}
		return User{}, false, &Denial{Status: http.StatusTooManyRequests, Code: CodeClientBusy, RetryAfter: "1", Refusal: RefusalClientBusy,
			LogReason: "client already has its share of token checks waiting",
			Message:   "Too many token checks at once.",
			Reason:    "this address already has token checks waiting; wait for their answers before sending other tokens (each different token counts as one failed attempt)"}
	case hashstore.TooLong:
		return User{}, false, &Denial{Status: http.StatusUnauthorized, Code: CodeTokenTooLong,
			Reason: "token is longer than 72 bytes, the most bcrypt can check"}
	case hashstore.NoCredentials:
		return User{}, false, &Denial{Status: http.StatusUnauthorized, Code: CodeNoCredentialLoaded,
			Reason: "the server has no valid credential loaded, so it refuses every token"}
	default:
		return User{}, false, &Denial{Status: http.StatusUnauthorized, Code: CodeWrongToken,
			Reason: "token matches no configured credential"}
	}
}

// rawUser is who a raw token that matched is: the matching line's user.
func rawUser(res hashstore.Result) User {
	return User{Name: ResultUser(res), Method: MethodRawToken, Generation: res.Generation, Line: res.Line}
}

// ResultUser names the user of a verifier's Match: the line's name, or
// UserDefault for a bare line.
func ResultUser(res hashstore.Result) string {
	if res.User != "" {
		return res.User
	}
	return UserDefault
}

func lockedDenial(retry time.Duration) *Denial {
	secs := RetryAfterSeconds(retry)
	return &Denial{Status: http.StatusTooManyRequests, Code: CodeLockedOut, RetryAfter: secs, Refusal: RefusalLocked,
		LogReason: "client locked out after repeated credential failures",
		Message:   "Too many failed attempts.",
		Reason:    "too many wrong credentials from this address; retry after " + secs + " seconds with the right token"}
}
