package hashstore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// testStore starts a Store on path with fast timings and polling off unless
// poll is set, so event tests prove the watcher alone sees the change.
type testStore struct {
	*Store
	logs   *logBuffer
	checks atomic.Int64
}

// Run returns nothing: it cannot fail for good, and an error result that is
// always nil would have every caller handle an error that never comes.
var _ func(*Store, context.Context) = (*Store).Run

func startStore(t *testing.T, path string, tweak func(*StoreOptions), before func(*Store)) *testStore {
	t.Helper()
	logs := &logBuffer{}
	opts := StoreOptions{
		Path:         path,
		PollInterval: -1,
		Debounce:     5 * time.Millisecond,
		SettleDelay:  20 * time.Millisecond,
		Logger:       zerolog.New(logs),
	}
	if tweak != nil {
		tweak(&opts)
	}
	s, err := NewStore(opts)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testStore{Store: s, logs: logs}
	s.afterCheck = func() { ts.checks.Add(1) }
	if before != nil {
		before(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// Run's first check means its watches are in place.
	waitFor(t, "Run to start", func() bool { return ts.checks.Load() > 0 })
	return ts
}

// reloadTo waits for the change made by do to be loaded, checks it bumped
// the generation by one and fired Changed, and that hash is in force.
func (ts *testStore) reloadTo(t *testing.T, hash string, do func()) {
	t.Helper()
	before := ts.Snapshot()
	ch := ts.Changed()
	do()
	waitClosed(t, "Changed after reload", ch)
	snap := ts.Snapshot()
	if snap.Generation != before.Generation+1 {
		t.Fatalf("generation %d after %d", snap.Generation, before.Generation)
	}
	if snap.Creds.Hashes[0] != hash {
		t.Fatalf("hash in force is %s, want %s", Fingerprint(snap.Creds.Hashes[0]), Fingerprint(hash))
	}
	if st := ts.Status(); !st.Ready || st.LastError != "" || st.Generation != snap.Generation {
		t.Fatalf("status after reload: %+v", st)
	}
}

func TestStoreReloads(t *testing.T) {
	h1, h2, h3 := cheapHash(t, "one"), cheapHash(t, "two"), cheapHash(t, "three")
	tests := []struct {
		name string
		poll bool
		do   func(t *testing.T, path string, next string)
	}{
		{"in-place rewrite", false, func(t *testing.T, path, next string) { writeFile(t, path, next+"\n") }},
		{"rename over", false, func(t *testing.T, path, next string) { renameOver(t, path, next) }},
		{"delete and recreate", false, func(t *testing.T, path, next string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			writeFile(t, path, next)
		}},
		{"in-place rewrite seen by polling alone", true, func(t *testing.T, path, next string) { writeFile(t, path, next) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "PASSWORD")
			writeFile(t, path, h1+"\nadmin\n")
			ts := startStore(t, path, func(o *StoreOptions) {
				if tt.poll {
					o.PollInterval = 10 * time.Millisecond
				}
			}, func(s *Store) { s.noWatch = tt.poll })
			if snap := ts.Snapshot(); snap == nil || snap.Generation != 1 || snap.Creds.Username != "admin" || snap.Source != path {
				t.Fatalf("initial snapshot %+v", snap)
			}
			ts.reloadTo(t, h2, func() { tt.do(t, path, h2) })
			ts.reloadTo(t, h3, func() { tt.do(t, path, h3) })
			if logs := ts.logs.String(); strings.Contains(logs, h2) || strings.Contains(logs, h3) || !strings.Contains(logs, Fingerprint(h3)) {
				t.Fatalf("logs must name fingerprints, never hashes:\n%s", logs)
			}
		})
	}
}

func TestStoreFollowsKubernetesSymlinkSwap(t *testing.T) {
	h1, h2, h3 := cheapHash(t, "one"), cheapHash(t, "two"), cheapHash(t, "three")
	dir := t.TempDir()
	gen := 0
	// publish mimics the kubelet's atomic writer: a new timestamped
	// directory, a new ..data symlink renamed over the old one, the old
	// directory removed.
	publish := func(hash string) {
		gen++
		ts := filepath.Join(dir, "..2024_"+string(rune('a'+gen)))
		if err := os.Mkdir(ts, 0o700); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(ts, "token"), hash)
		old, _ := os.Readlink(filepath.Join(dir, "..data"))
		if err := os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		if old != "" {
			if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(h1)
	path := filepath.Join(dir, "token")
	if err := os.Symlink(filepath.Join("..data", "token"), path); err != nil {
		t.Fatal(err)
	}
	ts := startStore(t, path, nil, nil)
	if snap := ts.Snapshot(); snap == nil || snap.Creds.Hashes[0] != h1 {
		t.Fatal("initial load through the symlinks failed")
	}
	ts.reloadTo(t, h2, func() { publish(h2) })
	ts.reloadTo(t, h3, func() { publish(h3) })
}

func TestStoreKeepsLastGoodAndRecovers(t *testing.T) {
	good, next := cheapHash(t, "good"), cheapHash(t, "next")
	tests := []struct {
		name   string
		bad    func(t *testing.T, path string)
		reason string
	}{
		{"garbage", func(t *testing.T, path string) { writeFile(t, path, "garbage garbage garbage\n") }, "raw token"},
		{"empty", func(t *testing.T, path string) { writeFile(t, path, "") }, "is empty"},
		{"truncated hash", func(t *testing.T, path string) { writeFile(t, path, good[:50]) }, "Docker Compose"},
		{"deleted", func(t *testing.T, path string) { _ = os.Remove(path) }, "does not exist"},
		{"too large", func(t *testing.T, path string) { writeFile(t, path, strings.Repeat("#", MaxFileBytes+10)) }, "65546 bytes, not a credential file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "token")
			writeFile(t, path, good)
			ts := startStore(t, path, nil, nil)
			tt.bad(t, path)
			waitFor(t, "the problem to be reported", func() bool { return ts.Status().LastError != "" })
			st := ts.Status()
			if !st.Ready || st.Generation != 1 || !strings.Contains(st.LastError, tt.reason) || !strings.Contains(st.Reason, "keeping the credentials") {
				t.Fatalf("status %+v", st)
			}
			if snap := ts.Snapshot(); snap.Creds.Hashes[0] != good {
				t.Fatal("last good credentials were dropped")
			}
			if line, _, ok := ts.MatchHash(good); !ok || line != 1 {
				t.Fatal("last good hash no longer matches")
			}
			ts.reloadTo(t, next, func() { writeFile(t, path, next) })
			if n := strings.Count(ts.logs.String(), "keeping the last good credentials"); n != 1 {
				t.Fatalf("problem logged %d times, want once", n)
			}
		})
	}
}

func TestStoreLogsAProblemOncePerDistinctProblem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	writeFile(t, path, cheapHash(t, "x"))
	ts := startStore(t, path, func(o *StoreOptions) { o.PollInterval = 2 * time.Millisecond }, nil)
	writeFile(t, path, "not-a-hash")
	waitFor(t, "the problem", func() bool { return ts.Status().LastError != "" })
	seen := ts.checks.Load()
	waitFor(t, "twenty more polls", func() bool { return ts.checks.Load() > seen+20 })
	if n := strings.Count(ts.logs.String(), "keeping the last good"); n != 1 {
		t.Fatalf("%d warnings for one problem, want 1:\n%s", n, ts.logs)
	}
	writeFile(t, path, "$2b$12$short")
	waitFor(t, "the second problem", func() bool { return strings.Count(ts.logs.String(), "keeping the last good") == 2 })
}

