package middleware

import (
	"bytes"
	"encoding/json"
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

func TestAccessLogNamesTheClientBehindATrustedProxy(t *testing.T) {
	trusted, err := ParseTrustedProxies("10.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, peer, xff   string
		wantClient, peer2 string
	}{
		{"direct client", "198.51.100.7:5000", "", "198.51.100.7", ""},
		{"through a trusted proxy", "10.1.2.3:5000", "203.0.113.9", "203.0.113.9", "10.1.2.3"},
		{"forged header from an untrusted peer", "198.51.100.7:5000", "203.0.113.9", "198.51.100.7", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			h := AccessLog(zerolog.New(&buf))(ResolveClient(ClientResolver{Trusted: trusted})(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
			r := httptest.NewRequest(http.MethodGet, "/queue", nil)
			r.RemoteAddr = tc.peer
			if tc.xff != "" {
				r.Header.Set("X-Forwarded-For", tc.xff)
			}
			h.ServeHTTP(httptest.NewRecorder(), r)
			var line struct {
				Client, Peer string
				DurationMS   *float64 `json:"duration_ms"`
			}
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatalf("log line %q: %v", buf.String(), err)
			}
			if line.Client != tc.wantClient || line.Peer != tc.peer2 || line.DurationMS == nil {
				t.Fatalf("logged client %q peer %q duration_ms %v; want client %q peer %q", line.Client, line.Peer, line.DurationMS, tc.wantClient, tc.peer2)
			}
		})
	}
}
