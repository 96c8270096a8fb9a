package middleware

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/rs/zerolog"
)

// headerAuth is a credential kind of its own, as OIDC would be: it knows
// one header value, refuses another, and ignores requests without it.
type headerAuth struct{ asked *int }

const methodHeader Method = "test-header"

func (h headerAuth) Authenticate(_ http.ResponseWriter, r *http.Request) (User, bool, error) {
	*h.asked++
	switch r.Header.Get("X-Test-Credential") {
	case "":
		return User{}, false, nil
	case "good":
		return User{Name: "carol", Method: methodHeader}, true, nil
	case "broken":
		return User{}, false, errors.New("identity provider unreachable")
	}
	return User{}, false, &Denial{Status: http.StatusUnauthorized, Code: CodeWrongToken, Reason: "test credential refused"}
}

// TestAnExtraAuthenticatorIsOneTypeAndOneLine: a new credential kind is
// asked after the built-in ones; its User reaches Info; "not mine" falls
// through to the usual 401; its Denial is the answer; an error that is not
// a Denial fails closed; and a token the built-ins refuse never reaches it.
func TestAnExtraAuthenticatorIsOneTypeAndOneLine(t *testing.T) {
	asked := 0
	h := Auth(AuthOptions{
		Hashes: fixedHashes{}, Verifier: &fixedVerifier{}, Logger: zerolog.Nop(),
		Extra: []Authenticator{headerAuth{&asked}},
	})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := InfoFrom(r)
		w.Header().Set("X-User", info.User+" "+string(info.Method))
	}))
	tests := []struct {
		name, credential, bearer string
		status                   int
		user                     string
		code                     RefusalCode
		asked                    int
	}{
		{"its credential", "good", "", 200, "carol test-header", "", 1},
		{"no credential at all", "", "", 401, "", CodeNoCredentials, 1},
		{"its refusal", "bad", "", 401, "", CodeWrongToken, 1},
		{"it broke: fail closed", "broken", "", 503, "", CodePoolBusy, 1},
		{"a built-in refusal comes first", "good", "wrong", 401, "", CodeWrongToken, 0},
		{"a built-in admission comes first", "good", fuzzRaw, 200, "default raw-token", "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			asked = 0
			r := httptest.NewRequest("GET", "/prompt", nil)
			if tc.credential != "" {
				r.Header.Set("X-Test-Credential", tc.credential)
			}
			if tc.bearer != "" {
				r.Header.Set("Authorization", "Bearer "+tc.bearer)
			}
			info := &Info{}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r.WithContext(WithInfo(r.Context(), info)))
			if w.Code != tc.status || w.Header().Get("X-User") != tc.user || info.Code != tc.code || asked != tc.asked {
				t.Fatalf("status %d user %q code %q asked %d; want %d %q %q %d",
					w.Code, w.Header().Get("X-User"), info.Code, asked, tc.status, tc.user, tc.code, tc.asked)
			}
		})
	}
}
