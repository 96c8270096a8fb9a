package server

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestRemovingAUsersLineEndsOnlyTheirToken: through the real server, a
// class file of named lines and a bare line. Alice's `Bearer alice:<secret>`
// is let in; once her line is removed from the hash file, the next reload
// refuses her (even though her success was cached), while bob and the bare
// line's token go on being let in.
func TestRemovingAUsersLineEndsOnlyTheirToken(t *testing.T) {
	const aliceTok, bobTok, bareTok = "alice-secret-0123456789abcdefghij", "bob-secret-0123456789abcdefghijk", "bare-secret-0123456789abcdefghij"
	aliceLine := "alice:" + lowCostHash(t, aliceTok) + "\n"
	rest := "bob:" + lowCostHash(t, bobTok) + "\n" + lowCostHash(t, bareTok) + "\n"
	g := startGateway(t, gatewayOpts{hashContent: ptr(aliceLine + rest)})
	c := &http.Client{Transport: &http.Transport{Proxy: nil}}
	u := g.URL + "/system_stats"
	for i, want := range []struct {
		token  string
		status int
	}{
		{"alice:" + aliceTok, 200}, {"alice:" + aliceTok, 200}, // the second from the cache
		{"bob:" + bobTok, 200}, {bareTok, 200},
		{"bob:" + aliceTok, 401}, // alice's secret under bob's name
	} {
		if s := statusWith(t, c, u, want.token).StatusCode; s != want.status {
			t.Fatalf("request %d before the removal: %d, want %d", i, s, want.status)
		}
	}

	store := g.Server.Store()
	gen := store.Snapshot().Generation
	changed := store.Changed()
	if err := os.WriteFile(g.HashFile, []byte(rest), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("the hash file without alice's line was not reloaded")
	}
	if s := store.Snapshot(); s.Generation != gen+1 || s.HasUser("alice") || !s.HasUser("bob") {
		t.Fatalf("after the reload: generation %d, users %q", s.Generation, s.UserNames())
	}
	if s := statusWith(t, c, u, "alice:"+aliceTok).StatusCode; s != 401 {
		t.Fatalf("alice after her line was removed: %d, want 401", s)
	}
	for _, tok := range []string{"bob:" + bobTok, bareTok} {
		if s := statusWith(t, c, u, tok).StatusCode; s != 200 {
			t.Fatalf("%d after alice's removal, want 200 for everyone else", s)
		}
	}
}

// TestANamedUsersHashIsNotAToken: with ComfyUI-Login's hash-as-token
// compatibility on, the bare line's hash still lets its holder in, but a
// named user's hash (whole, or after the name) does not: whoever sees a copy
// of the class file must not become any student.
func TestANamedUsersHashIsNotAToken(t *testing.T) {
	aliceHash, bareHash := lowCostHash(t, "alice-secret-0123456789abcdefghij"), lowCostHash(t, "bare-secret-0123456789abcdefghij")
	g := startGateway(t, gatewayOpts{hashContent: ptr("alice:" + aliceHash + "\n" + bareHash + "\n")})
	if !g.Server.cfg.AcceptHashToken {
		t.Fatal("the test needs the hash-as-token compatibility on")
	}
	c := &http.Client{Transport: &http.Transport{Proxy: nil}}
	u := g.URL + "/system_stats"
	for _, tc := range []struct {
		name, token string
		status      int
	}{
		{"alice's hash", aliceHash, 401},
		{"alice's hash after her name", "alice:" + aliceHash, 401},
		{"the bare line's hash", bareHash, 200},
	} {
		if s := statusWith(t, c, u, tc.token).StatusCode; s != tc.status {
			t.Errorf("%s: %d, want %d", tc.name, s, tc.status)
		}
	}
}

// TestAWrongGuessForAUserCostsThatUsersLinesOnly: through the real server, a
// class file of 30 users with one line each and no bare line. A wrong
// `Bearer s17:<guess>` costs one bcrypt comparison, not 30; a token naming
// no user, or naming none at all, costs none; the right one is let in.
func TestAWrongGuessForAUserCostsThatUsersLinesOnly(t *testing.T) {
	var file strings.Builder
	for i := range 30 {
		fmt.Fprintf(&file, "s%02d:%s\n", i, lowCostHash(t, fmt.Sprintf("class-secret-%02d-0123456789abcdef", i)))
	}
	g := startGateway(t, gatewayOpts{hashContent: ptr(file.String())})
	c := &http.Client{Transport: &http.Transport{Proxy: nil}}
	u := g.URL + "/system_stats"
	for _, tc := range []struct {
		name, token string
		status      int
		checks      int64
	}{
		{"a wrong guess for one user", "s17:wrong-guess", 401, 1},
		{"another user's secret under this name", "s17:class-secret-03-0123456789abcdef", 401, 1},
		{"a name that is no user", "zed:class-secret-17-0123456789abcdef", 401, 0},
		{"no name at all", "class-secret-17-0123456789abcdef", 401, 0},
		{"the user's own secret", "s17:class-secret-17-0123456789abcdef", 200, 1},
	} {
		before := g.Server.Verifier().Stats().Checks
		if s := statusWith(t, c, u, tc.token).StatusCode; s != tc.status {
			t.Fatalf("%s: %d, want %d", tc.name, s, tc.status)
		}
		if n := g.Server.Verifier().Stats().Checks - before; n != tc.checks {
			t.Fatalf("%s: %d bcrypt comparisons, want %d", tc.name, n, tc.checks)
		}
	}
}