func TestStoreSettlesAPartialInPlaceWrite(t *testing.T) {
	good := cheapHash(t, "good")
	path := filepath.Join(t.TempDir(), "token")
	writeFile(t, path, good)
	var settles atomic.Int64
	ts := startStore(t, path, nil, func(s *Store) {
		// The writer finishes while the store waits to re-read.
		s.onSettle = func() {
			settles.Add(1)
			writeFile(t, path, good)
		}
	})
	seen := ts.checks.Load()
	writeFile(t, path, good[:30]) // the half-written state a reader can catch
	waitFor(t, "the settle re-read", func() bool { return settles.Load() > 0 && ts.checks.Load() > seen })
	st := ts.Status()
	if st.LastError != "" || st.Generation != 1 {
		t.Fatalf("a write caught halfway became a problem: %+v", st)
	}
	if strings.Contains(ts.logs.String(), "keeping the last good") {
		t.Fatalf("a write caught halfway was logged:\n%s", ts.logs)
	}
}

func TestStoreStartsNotReadyAndFailsClosed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	ts := startStore(t, path, nil, nil)
	st := ts.Status()
	if st.Ready || ts.Snapshot() != nil || !strings.Contains(st.Reason, "`comfyui-auth token generate`") {
		t.Fatalf("status %+v", st)
	}
	if _, _, ok := ts.MatchHash(""); ok {
		t.Fatal("empty token matched with no credentials")
	}
	if logs := ts.logs.String(); !strings.Contains(logs, `"level":"error"`) || !strings.Contains(logs, path) {
		t.Fatalf("missing file not logged as an error naming it:\n%s", logs)
	}
	h := cheapHash(t, "x")
	ch := ts.Changed()
	writeFile(t, path, h)
	waitClosed(t, "first load", ch)
	if st := ts.Status(); !st.Ready || st.Generation != 1 || st.LastError != "" || st.Reason != "" {
		t.Fatalf("status %+v", st)
	}
}

