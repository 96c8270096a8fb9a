package middleware

import (
	"context"
	"crypto/subtle"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/hashstore"
)

const (
	fuzzRaw  = "@TKEoMzUx&)F@B$^1O3hkt&VkDWp0JXf"
	fuzzHash = "$2b$12$UDceblhZeEySDwVMC0ccN.IaQmMBfKdTY.aAE3poXcq1zsOP6coni"
)

// fixedHashes and fixedVerifier stand in for the store: the fuzz target
// checks the decision logic around them, not bcrypt.
type fixedHashes struct{}

func (fixedHashes) MatchHash(tok string) (int, uint64, bool) {
	return 1, 1, subtle.ConstantTimeCompare([]byte(tok), []byte(fuzzHash)) == 1
}

type fixedVerifier struct{ calls int }

func (v *fixedVerifier) Cached(string) (hashstore.Result, bool) { return hashstore.Result{}, false }

func (v *fixedVerifier) VerifyFor(_ context.Context, _, tok string) hashstore.Result {
	v.calls++
	if len(tok) > hashstore.MaxTokenBytes {
		return hashstore.Result{Outcome: hashstore.TooLong}
	}
	if tok == fuzzRaw {
		return hashstore.Result{Outcome: hashstore.Match, Line: 1, Generation: 1}
	}
	return hashstore.Result{Outcome: hashstore.NoMatch, Generation: 1}
}

// publicWithoutCredentials is the fuzz oracle's own list of what may pass
// without credentials: the exact raw paths handed to Auth as PublicPaths,
// nothing else (no suffix, no prefix, no method). It is written out here
// rather than asked of IsPublic, so the target checks IsPublic too.
var publicWithoutCredentials = map[string]bool{"/login": true}

// carriesSecret reports, without the code under test, which secret a request
// presents: the hash or the raw token, anywhere in the Authorization header
// or as a value of a `token` query parameter.
func carriesSecret(authz, rawQuery string) (hash, raw bool) {
	hash = strings.Contains(authz, fuzzHash)
	raw = strings.Contains(authz, fuzzRaw)
	q, _ := url.ParseQuery(rawQuery) // keeps the pairs it could parse
	for _, v := range q["token"] {
		hash = hash || v == fuzzHash
		raw = raw || v == fuzzRaw
	}
	return hash, raw
}

// FuzzAuthDecision sends a random Authorization header, raw query and path
// through Auth. Nothing may panic, and a request may reach the protected
// handler only on a path of publicWithoutCredentials or when it carries the
// hash or the raw token exactly (in the header or as the `token` parameter);
// the hash alone never costs a raw-token check.
func FuzzAuthDecision(f *testing.F) {
	for _, s := range [][3]string{
		{"Bearer " + fuzzHash, "", "/prompt"},
		{"bearer " + fuzzRaw, "", "/api/prompt"},
		{"", "token=" + url.QueryEscape(fuzzHash), "/ws"},
		{"Bearer", "token=", "/prompt"},
		{"Bearer a b", "token=x&token=" + url.QueryEscape(fuzzRaw), "/history"},
		{"Basic Zm9vOmJhcg==", "token=%zz", "/view"},
		{"Bearer " + fuzzHash[:59], "", "/prompt"},
		{"Bearer  " + fuzzHash + " ", "", "/prompt"},
		{"Bearer\t" + fuzzHash, "", "/prompt"},
		{"", "", "/login/../prompt"},
		{"", "", "/PROMPT.js"},
		{"", "", "/settings/x.js"},
		{"", "", "/healthz"},
		{"", "", "/readyz"},
		{"", "", "//prompt"},
		{"", "", "/%2e%2e/prompt"},
		{"", "", "/login"},
		{"", "", "/Login"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, authz, rawQuery, path string) {
		v := &fixedVerifier{}
		reached := false
		h := Auth(AuthOptions{
			Hashes: fixedHashes{}, Verifier: v, AcceptHashToken: true,
			PublicPaths: map[string]bool{"/login": true}, LoginPath: "/login",
			Throttle: NewThrottle(ThrottleOptions{MaxFailures: 3, Window: time.Minute, BaseLock: time.Minute}),
		})(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true }))
		r := httptest.NewRequest("GET", "/", nil)
		u, err := url.Parse("http://gw" + path)
		if err != nil || u.Host != "gw" {
			return
		}
		u.RawQuery = rawQuery
		r.URL = u
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
		if !reached || publicWithoutCredentials[u.EscapedPath()] {
			return
		}
		hash, raw := carriesSecret(authz, rawQuery)
		if !hash && !raw {
			t.Fatalf("let in without a secret: path %q, Authorization %q, query %q", u.EscapedPath(), authz, rawQuery)
		}
		if hash && !raw && v.calls != 0 {
			t.Fatalf("the hash token spent %d raw-token checks", v.calls)
		}
	})
}

// FuzzTokenFrom checks the token extraction alone: no panic, and a token is
// only ever a substring the client sent (nothing is invented or trimmed into
// a different secret), never empty when reported.
func FuzzTokenFrom(f *testing.F) {
	f.Add("Bearer abc", "token=def")
	f.Add("bearer   x  ", "")
	f.Add("Bearer", "token=")
	f.Add("", "token=%41%42&token=z")
	f.Add("Bearer a\tb", "a=b;token=c")
	f.Fuzz(func(t *testing.T, authz, rawQuery string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.URL.RawQuery = rawQuery
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		tok, problem := tokenFrom(r)
		if tok == "" {
			return
		}
		fromQuery := r.URL.Query().Get("token")
		if tok != fromQuery && !strings.Contains(authz, tok) {
			t.Fatalf("token %q is neither in the header %q nor the query's token %q", tok, authz, fromQuery)
		}
		if problem != "" && tok != fromQuery {
			t.Fatalf("header token %q returned with problem %q", tok, problem)
		}
	})
}
