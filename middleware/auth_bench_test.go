package middleware

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/hashstore"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

const benchToken = "bench-raw-token-0123456789abcdef"

// benchAuth builds the auth decision over a real store and verifier, with a
// minimum-cost hash so that the one bcrypt check warming the cache is quick.
func benchAuth(b *testing.B) (handler http.Handler, hash, cookie string) {
	b.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(benchToken), bcrypt.MinCost)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "token")
	if err := os.WriteFile(path, h, 0o600); err != nil {
		b.Fatal(err)
	}
	store, err := hashstore.NewStore(hashstore.StoreOptions{Path: path, PollInterval: -1, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	v := hashstore.NewVerifier(store, hashstore.VerifierOptions{Workers: 1, QueueLen: 64, MaxWait: 2 * time.Second})
	b.Cleanup(v.Close)
	if res := v.Verify(context.Background(), benchToken); res.Outcome != hashstore.Match {
		b.Fatalf("warming the cache: %v", res.Outcome)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	sessions := NewSessions(SessionOptions{
		Codec: NewSessionCodec([]byte("bench-secret-key-0123456789")), Lifetime: time.Hour,
		Credentials: func() (uint64, []string, []string) {
			snap := store.Snapshot()
			return snap.Generation, snap.Creds.Hashes, nil
		},
		Logger: zerolog.Nop(),
	})
	auth := Auth(AuthOptions{
		Hashes: store, Verifier: v, AcceptHashToken: true, Sessions: sessions,
		PublicPaths: map[string]bool{"/login": true}, LoginPath: "/login", Logger: zerolog.Nop(),
	})(ok)
	rec := httptest.NewRecorder()
	sessions.IssueUser(rec, httptest.NewRequest(http.MethodPost, "/login", nil), string(h))
	return auth, string(h), rec.Result().Cookies()[0].String()
}

// nopWriter is a ResponseWriter that keeps nothing, so the benchmark measures
// the decision, not httptest.ResponseRecorder.
type nopWriter struct {
	h    http.Header
	code int
}

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(code int)        { w.code = code }

// BenchmarkAuthDecision is the per-request cost of the auth decision for each
// kind of credential, with allocations. The raw token is already cached (the
// steady state of a client that sends it on every request); its first use
// costs one bcrypt check, measured by hashstore's benchmarks, not here.
func BenchmarkAuthDecision(b *testing.B) {
	auth, hash, cookie := benchAuth(b)
	cases := []struct {
		name   string
		target string
		header string
		want   int
	}{
		{"hash-token", "/system_stats", "Bearer " + hash, 200},
		{"raw-token-cached", "/system_stats", "Bearer " + benchToken, 200},
		{"raw-token-query-cached", "/ws?clientId=x&token=" + url.QueryEscape(benchToken), "", 200},
		{"session-cookie", "/system_stats", "Cookie: " + cookie, 200},
		{"public-asset", "/scripts/app.js", "", 200},
		{"no-credential-401", "/system_stats", "", 401},
		{"too-long-token-401", "/system_stats", "Bearer " + string(make([]byte, 80)), 401},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, tc.target, nil)
			if c, ok := strings.CutPrefix(tc.header, "Cookie: "); ok {
				r.Header.Set("Cookie", c)
			} else if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			r = r.WithContext(WithInfo(r.Context(), &Info{}))
			w := &nopWriter{h: http.Header{}}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				w.code = 200
				clear(w.h)
				auth.ServeHTTP(w, r)
			}
			if w.code != tc.want {
				b.Fatalf("status %d, want %d", w.code, tc.want)
			}
		})
	}
}

// BenchmarkAccessLog is the cost the access log adds to every request, with a
// JSON logger writing to io.Discard and one metrics-style observer.
func BenchmarkAccessLog(b *testing.B) {
	logger := zerolog.New(io.Discard).With().Timestamp().Logger()
	var n int
	h := AccessLog(logger, func(Completed) { n++ })(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		InfoFrom(r).Method = MethodHashToken
		w.WriteHeader(http.StatusOK)
	}))
	r := httptest.NewRequest(http.MethodGet, "/system_stats", nil)
	r.RemoteAddr = "127.0.0.1:40000"
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	for range b.N {
		clear(w.h)
		h.ServeHTTP(w, r)
	}
	if n != b.N {
		b.Fatalf("observer ran %d times for %d requests", n, b.N)
	}
}
