package middleware

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
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
	if f := strings.Fields(authz); len(f) == 2 && strings.EqualFold(f[0], "basic") {
		if b, err := base64.StdEncoding.DecodeString(f[1]); err == nil {
			hash = hash || strings.Contains(string(b), fuzzHash)
			raw = raw || strings.Contains(string(b), fuzzRaw)
		}
	}
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
		{"Basic " + base64.StdEncoding.EncodeToString([]byte("anyone:"+fuzzRaw)), "", "/prompt"},
		{"basic " + base64.StdEncoding.EncodeToString([]byte(":"+fuzzHash)), "", "/prompt"},
		{"Basic " + base64.StdEncoding.EncodeToString([]byte(fuzzRaw)), "", "/prompt"},
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

// fuzzUsers knows one user, alice.
type fuzzUsers struct{}

func (fuzzUsers) HasUser(name string) bool { return name == "alice" }

// FuzzCredentialFrom checks the reading of the Authorization header (Bearer
// and Basic) and the query token alone: no panic; a token is only ever
// what the client sent (nothing is invented or trimmed into a different
// secret), never empty when reported; a Basic token is the decoded
// secret, prefixed by its name only when the name is a known user; and a
// header is either a credential or described in a problem, never both.
func FuzzCredentialFrom(f *testing.F) {
	f.Add("Bearer abc", "token=def")
	f.Add("bearer   x  ", "")
	f.Add("Bearer", "token=")
	f.Add("", "token=%41%42&token=z")
	f.Add("Bearer a\tb", "a=b;token=c")
	f.Add("Basic YWxpY2U6czNjcmV0", "") // alice:s3cret
	f.Add("Basic Ym9iOnMzY3JldA==", "") // bob:s3cret
	f.Add("Basic OnMzY3JldA==", "")     // :s3cret
	f.Add("Basic YWxpY2U6", "")         // alice:
	f.Add("Basic YWxpY2U=", "token=x")  // alice
	f.Add("Basic !!!", "")
	f.Add("Basic", "")
	f.Add("Digest username=x", "token=y")
	f.Fuzz(func(t *testing.T, authz, rawQuery string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.URL.RawQuery = rawQuery
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		a := parseAuthorization(r.Header.Get("Authorization"))
		kinds := 0
		for _, k := range []bool{a.bearer != "", a.basic, a.problem != ""} {
			if k {
				kinds++
			}
		}
		if want := min(1, len(r.Header.Get("Authorization"))); kinds != want {
			t.Fatalf("header %q read as %d kinds (%+v), want %d", authz, kinds, a, want)
		}
		tok, ok := BearerOrQueryToken(r, nil)
		if ok != (tok != "") {
			t.Fatalf("BearerOrQueryToken = %q, %v", tok, ok)
		}
		fromQuery := r.URL.Query().Get("token")
		if ok && tok != fromQuery && !strings.Contains(authz, tok) {
			t.Fatalf("token %q is neither in the header %q nor the query's token %q", tok, authz, fromQuery)
		}
		basic, ok := BasicToken(r, fuzzUsers{})
		if !ok {
			return
		}
		f := strings.Fields(authz)
		raw, err := base64.StdEncoding.DecodeString(f[len(f)-1])
		if err != nil || !strings.EqualFold(f[0], "basic") {
			t.Fatalf("Basic token %q from a header that is not Basic base64: %q", basic, authz)
		}
		name, secret, _ := strings.Cut(string(raw), ":")
		want := secret
		if name == "alice" {
			want = string(raw)
		}
		if basic != want || secret == "" {
			t.Fatalf("Basic token %q from %q, want %q", basic, raw, want)
		}
	})
}
