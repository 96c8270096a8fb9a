package middleware

import (
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strings"
)

// The forms a client presents a token in, read by BearerOrQueryToken and
// BasicToken:
//
//   - `Authorization: Bearer <token>`; a named user's token is
//     `<name>:<secret>`, the whole of it checked by the verifier, which
//     splits off a name that is a user in the loaded credentials;
//   - `?token=<token>`, URL-encoded, for websockets and <img src>, which
//     cannot set headers;
//   - `Authorization: Basic base64(<name>:<secret>)`, the ComfyUI SDKs'
//     "basic" credential type. When <name> is a user in the loaded
//     credentials the token is `<name>:<secret>`; any other name (the
//     SDKs need one, and a bare credential has none) is decoration, and
//     the token is <secret> alone, checked against the bare lines.
//
// An empty token counts as none, so an empty `?token=` never matches
// anything.

// authorization is what the Authorization header holds.
type authorization struct {
	bearer string // the Bearer token
	// name and secret are the Basic credential's halves.
	name, secret string
	basic        bool
	// problem says what is wrong with a header that is neither; empty
	// when there is no header or it is well formed.
	problem string
}

// parseAuthorization reads an Authorization header value. It never fails:
// anything unusable is described in problem, for the 401 that follows
// when no other credential lets the request in.
func parseAuthorization(h string) authorization {
	if h == "" {
		return authorization{}
	}
	scheme, rest, _ := strings.Cut(h, " ")
	rest = strings.TrimSpace(rest)
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		switch {
		case rest == "":
			return authorization{problem: "Authorization header has `Bearer` but no token"}
		case strings.ContainsAny(rest, " \t"):
			return authorization{problem: "Authorization header has more than two words; expected `Bearer <token>`"}
		}
		return authorization{bearer: rest}
	case strings.EqualFold(scheme, "Basic"):
		if rest == "" {
			return authorization{problem: "Authorization header has `Basic` but no credentials; expected `Basic base64(name:secret)`"}
		}
		// Go's decoder skips CR and LF; RFC 7617's credentials hold
		// neither, so they are refused, not read past.
		raw, err := base64.StdEncoding.DecodeString(rest)
		if err != nil || strings.ContainsAny(rest, "\r\n") {
			return authorization{problem: "Authorization header's Basic credentials are not base64; expected `Basic base64(name:secret)`"}
		}
		name, secret, ok := strings.Cut(string(raw), ":")
		switch {
		case !ok:
			return authorization{problem: "Authorization header's Basic credentials have no `:` between name and secret; expected `Basic base64(name:secret)`"}
		case secret == "":
			return authorization{problem: "Authorization header's Basic credentials have an empty secret; expected `Basic base64(name:secret)`"}
		}
		return authorization{basic: true, name: name, secret: secret}
	}
	return authorization{problem: "Authorization header is neither `Bearer <token>` nor `Basic base64(name:secret)`"}
}

// BearerOrQueryToken is the TokenSource of `Authorization: Bearer <token>`
// and, failing that, `?token=<token>`.
func BearerOrQueryToken(r *http.Request, _ UserDirectory) (string, bool) {
	if a := parseAuthorization(firstValue(r.Header, "Authorization")); a.bearer != "" {
		return a.bearer, true
	}
	if t := queryToken(r); t != "" {
		return t, true
	}
	return "", false
}

// BasicToken is the TokenSource of `Authorization: Basic
// base64(name:secret)`.
func BasicToken(r *http.Request, users UserDirectory) (string, bool) {
	a := parseAuthorization(firstValue(r.Header, "Authorization"))
	if !a.basic {
		return "", false
	}
	return a.token(users), true
}

// token is the Basic credential as the verifier checks it: `name:secret`
// for a user in the loaded credentials, the secret alone otherwise.
func (a authorization) token(users UserDirectory) string {
	if a.name != "" && users != nil && users.HasUser(a.name) {
		return a.name + ":" + a.secret
	}
	return a.secret
}

func queryToken(r *http.Request) string {
	if r.URL.RawQuery != "" && strings.Contains(r.URL.RawQuery, "token=") {
		return r.URL.Query().Get("token")
	}
	return ""
}

// ForgetRequestIDIf gives r an id of the gateway's own, in the access log
// and the answer's X-Request-Id, when the client's X-Request-Id is secret:
// a credential read outside Auth (the login form's password) must no more
// reach the log than one Auth reads (see Auth).
func ForgetRequestIDIf(w http.ResponseWriter, r *http.Request, secret string) {
	info := InfoFrom(r)
	if !info.idFromClient || secret == "" || subtle.ConstantTimeCompare([]byte(info.ID), []byte(secret)) != 1 {
		return
	}
	renewRequestID(w, info)
}

// renewRequestID replaces a client's X-Request-Id found to be a secret
// with one the gateway makes, in the log and in the answer.
func renewRequestID(w http.ResponseWriter, info *Info) {
	info.ID, info.idFromClient = requestID(""), false
	w.Header()["X-Request-Id"] = []string{info.ID}
}

// isPresentedSecret reports whether s is any part of a credential r
// presents: a token, a Basic secret, or a Basic name:secret pair.
func isPresentedSecret(r *http.Request, s string) bool {
	a := parseAuthorization(firstValue(r.Header, "Authorization"))
	return s == a.bearer || s == queryToken(r) ||
		a.basic && (s == a.secret || s == a.name+":"+a.secret)
}