func TestStoreUsesFallbackUntilTheFileExists(t *testing.T) {
	fb, file := cheapHash(t, "env password"), cheapHash(t, "file")
	path := filepath.Join(t.TempDir(), "token")
	ts := startStore(t, path, func(o *StoreOptions) { o.Fallback = &Credentials{Hashes: []string{fb}} }, nil)
	if snap := ts.Snapshot(); snap == nil || snap.Source != FallbackSource || !ts.Status().Ready {
		t.Fatalf("fallback not in force: %+v", snap)
	}
	ts.reloadTo(t, file, func() { writeFile(t, path, file) })
	if ts.Snapshot().Source != path {
		t.Fatal("the file did not win over the fallback")
	}
}

func TestNewStoreRefusesUnusableOptions(t *testing.T) {
	for _, o := range []StoreOptions{{}, {Fallback: &Credentials{}}, {Path: "token"}} {
		if _, err := NewStore(o); err == nil {
			t.Errorf("NewStore(%+v) accepted", o)
		}
	}
	s, err := NewStore(StoreOptions{Fallback: &Credentials{Hashes: []string{vectorHash}}, Logger: zerolog.Nop()})
	if err != nil || s.Snapshot().Source != FallbackSource {
		t.Fatalf("fallback-only store: %v", err)
	}
}

func TestMatchHashComparesEveryHashLine(t *testing.T) {
	h1, h2, h3 := cheapHash(t, "a"), cheapHash(t, "b"), cheapHash(t, "c")
	path := filepath.Join(t.TempDir(), "token")
	writeFile(t, path, "# rotation\n"+h1+"\n"+h2+"\nadmin\n"+h3+"\n")
	s, err := NewStore(StoreOptions{Path: path, PollInterval: -1, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		token string
		line  int
		ok    bool
	}{
		{h1, 1, true}, {h2, 2, true}, {h3, 3, true},
		{"", 0, false}, {"a", 0, false}, {h1[:59], 0, false}, {h1 + "x", 0, false},
		{vectorHash, 0, false}, {strings.Repeat("x", 1000), 0, false},
	}
	for _, tt := range tests {
		line, gen, ok := s.MatchHash(tt.token)
		if line != tt.line || ok != tt.ok || gen != 1 {
			t.Errorf("MatchHash(%s) = %d, %d, %v; want %d, 1, %v", Fingerprint(tt.token), line, gen, ok, tt.line, tt.ok)
		}
	}
}
