package server

import (
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestRevokingOneUserKeepsTheOthersCached: through the real server, a
// class whose tokens are all in the success cache. Removing bob's line
// refuses bob, while alice's and carol's next requests are answered from
// the cache with no bcrypt comparison: one student's revocation does not
// send the whole class (often behind one NAT address, with its per-client
// share of 2 checks) back through bcrypt at once.
func TestRevokingOneUserKeepsTheOthersCached(t *testing.T) {
	tokens := map[string]string{
		"alice": "alice-secret-0123456789abcdefghij",
		"bob":   "bob-secret-0123456789abcdefghijk",
		"carol": "carol-secret-0123456789abcdefghi",
	}
	lines := map[string]string{}
	for _, name := range []string{"alice", "bob", "carol"} {
		lines[name] = name + ":" + lowCostHash(t, tokens[name]) + "\n"
	}
	var compares atomic.Int64
	g := startGateway(t, gatewayOpts{
		hashContent: ptr(lines["alice"] + lines["bob"] + lines["carol"]),
		configure: func(c *Config) {
			c.bcryptCompare = func(h, p []byte) error {
				compares.Add(1)
				return bcrypt.CompareHashAndPassword(h, p)
			}
		},
	})
	c := &http.Client{Transport: &http.Transport{Proxy: nil}}
	u := g.URL + "/system_stats"
	for name, tok := range tokens {
		for range 2 { // the second from the cache
			if s := statusWith(t, c, u, name+":"+tok).StatusCode; s != 200 {
				t.Fatalf("%s before the revoke: %d", name, s)
			}
		}
	}
	if n := compares.Load(); n != 3 {
		t.Fatalf("%d bcrypt comparisons for 3 users' tokens sent twice, want 3", n)
	}

	changed := g.Server.Store().Changed()
	if err := os.WriteFile(g.HashFile, []byte(lines["alice"]+lines["carol"]), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("the hash file without bob's line was not reloaded")
	}
	for _, tc := range []struct {
		name   string
		status int
	}{{"alice", 200}, {"carol", 200}, {"bob", 401}} {
		before := compares.Load()
		if s := statusWith(t, c, u, tc.name+":"+tokens[tc.name]).StatusCode; s != tc.status {
			t.Fatalf("%s after bob's revoke: %d, want %d", tc.name, s, tc.status)
		}
		if n := compares.Load() - before; n != 0 {
			t.Fatalf("%s after bob's revoke cost %d bcrypt comparisons, want 0", tc.name, n)
		}
	}
}
