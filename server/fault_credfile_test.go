package server

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// TestCredentialFileFaultsKeepLastGoodCredentials breaks the credential file
// every way a host can: the last good credentials keep working, the problem
// is logged once however many polls see it, /readyz reports it, and fixing
// the file recovers without restart.
func TestCredentialFileFaultsKeepLastGoodCredentials(t *testing.T) {
	good := lowCostHash(t, "fault-good-token")
	tests := []struct {
		name      string
		breakFile func(t *testing.T, path string)
		// undo removes what breakFile left, before the fixed file is written.
		undo     func(t *testing.T, path string)
		skipRoot bool
	}{
		{name: "deleted", breakFile: func(t *testing.T, p string) { must(t, os.Remove(p)) }},
		{name: "emptied", breakFile: func(t *testing.T, p string) { must(t, writeFile(p, "")) }},
		{name: "truncated mid-hash", breakFile: func(t *testing.T, p string) { must(t, writeFile(p, good[:33])) }},
		{name: "garbage", breakFile: func(t *testing.T, p string) { must(t, writeFile(p, "\x00\xff<html>not a hash</html>\n")) }},
		{name: "100 MB file", breakFile: func(t *testing.T, p string) {
			f, err := os.Create(p)
			must(t, err)
			must(t, f.Truncate(100<<20)) // sparse: 100 MB as stat and read see it, no disk spent
			must(t, f.Close())
		}},
		{name: "permissions removed", skipRoot: true, breakFile: func(t *testing.T, p string) { must(t, os.Chmod(p, 0)) },
			undo: func(t *testing.T, p string) { must(t, os.Chmod(p, 0o644)) }},
		{name: "replaced by a directory", breakFile: func(t *testing.T, p string) {
			must(t, os.Remove(p))
			must(t, os.Mkdir(p, 0o755))
		}, undo: func(t *testing.T, p string) { must(t, os.Remove(p)) }},
		{name: "symlink loop", breakFile: func(t *testing.T, p string) {
			must(t, os.Remove(p))
			must(t, os.Symlink(p+".b", p))
			must(t, os.Symlink(p, p+".b"))
		}, undo: func(t *testing.T, p string) { must(t, os.Remove(p)); must(t, os.Remove(p+".b")) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skipRoot && os.Geteuid() == 0 {
				t.Skip("root reads files whatever their mode; run the tests as a normal user to cover this")
			}
			t.Parallel()
			const poll = 50 * time.Millisecond
			g := startGateway(t, gatewayOpts{hashContent: ptr(good), configure: func(c *Config) {
				c.PollInterval = poll
				c.MaxLoginAttempts = 0
			}})
			if s := status(t, g, "fault-good-token"); s != 200 {
				t.Fatalf("before: %d", s)
			}
			tc.breakFile(t, g.HashFile)
			eventually(t, 5*time.Second, "the store notices", func() bool { return g.Server.Store().Status().LastError != "" })
			// Let at least ten polls see the same problem; only a timer can
			// show that something is NOT repeated.
			<-time.After(10 * poll)
			if s := status(t, g, "fault-good-token"); s != 200 {
				t.Fatalf("last good raw token = %d, want 200", s)
			}
			if s := status(t, g, good); s != 200 {
				t.Fatalf("last good hash token = %d, want 200", s)
			}
			if n := strings.Count(g.Logs.String(), "keeping the last good credentials"); n != 1 {
				t.Fatalf("the problem was logged %d times, want once", n)
			}
			resp := g.do(t, "GET", "/readyz", nil)
			var body map[string]any
			must(t, json.NewDecoder(resp.Body).Decode(&body))
			if c, _ := body["credentials"].(string); !strings.HasPrefix(c, "degraded") {
				t.Fatalf("/readyz credentials = %q, want it to say degraded", body["credentials"])
			}
			if tc.undo != nil {
				tc.undo(t, g.HashFile)
			}
			fixed := lowCostHash(t, "fault-fixed-"+strings.ReplaceAll(tc.name, " ", "-"))
			must(t, writeFile(g.HashFile, fixed+"\n"))
			eventually(t, 5*time.Second, "recovery without restart", func() bool {
				return g.Server.Store().Status().LastError == "" && status(t, g, fixed) == 200
			})
			if s := status(t, g, good); s != 401 {
				t.Fatalf("replaced hash still accepted after recovery: %d", s)
			}
		})
	}
}
