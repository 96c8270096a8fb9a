package hashstore

import (
	"context"
	"crypto/subtle"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

// userFile builds a credential file: each entry is "name" (or "" for a bare
// line) and the secret hashed on that line.
type userFile []struct{ user, secret string }

func (f userFile) credentials(t *testing.T) Credentials {
	t.Helper()
	c, err := Parse([]byte(f.text(t)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f userFile) text(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, l := range f {
		if l.user != "" {
			b.WriteString(l.user + ":")
		}
		b.WriteString(cheapHash(t, l.secret) + "\n")
	}
	return b.String()
}

// countingVerifier is a Verifier over creds whose compare hook counts the
// bcrypt comparisons it makes.
func countingVerifier(t *testing.T, creds Credentials, opts VerifierOptions) (*Verifier, *atomic.Int64) {
	t.Helper()
	s, err := NewStore(StoreOptions{Fallback: &creds, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	opts.Compare = func(h, p []byte) error {
		n.Add(1)
		return bcrypt.CompareHashAndPassword(h, p)
	}
	return newVerifier(t, s, opts), &n
}

// TestWrongGuessCostsAtMostThatUsersLineCount: a named credential is checked
// against that user's lines only. In a class of 30 users with one line each,
// a wrong guess for one user costs one bcrypt comparison, not thirty; a
// token naming no user costs the bare lines only; and in a file without bare
// lines, such a token costs no bcrypt at all.
func TestWrongGuessCostsAtMostThatUsersLineCount(t *testing.T) {
	var class userFile
	for i := range 30 {
		class = append(class, struct{ user, secret string }{fmt.Sprintf("s%02d", i), fmt.Sprintf("secret-%02d", i)})
	}
	mixed := append(userFile{
		{"alice", "a-old"}, {"", "shared-1"}, {"alice", "a-new"}, {"bob", "b"}, {"", "zed:pw"}, {"alice", "a-spare"},
	}, class[:3]...)

	// Hashed once: bcrypt under -race is slow enough to matter.
	classCreds, mixedCreds := class.credentials(t), mixed.credentials(t)
	tests := []struct {
		name    string
		file    Credentials
		token   string
		outcome Outcome
		line    int
		user    string
		checks  int64
	}{
		{"class: wrong guess for one user", classCreds, "s17:wrong", NoMatch, 0, "", 1},
		{"class: right secret", classCreds, "s17:secret-17", Match, 18, "s17", 1},
		{"class: another user's secret", classCreds, "s03:secret-17", NoMatch, 0, "", 1},
		{"class: unknown user, no bare lines", classCreds, "zed:x", NoMatch, 0, "", 0},
		{"class: unnamed token, no bare lines", classCreds, "secret-17", NoMatch, 0, "", 0},
		{"class: empty secret after a user's name", classCreds, "s17:", NoMatch, 0, "", 0},
		{"mixed: wrong guess for a user of three lines", mixedCreds, "alice:nope", NoMatch, 0, "", 3},
		{"mixed: a user's second line", mixedCreds, "alice:a-new", Match, 3, "alice", 2},
		{"mixed: user of one line", mixedCreds, "bob:b", Match, 4, "bob", 1},
		{"mixed: unknown name goes whole to the bare lines", mixedCreds, "carol:x", NoMatch, 0, "", 2},
		{"mixed: bare token", mixedCreds, "shared-1", Match, 2, "", 1},
		{"mixed: bare token with a colon and no such user", mixedCreds, "zed:pw", Match, 5, "", 2},
		{"mixed: a user's secret without the name", mixedCreds, "a-new", NoMatch, 0, "", 2},
		{"mixed: bare secret under a user's name", mixedCreds, "bob:shared-1", NoMatch, 0, "", 1},
		{"mixed: name is case-sensitive", mixedCreds, "Alice:a-new", NoMatch, 0, "", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, n := countingVerifier(t, tt.file, VerifierOptions{})
			r := v.VerifyFor(context.Background(), "client", tt.token)
			if r.Outcome != tt.outcome || r.Line != tt.line || r.User != tt.user || r.Cached {
				t.Fatalf("got %+v, want %s line %d user %q", r, tt.outcome, tt.line, tt.user)
			}
			if got := n.Load(); got != tt.checks {
				t.Fatalf("%d bcrypt comparisons, want %d", got, tt.checks)
			}
		})
	}
}

// TestNamedSecretLengthIsBcryptsLimitNotTheWholeToken: the name does not
// eat into the 72 bytes of secret bcrypt can check, and a secret over them
// is refused without bcrypt.
func TestNamedSecretLengthIsBcryptsLimitNotTheWholeToken(t *testing.T) {
	long := strings.Repeat("k", MaxTokenBytes)
	name := strings.Repeat("n", MaxUserNameLen)
	v, n := countingVerifier(t, userFile{{name, long}}.credentials(t), VerifierOptions{})
	if r := v.Verify(context.Background(), name+":"+long); r.Outcome != Match || r.User != name {
		t.Fatalf("a 72-byte secret behind a 64-character name: %+v", r)
	}
	if r := v.Verify(context.Background(), name+":"+long+"x"); r.Outcome != TooLong {
		t.Fatalf("a 73-byte secret: %+v", r)
	}
	if r := v.Verify(context.Background(), strings.Repeat("z", 200)); r.Outcome != TooLong {
		t.Fatalf("a 200-byte token: %+v", r)
	}
	if got := n.Load(); got != 1 {
		t.Fatalf("%d comparisons, want 1", got)
	}
}

// TestCacheEntryIsPerUser: alice and bob have the same secret on different
// lines; alice's cached success must never answer bob's token, and the
// cache answers with the user of the line it matched.
func TestCacheEntryIsPerUser(t *testing.T) {
	v, n := countingVerifier(t, userFile{{"alice", "s"}, {"bob", "t"}, {"carol", "s"}, {"", "s"}}.credentials(t), VerifierOptions{})
	ctx := context.Background()
	if r := v.VerifyFor(ctx, "c", "alice:s"); r.Outcome != Match || r.User != "alice" || r.Line != 1 {
		t.Fatalf("alice: %+v", r)
	}
	if r, ok := v.Cached("alice:s"); !ok || r.User != "alice" || r.Line != 1 || !r.Cached {
		t.Fatalf("Cached(alice:s) = %+v, %v", r, ok)
	}
	if r := v.VerifyFor(ctx, "c", "alice:s"); !r.Cached || r.User != "alice" {
		t.Fatalf("alice again: %+v", r)
	}
	for _, tok := range []string{"bob:s", "carol:s", "s"} {
		if r, ok := v.Cached(tok); ok {
			t.Fatalf("Cached(%s) answered from alice's entry: %+v", tok, r)
		}
	}
	if r := v.VerifyFor(ctx, "c", "bob:s"); r.Outcome != NoMatch || r.Cached {
		t.Fatalf("bob with alice's secret: %+v", r)
	}
	if r := v.VerifyFor(ctx, "c", "carol:s"); r.Outcome != Match || r.User != "carol" || r.Line != 3 || r.Cached {
		t.Fatalf("carol: %+v", r)
	}
	if r := v.VerifyFor(ctx, "c", "s"); r.Outcome != Match || r.User != "" || r.Line != 4 || r.Cached {
		t.Fatalf("bare: %+v", r)
	}
	if got := n.Load(); got != 4 {
		t.Fatalf("%d comparisons, want 4 (alice, bob, carol, bare; the second alice from the cache)", got)
	}
}

// TestPerClientCapHoldsForNamedTokens: different users' wrong guesses from
// one client share that client's cap, so naming many users buys no more
// concurrent bcrypt.
func TestPerClientCapHoldsForNamedTokens(t *testing.T) {
	v, _ := countingVerifier(t, userFile{{"alice", "a"}, {"bob", "b"}, {"carol", "c"}}.credentials(t), VerifierOptions{Workers: 4, PerClient: 2})
	g := newGate(v)
	defer g.open()
	results := make(chan Result, 2)
	for _, tok := range []string{"alice:x", "bob:x"} {
		go func() { results <- v.VerifyFor(context.Background(), "guesser", tok) }()
	}
	waitFor(t, "two checks running", func() bool { return v.Stats().InFlight == 2 })
	if r := v.VerifyFor(context.Background(), "guesser", "carol:x"); r.Outcome != ClientBusy {
		t.Fatalf("third named guess from one client: %+v", r)
	}
	g.open()
	for range 2 {
		if r := <-results; r.Outcome != NoMatch {
			t.Fatalf("%+v", r)
		}
	}
}

// TestMatchHashAcceptsBareLinesOnly: the hash-as-token compatibility is
// ComfyUI-Login's single user's; a named user's hash presented as a token
// (whole, or after the user's name) lets nobody in.
func TestMatchHashAcceptsBareLinesOnly(t *testing.T) {
	f := userFile{{"alice", "a"}, {"", "bare"}, {"bob", "b"}}
	path := filepath.Join(t.TempDir(), "users")
	writeFile(t, path, f.text(t))
	s, err := NewStore(StoreOptions{Path: path, PollInterval: -1, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Snapshot().Creds.Hashes
	var calls int
	s.compareDigest = func(x, y []byte) int { calls++; return subtle.ConstantTimeCompare(x, y) }
	for i, tok := range []string{h[0], h[2], "alice:" + h[0], "bob:" + h[2]} {
		if line, _, ok := s.MatchHash(tok); ok {
			t.Errorf("token %d (a named user's hash): accepted as line %d", i, line)
		}
	}
	if line, _, ok := s.MatchHash(h[1]); !ok || line != 2 {
		t.Errorf("the bare line's hash: line %d ok %v", line, ok)
	}
	// The three hash-length tokens cost one comparison per line, named or
	// not; the two "name:hash" tokens are no hash's length and cost none.
	if calls != 3*len(h) {
		t.Errorf("%d digest comparisons, want one per line per hash-length call (%d): which lines are named must not change the work", calls, 3*len(h))
	}
	// Nor is the hash accepted as the user's secret through the verifier.
	v := newVerifier(t, s, VerifierOptions{})
	if r := v.Verify(context.Background(), "alice:"+h[0]); r.Outcome == Match {
		t.Errorf("alice's hash as alice's secret: %+v", r)
	}
}
