package hashstore

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestRemovingAUsersLinesStopsOnlyThatUser: after alice's lines are taken
// out of the file, her token (even one the cache answered a moment ago)
// stops matching at the next reload, while bob's and the bare line's go on;
// the reload log says who was removed, by name and never by hash.
func TestRemovingAUsersLinesStopsOnlyThatUser(t *testing.T) {
	ha, hb, hx := cheapHash(t, "sa"), cheapHash(t, "sb"), cheapHash(t, "bare")
	path := filepath.Join(t.TempDir(), "users")
	writeFile(t, path, "alice:"+ha+"\nbob:"+hb+"\n"+hx+"\n")
	ts := startStore(t, path, nil, nil)
	v := newVerifier(t, ts.Store, VerifierOptions{})
	ctx := context.Background()
	for _, tok := range []string{"alice:sa", "bob:sb", "bare"} {
		if r := v.Verify(ctx, tok); r.Outcome != Match {
			t.Fatalf("%s before: %+v", tok, r)
		}
	}
	if r := v.Verify(ctx, "alice:sa"); !r.Cached || r.User != "alice" {
		t.Fatalf("alice not cached: %+v", r)
	}
	ts.reloadTo(t, hb, func() { writeFile(t, path, "bob:"+hb+"\n"+hx+"\n") })
	if r := v.Verify(ctx, "alice:sa"); r.Outcome != NoMatch || r.Cached {
		t.Fatalf("alice after her line was removed: %+v", r)
	}
	if r, ok := v.Cached("alice:sa"); ok {
		t.Fatalf("alice answered from the cache after removal: %+v", r)
	}
	if r := v.Verify(ctx, "bob:sb"); r.Outcome != Match || r.User != "bob" || r.Generation != 2 {
		t.Fatalf("bob after alice's removal: %+v", r)
	}
	if r := v.Verify(ctx, "bare"); r.Outcome != Match || r.User != "" {
		t.Fatalf("bare line after alice's removal: %+v", r)
	}
	logs := ts.logs.String()
	for _, want := range []string{
		"credentials loaded: 2 users (alice 1 line, bob 1 line), 1 bare line",
		"credentials reloaded: 1 user (bob 1 line), 1 bare line; removed alice",
		`"users_removed":["alice"]`,
		`"user_fingerprints":{"bob":["` + Fingerprint(hb) + `"]}`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	for _, h := range []string{ha, hb, hx} {
		if strings.Contains(logs, h) {
			t.Fatalf("logs hold a hash:\n%s", logs)
		}
	}
}

// TestBadUserLineKeepsEveryonesLastGoodCredentials: a damaged line for one
// user refuses the whole file (fail closed: a half-read file could drop a
// revocation), keeps every user's last good lines, and says which line and
// what is in force.
func TestBadUserLineKeepsEveryonesLastGoodCredentials(t *testing.T) {
	ha, hb := cheapHash(t, "sa"), cheapHash(t, "sb")
	path := filepath.Join(t.TempDir(), "users")
	writeFile(t, path, "alice:"+ha+"\nalice:"+cheapHash(t, "sa2")+"\nbob:"+hb+"\n")
	ts := startStore(t, path, nil, nil)
	st := ts.Status()
	if !slices.Equal(st.Users, []UserLineCount{{"alice", 2}, {"bob", 1}}) || st.BareLines != 0 {
		t.Fatalf("status users %+v bare %d", st.Users, st.BareLines)
	}
	writeFile(t, path, "alice:"+ha+"\nbob:"+hb[:50]+"\n")
	waitFor(t, "the damaged file to be refused", func() bool { return ts.Status().LastError != "" })
	st = ts.Status()
	if !st.Ready || st.Generation != 1 || len(st.Users) != 2 {
		t.Fatalf("status after a damaged line: %+v", st)
	}
	for _, want := range []string{"generation 1, 2 users (alice 2 lines, bob 1 line), 0 bare lines", "line 2 (user bob) has 50 characters"} {
		if !strings.Contains(st.Reason, want) {
			t.Errorf("reason %q lacks %q", st.Reason, want)
		}
	}
	v := newVerifier(t, ts.Store, VerifierOptions{})
	for _, tok := range []string{"alice:sa", "alice:sa2", "bob:sb"} {
		if r := v.Verify(context.Background(), tok); r.Outcome != Match {
			t.Errorf("%s while the file is damaged: %+v", tok, r)
		}
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "keeping the last good credentials (2 users (alice 2 lines, bob 1 line), 0 bare lines)") || strings.Contains(logs, hb[:50]) {
		t.Errorf("logs:\n%s", logs)
	}
}

// TestAUsersSecretOnTheUsernameLineIsNeverShown: the username line is the
// public login page's greeting; a student's token pasted there (without the
// name, so it reads as a display name) must not be shown. Checking it
// against a class file's lines runs off the start path.
func TestAUsersSecretOnTheUsernameLineIsNeverShown(t *testing.T) {
	const secret = "student-token-0123456789abcdefgh"
	for _, tc := range []struct {
		name, username, shown string
	}{
		{"a user's secret", secret, ""},
		{"a display name", "Physics 101", "Physics 101"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "users")
			writeFile(t, path, "bob:"+cheapHash(t, "b")+"\nalice:"+cheapHash(t, secret)+"\n"+tc.username+"\n")
			ts := startStore(t, path, nil, nil)
			if tc.shown != "" {
				waitFor(t, "the display name", func() bool { return ts.DisplayName() == tc.shown })
				return
			}
			waitFor(t, "the username line to be vetted", func() bool {
				return strings.Contains(ts.logs.String(), "is the raw token or password of hash 2 (user alice)")
			})
			if got := ts.DisplayName(); got != "" {
				t.Fatalf("DisplayName %q", got)
			}
			if strings.Contains(ts.logs.String(), secret) {
				t.Fatal("the secret reached the log")
			}
		})
	}
}
