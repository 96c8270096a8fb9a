package hashstore

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

// fallbackStore is a Store over fixed hashes, without a file.
func fallbackStore(t *testing.T, hashes ...string) *Store {
	t.Helper()
	s, err := NewStore(StoreOptions{Fallback: &Credentials{Hashes: hashes}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newVerifier fills the options a test leaves zero with ordinary values
// (NewVerifier itself refuses zeros).
func newVerifier(t *testing.T, s *Store, opts VerifierOptions) *Verifier {
	t.Helper()
	if opts.Workers == 0 {
		opts.Workers = 2
	}
	if opts.QueueLen == 0 {
		opts.QueueLen = 64
	}
	if opts.MaxWait == 0 {
		opts.MaxWait = 2 * time.Second
	}
	v := NewVerifier(s, opts)
	t.Cleanup(v.Close)
	return v
}

// gate makes compare block until released, to hold workers busy on purpose.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

func newGate(v *Verifier) *gate {
	g := &gate{ch: make(chan struct{})}
	v.compare = func(h, p []byte) error {
		<-g.ch
		return bcrypt.CompareHashAndPassword(h, p)
	}
	return g
}

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

func TestVerifyMatchesTheSeedVector(t *testing.T) {
	v := newVerifier(t, fallbackStore(t, vectorHash), VerifierOptions{})
	r := v.Verify(context.Background(), vectorToken)
	if r.Outcome != Match || r.Line != 1 || r.Generation != 1 || r.Cached {
		t.Fatalf("got %+v", r)
	}
	if st := v.Stats(); st.Checks != 1 {
		t.Fatalf("checks %d, want 1", st.Checks)
	}
}

func TestVerifyOutcomesWithoutBcrypt(t *testing.T) {
	missing, err := NewStore(StoreOptions{Path: filepath.Join(t.TempDir(), "none"), PollInterval: -1, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	loaded := fallbackStore(t, cheapHash(t, "x"))
	tests := []struct {
		name  string
		store *Store
		token string
		want  Outcome
	}{
		{"no credentials", missing, "x", NoCredentials},
		{"73 bytes", loaded, strings.Repeat("a", 73), TooLong},
		{"empty", loaded, "", NoMatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerifier(t, tt.store, VerifierOptions{})
			if r := v.Verify(context.Background(), tt.token); r.Outcome != tt.want {
				t.Fatalf("got %v, want %v", r.Outcome, tt.want)
			}
			if st := v.Stats(); st.Checks != 0 {
				t.Fatalf("bcrypt ran %d times", st.Checks)
			}
		})
	}
}

func TestVerifyFindsTheMatchingHashLine(t *testing.T) {
	s := fallbackStore(t, cheapHash(t, "a"), cheapHash(t, "b"), cheapHash(t, "c"))
	v := newVerifier(t, s, VerifierOptions{})
	for i, tok := range []string{"a", "b", "c"} {
		if r := v.Verify(context.Background(), tok); r.Outcome != Match || r.Line != i+1 {
			t.Errorf("%s: %+v", tok, r)
		}
	}
	if r := v.Verify(context.Background(), "d"); r.Outcome != NoMatch {
		t.Errorf("d: %+v", r)
	}
	// A 72-byte token is bcrypt's limit, still checked.
	if r := v.Verify(context.Background(), strings.Repeat("a", 72)); r.Outcome != NoMatch {
		t.Errorf("72 bytes: %+v", r)
	}
}

func TestRawTokenIsCheckedOnceThenCached(t *testing.T) {
	v := newVerifier(t, fallbackStore(t, cheapHash(t, "tok")), VerifierOptions{})
	if r := v.Verify(context.Background(), "tok"); r.Outcome != Match || r.Cached {
		t.Fatalf("first: %+v", r)
	}
	if r := v.Verify(context.Background(), "tok"); r.Outcome != Match || !r.Cached || r.Line != 1 {
		t.Fatalf("second: %+v", r)
	}
	// Failures are not cached: a wrong token costs bcrypt every time.
	v.Verify(context.Background(), "wrong")
	v.Verify(context.Background(), "wrong")
	if st := v.Stats(); st.Checks != 3 || st.CacheHits != 1 || st.CacheMisses != 3 || st.CacheEntries != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestCacheFollowsItsLineAcrossReloads: a reload keeps the success cache
// entries whose line is still loaded (same user, same hash), at the line's
// new place, so another user's revocation costs the rest of the class no
// bcrypt; the revoked user's cached token is refused, and a token whose
// line's hash changed is checked again.
func TestCacheFollowsItsLineAcrossReloads(t *testing.T) {
	const aliceTok, bobTok, carolTok, bareTok = "alice-secret", "bob-secret", "carol-secret", "bare-secret"
	hA, hB, hC, hD := cheapHash(t, aliceTok), cheapHash(t, bobTok), cheapHash(t, carolTok), cheapHash(t, bareTok)
	path := filepath.Join(t.TempDir(), "token")
	writeFile(t, path, "alice:"+hA+"\nbob:"+hB+"\ncarol:"+hC+"\n"+hD+"\n")
	ts := startStore(t, path, nil, nil)
	v := newVerifier(t, ts.Store, VerifierOptions{})
	tokens := []string{"alice:" + aliceTok, "bob:" + bobTok, "carol:" + carolTok, bareTok}
	for _, tok := range tokens {
		v.Verify(context.Background(), tok)
		if r := v.Verify(context.Background(), tok); !r.Cached {
			t.Fatalf("%s not cached: %+v", tok, r)
		}
	}
	// Bob revoked, carol's hash replaced (same secret), the rest moved.
	hC2 := cheapHash(t, carolTok)
	ts.reloadTo(t, hC2, func() { writeFile(t, path, "carol:"+hC2+"\n"+hD+"\nalice:"+hA+"\n") })
	waitFor(t, "the cache to follow the reload", func() bool { return v.Stats().CacheEntries == 2 })
	for _, tc := range []struct {
		name, token string
		outcome     Outcome
		cached      bool
		line        int
		checks      int64
	}{
		{"alice, whose line moved", "alice:" + aliceTok, Match, true, 3, 0},
		{"the bare line, moved", bareTok, Match, true, 2, 0},
		{"bob, revoked", "bob:" + bobTok, NoMatch, false, 0, 1}, // checked whole against the bare line
		{"carol, whose hash changed", "carol:" + carolTok, Match, false, 1, 1},
	} {
		if _, hit := v.Cached(tc.token); hit != tc.cached {
			t.Errorf("%s: Cached hit %v, want %v", tc.name, hit, tc.cached)
		}
		before := v.Stats().Checks
		r := v.Verify(context.Background(), tc.token)
		if r.Outcome != tc.outcome || r.Cached != tc.cached || r.Line != tc.line || r.Generation != 2 {
			t.Errorf("%s: %+v, want %s cached %v line %d generation 2", tc.name, r, tc.outcome, tc.cached, tc.line)
		}
		if n := v.Stats().Checks - before; n != tc.checks {
			t.Errorf("%s: %d bcrypt comparisons, want %d", tc.name, n, tc.checks)
		}
	}
}

func TestConcurrentVerificationsNeverExceedTheWorkers(t *testing.T) {
	const workers = 3
	var waits atomic.Int64
	v := newVerifier(t, fallbackStore(t, cheapHash(t, "token-7")), VerifierOptions{
		Workers: workers, QueueLen: 64, MaxWait: time.Minute,
		OnWait: func(time.Duration) { waits.Add(1) },
	})
	g := newGate(v)
	var wg sync.WaitGroup
	results := make([]Result, 50)
	for i := range results {
		wg.Go(func() { results[i] = v.Verify(context.Background(), fmt.Sprintf("token-%d", i)) })
	}
	waitFor(t, "all workers busy", func() bool { return v.Stats().InFlight == workers })
	g.open()
	wg.Wait()
	st := v.Stats()
	if st.MaxInFlight != workers || st.Checks != 50 || st.Shed != 0 || st.InFlight != 0 || st.Queued != 0 {
		t.Fatalf("stats %+v", st)
	}
	if waits.Load() != 50 {
		t.Fatalf("OnWait called %d times, want 50", waits.Load())
	}
	for i, r := range results {
		if want := map[bool]Outcome{true: Match, false: NoMatch}[i == 7]; r.Outcome != want {
			t.Fatalf("token-%d: %+v", i, r)
		}
	}
}

func TestBusyWhenTheQueueIsFull(t *testing.T) {
	v := newVerifier(t, fallbackStore(t, cheapHash(t, "b")), VerifierOptions{Workers: 1, QueueLen: 1, MaxWait: time.Minute})
	g := newGate(v)
	defer g.open()
	first, second := make(chan Result, 1), make(chan Result, 1)
	go func() { first <- v.Verify(context.Background(), "a") }()
	waitFor(t, "the worker to be busy", func() bool { return v.Stats().InFlight == 1 })
	go func() { second <- v.Verify(context.Background(), "b") }()
	waitFor(t, "the queue to fill", func() bool { return v.Stats().Queued == 1 })

	start := time.Now()
	if r := v.Verify(context.Background(), "c"); r.Outcome != Busy || r.Generation != 1 {
		t.Fatalf("third: %+v", r)
	}
	if time.Since(start) > time.Second {
		t.Fatal("Busy was not immediate")
	}
	if st := v.Stats(); st.Shed != 1 || st.Checks != 1 {
		t.Fatalf("stats %+v", st)
	}
	g.open()
	if r := <-first; r.Outcome != NoMatch {
		t.Fatalf("first: %+v", r)
	}
	if r := <-second; r.Outcome != Match {
		t.Fatalf("second: %+v", r)
	}
}

func TestBusyAfterMaxWaitWithoutBcrypt(t *testing.T) {
	v := newVerifier(t, fallbackStore(t, cheapHash(t, "x")), VerifierOptions{Workers: 1, QueueLen: 4, MaxWait: 20 * time.Millisecond})
	g := newGate(v)
	defer g.open()
	go v.Verify(context.Background(), "holds the worker")
	waitFor(t, "the worker to be busy", func() bool { return v.Stats().InFlight == 1 })
	if r := v.Verify(context.Background(), "x"); r.Outcome != Busy {
		t.Fatalf("got %+v", r)
	}
	if st := v.Stats(); st.Queued != 0 || st.Shed != 1 || st.Checks != 1 {
		t.Fatalf("stats %+v", st)
	}
	g.open()
	// The abandoned job is skipped; the pool still works.
	waitFor(t, "the worker to be free", func() bool { return v.Stats().InFlight == 0 })
	if r := v.Verify(context.Background(), "x"); r.Outcome != Match {
		t.Fatalf("after: %+v", r)
	}
	if st := v.Stats(); st.Checks != 2 {
		t.Fatalf("the abandoned job ran: %+v", st)
	}
}

func TestIdenticalTokensInFlightShareOneCheck(t *testing.T) {
	v := newVerifier(t, fallbackStore(t, cheapHash(t, "same")), VerifierOptions{Workers: 4, MaxWait: time.Minute})
	g := newGate(v)
	var wg sync.WaitGroup
	results := make([]Result, 20)
	for i := range results {
		wg.Go(func() { results[i] = v.Verify(context.Background(), "same") })
	}
	waitFor(t, "every caller to miss the cache", func() bool { return v.Stats().CacheMisses == 20 })
	g.open()
	wg.Wait()
	for _, r := range results {
		if r.Outcome != Match {
			t.Fatalf("got %+v", r)
		}
	}
	if st := v.Stats(); st.Checks != 1 {
		t.Fatalf("%d bcrypt checks for one token, want 1", st.Checks)
	}
}

func TestCancelledCallerDoesNotCancelTheSharedCheck(t *testing.T) {
	v := newVerifier(t, fallbackStore(t, cheapHash(t, "t")), VerifierOptions{Workers: 1, MaxWait: time.Minute})
	g := newGate(v)
	defer g.open()
	go v.Verify(context.Background(), "holds the worker")
	waitFor(t, "the worker to be busy", func() bool { return v.Stats().InFlight == 1 })
	patient := make(chan Result, 1)
	go func() { patient <- v.Verify(context.Background(), "t") }()
	waitFor(t, "the patient caller to queue", func() bool { return v.Stats().Queued == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r := v.Verify(ctx, "t"); r.Outcome != Busy {
		t.Fatalf("cancelled caller: %+v", r)
	}
	g.open()
	if r := <-patient; r.Outcome != Match {
		t.Fatalf("patient caller: %+v", r)
	}
}

func TestVerifyAfterCloseIsBusy(t *testing.T) {
	v := NewVerifier(fallbackStore(t, cheapHash(t, "x")), VerifierOptions{Workers: 2, QueueLen: 4, MaxWait: time.Second})
	v.Close()
	v.Close() // idempotent
	if r := v.Verify(context.Background(), "x"); r.Outcome != Busy {
		t.Fatalf("got %+v", r)
	}
}

func TestNewVerifierRefusesZeroInsteadOfPickingADefault(t *testing.T) {
	for _, opts := range []VerifierOptions{
		{Workers: 0, QueueLen: 1, MaxWait: time.Second},
		{Workers: 1, QueueLen: 0, MaxWait: time.Second},
		{Workers: 1, QueueLen: 1, MaxWait: 0},
		{Workers: 1, QueueLen: -1, MaxWait: time.Second},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewVerifier(%+v) did not panic", opts)
				}
			}()
			NewVerifier(fallbackStore(t, cheapHash(t, "x")), opts).Close()
		}()
	}
}

func TestSuccessCacheEvictsExpiredThenOldest(t *testing.T) {
	now := time.Now()
	k := func(b byte) [32]byte { return [32]byte{b} }
	snap := &Snapshot{Generation: 1, Creds: Credentials{Hashes: []string{"h1", "h2", "h3", "h4"}}}
	c := newSuccessCache(2, time.Minute)
	c.put(k(1), snap, 1, now)
	c.put(k(2), snap, 2, now.Add(time.Second))
	c.put(k(3), snap, 3, now.Add(2*time.Second)) // evicts 1, the oldest
	if _, ok := c.get(k(1), snap, now); ok {
		t.Fatal("oldest not evicted")
	}
	if line, ok := c.get(k(3), snap, now); !ok || line != 3 {
		t.Fatal("newest missing")
	}
	if _, ok := c.get(k(3), &Snapshot{Generation: 2, Creds: Credentials{Hashes: []string{"h1"}}}, now); ok {
		t.Fatal("entry counted in a generation without its line")
	}
	c.put(k(4), snap, 4, now.Add(2*time.Minute)) // 2 is expired by then
	if _, ok := c.get(k(2), snap, now.Add(2*time.Minute)); ok || c.len() != 1 {
		t.Fatalf("expired entry kept, len %d", c.len())
	}
	if _, ok := c.get(k(4), snap, now.Add(4*time.Minute)); ok {
		t.Fatal("expired entry returned")
	}
	off := newSuccessCache(-1, time.Minute)
	off.put(k(1), snap, 1, now)
	if _, ok := off.get(k(1), snap, now); ok {
		t.Fatal("disabled cache returned an entry")
	}
}

func TestOutcomeNames(t *testing.T) {
	for o, want := range map[Outcome]string{NoMatch: "no_match", Match: "match", Busy: "busy", TooLong: "too_long", NoCredentials: "no_credentials", 9: "outcome_9"} {
		if o.String() != want {
			t.Errorf("%d: %s", int(o), o)
		}
	}
}
