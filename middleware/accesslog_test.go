package middleware

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/rs/zerolog"
)

func TestRequestIDIsKeptWhenPlainAndOtherwiseUniqueHex(t *testing.T) {
	h := AccessLog(zerolog.Nop())(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	id := func(client string) string {
		r := httptest.NewRequest(http.MethodGet, "/system_stats", nil)
		if client != "" {
			r.Header.Set("X-Request-Id", client)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Header().Get("X-Request-Id")
	}
	if got := id("client-id_1.2"); got != "client-id_1.2" {
		t.Errorf("a plain client id became %q", got)
	}
	seen := map[string]bool{}
	for _, client := range []string{"", "has space", "quote\"", string(make([]byte, 65))} {
		for range 500 {
			got := id(client)
			if len(got) != 16 || seen[got] {
				t.Fatalf("generated id %q for client id %q: want 16 hex digits, never repeated", got, client)
			}
			for _, c := range got {
				if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
					t.Fatalf("generated id %q is not hex", got)
				}
			}
			seen[got] = true
		}
	}
}
