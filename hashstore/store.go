package hashstore

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// StoreOptions configures a Store.
type StoreOptions struct {
	// Path of the credential file to load and watch. May be empty when
	// Fallback is set.
	Path string
	// PollInterval is how often the file is re-read even without an fsnotify
	// event (single-file bind mounts edited on the host deliver none to a
	// directory watch). It must be set when Path is: negative turns polling
	// off, and 0 is refused rather than replaced by a guess.
	PollInterval time.Duration
	// Debounce groups bursts of events into one reload. 0 means 50 ms.
	Debounce time.Duration
	// SettleDelay is how long the watcher waits before re-reading a file
	// that just failed to load, because an in-place write (truncate, then
	// write) is briefly empty or partial. Only a failure that survives the
	// re-read is reported. 0 means 100 ms.
	SettleDelay time.Duration
	// Fallback is used when Path does not exist (COMFYUI_PASSWORD hashed in
	// memory). A file that exists always wins.
	Fallback *Credentials
	// Logger receives load, reload and failure events (never secrets).
	Logger zerolog.Logger
}

const (
	defaultDebounce = 50 * time.Millisecond
	defaultSettle   = 100 * time.Millisecond
	// FallbackSource is Snapshot.Source for credentials hashed in memory.
	FallbackSource = "COMFYUI_PASSWORD"
	keyMissing     = "missing"
)

// loaded is what the hot path reads through one atomic pointer: the public
// snapshot plus the SHA-256 of each hash string, so MatchHash compares
// fixed-length digests and leaks nothing through lengths.
type loaded struct {
	snap    *Snapshot
	digests [][32]byte
	// bare[i] is 1 when hash i is a bare line, 0 for a user's line: only
	// bare lines may be presented as tokens (MatchHash).
	bare []int
	// bareLens are the lengths of the bare hash lines (60 for every
	// bcrypt hash). A token of another length equals none of them, and
	// MatchHash answers it without hashing: the raw tokens of every
	// API request take that path, and a hash's length is public.
	bareLens []int
	key      string // content key of the file bytes it came from
}

// Store holds the credentials in force and reloads them when the file changes.
type Store struct {
	opts StoreOptions
	log  zerolog.Logger
	path string // absolute Path, "" when running on Fallback only

	cur atomic.Pointer[loaded]
	// display is the vetted username of one loaded state (see DisplayName);
	// displayMu orders its stores against installs.
	display   atomic.Pointer[displayName]
	displayMu sync.Mutex
	// failures counts loads that were refused (each distinct bad content
	// once), for the reload metrics.
	failures atomic.Uint64

	mu      sync.Mutex // guards changed and problem, read by Status and Changed
	changed chan struct{}
	problem *ParseError

	// Owned by the single goroutine that loads (NewStore, then Run).
	lastKey    string // content key of the newest state acted on
	lastLogged string // newest problem logged, to log each problem once
	mountPoint bool

	// Test hooks, set before Run: onSettle runs when a failed read is about
	// to be re-read, afterCheck after every check, noWatch turns fsnotify off.
	onSettle   func()
	afterCheck func()
	noWatch    bool
	// compareDigest is subtle.ConstantTimeCompare; tests wrap it to see
	// how many comparisons MatchHash makes, and of what lengths.
	compareDigest func(x, y []byte) int
}

// NewStore loads the file once. A missing or invalid file is not an error
// here: the store starts not ready (fail closed) and keeps watching. An error
// is returned only for unusable options.
func NewStore(opts StoreOptions) (*Store, error) {
	if opts.Path == "" && opts.Fallback == nil {
		return nil, errors.New("hashstore: NewStore needs a credential file path or a fallback")
	}
	if opts.Fallback != nil && len(opts.Fallback.Hashes) == 0 {
		return nil, errors.New("hashstore: NewStore fallback credentials hold no hash")
	}
	if opts.Path != "" && opts.PollInterval == 0 {
		return nil, errors.New("hashstore: NewStore needs a PollInterval for a credential file (negative turns polling off)")
	}
	if opts.Debounce <= 0 {
		opts.Debounce = defaultDebounce
	}
	if opts.SettleDelay <= 0 {
		opts.SettleDelay = defaultSettle
	}
	s := &Store{opts: opts, log: opts.Logger, changed: make(chan struct{}), compareDigest: subtle.ConstantTimeCompare}
	if opts.Path != "" {
		abs, err := filepath.Abs(opts.Path)
		if err != nil {
			return nil, fmt.Errorf("hashstore: credential file path %q: %w", opts.Path, err)
		}
		s.path = abs
		s.detectFileMount()
	}

	if s.path == "" {
		s.install(*opts.Fallback, "", FallbackSource)
		return s, nil
	}
	if _, err := os.Stat(s.path); errors.Is(err, fs.ErrNotExist) && opts.Fallback != nil {
		s.lastKey = keyMissing
		s.log.Info().Str("path", s.path).
			Msg("credential file does not exist; using the password from COMFYUI_PASSWORD until it does")
		s.install(*opts.Fallback, keyMissing, FallbackSource)
		return s, nil
	}
	s.check(context.Background(), true)
	return s, nil
}

// detectFileMount warns when the credential file is itself a mount point.
func (s *Store) detectFileMount() {
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	candidates := []string{s.path}
	if real, err := filepath.EvalSymlinks(s.path); err == nil && real != s.path {
		candidates = append(candidates, real)
	}
	for _, p := range candidates {
		if isMountPoint(info, p) {
			s.mountPoint = true
			s.log.Warn().Str("path", s.path).
				Msg("the credential file is a single-file bind mount: in-place edits are seen, but a host-side rename will never be seen; mount the directory instead")
			return
		}
	}
}

// read returns the file bytes and a content key, or a load problem. A
// problem's key is its sentence, so the same problem is logged once.
func (s *Store) read() ([]byte, string, *ParseError) {
	data, perr := readCredentialFile(s.path)
	switch {
	case perr == nil:
		sum := sha256.Sum256(data)
		return data, hex.EncodeToString(sum[:]), nil
	case perr.Reason == ReasonMissing:
		return nil, keyMissing, perr
	default:
		return nil, "err:" + perr.Message, perr
	}
}

// readCredentialFile reads the credential file at path for every reader of
// it (the gateway's Store, `token check` and `token rotate`), so that each
// problem gets the same sentence wherever it is met.
func readCredentialFile(path string) ([]byte, *ParseError) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &ParseError{Reason: ReasonMissing, Message: fmt.Sprintf(
			"credential file %s does not exist: create it with `comfyui-auth token generate` (or write a hash from `comfyui-auth hash` into it), or point --hash-file / COMFYUI_AUTH_TOKEN_FILE at the file the gateway reads; until it exists, every request is refused", path)}
	}
	if err != nil {
		return nil, unreadable(path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, unreadable(path, err)
	}
	if fi.IsDir() {
		return nil, &ParseError{Reason: ReasonUnreadable, Message: fmt.Sprintf(
			"credential file %s is a directory: point the path at the hash file inside it", path)}
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, unreadable(path, err)
	}
	if len(data) > MaxFileBytes {
		return nil, &ParseError{Reason: ReasonTooLarge, Message: fmt.Sprintf(
			"credential file %s is %d bytes, not a credential file: point the path at the bcrypt hash file", path, max(fi.Size(), int64(len(data))))}
	}
	return data, nil
}

func unreadable(path string, err error) *ParseError {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the path is already in the sentence
	}
	return &ParseError{Reason: ReasonUnreadable, Message: fmt.Sprintf(
		"credential file %s cannot be read (%v): make it readable by the gateway's user", path, err)}
}

// check re-reads the file and acts on a change. A failure is re-read once
// after SettleDelay (unless settled) so that the empty or half-written file
// seen in the middle of an in-place write does not become a logged error.
func (s *Store) check(ctx context.Context, settled bool) {
	data, key, perr := s.read()
	if key == s.lastKey {
		return
	}
	var creds Credentials
	if perr == nil {
		var err error
		creds, err = Parse(data)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				pe = &ParseError{Reason: ReasonNotHash, Message: err.Error()}
			}
			// Name the file: the sentence from Parse does not know it.
			perr = &ParseError{Line: pe.Line, Reason: pe.Reason, Message: "credential file " + s.path + ": " + pe.Message}
		}
	}
	if perr != nil {
		if !settled {
			if s.onSettle != nil {
				s.onSettle()
			}
			t := time.NewTimer(s.opts.SettleDelay)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			s.check(ctx, true)
			return
		}
		s.fail(key, perr)
		return
	}
	s.lastKey = key
	if cur := s.cur.Load(); cur != nil && cur.key == key {
		// Back to the bytes already in force (e.g. a garbage write undone).
		s.recovered()
		return
	}
	s.install(creds, key, s.path)
}

// fail records a problem while keeping the last good credentials.
func (s *Store) fail(key string, perr *ParseError) {
	s.lastKey = key
	s.failures.Add(1)
	s.mu.Lock()
	s.problem = perr
	s.mu.Unlock()
	if perr.Message == s.lastLogged {
		return
	}
	s.lastLogged = perr.Message
	cur := s.cur.Load()
	if cur == nil {
		s.log.Error().Str("path", s.path).Str("reason", string(perr.Reason)).
			Msg("no credentials loaded, every request is refused: " + perr.Message)
		return
	}
	s.log.Warn().Str("path", s.path).Str("reason", string(perr.Reason)).
		Uint64("generation", cur.snap.Generation).Strs("fingerprints", cur.snap.Fingerprints).
		Msg("keeping the last good credentials (" + describeUsers(cur.snap.userCounts()) + "): " + perr.Message)
}

func (s *Store) recovered() {
	s.mu.Lock()
	had := s.problem != nil
	s.problem = nil
	s.mu.Unlock()
	s.lastLogged = ""
	if had {
		s.log.Info().Str("path", s.path).Msg("credential file is valid again; credentials unchanged")
	}
}

// install makes creds the credentials in force with the next generation,
// then wakes everyone waiting on Changed.
func (s *Store) install(creds Credentials, key, source string) {
	prev := s.cur.Load()
	gen := uint64(1)
	var prevFP []string
	if prev != nil {
		gen = prev.snap.Generation + 1
		prevFP = prev.snap.Fingerprints
	}
	if len(creds.Users) != len(creds.Hashes) {
		// Hand-built credentials (the COMFYUI_PASSWORD fallback) name no
		// user: every line is bare.
		users := make([]string, len(creds.Hashes))
		copy(users, creds.Users)
		creds.Users = users
	}
	snap := &Snapshot{Creds: creds, Generation: gen, Source: source, LoadedAt: time.Now()}
	snap.users = newUserIndex(&snap.Creds)
	l := &loaded{snap: snap, key: key}
	for _, h := range creds.Hashes {
		snap.Fingerprints = append(snap.Fingerprints, Fingerprint(h))
		l.digests = append(l.digests, sha256.Sum256([]byte(h)))
	}
	for i, u := range creds.Users {
		l.bare = append(l.bare, subtle.ConstantTimeEq(int32(len(u)), 0))
		if u == "" && !slices.Contains(l.bareLens, len(creds.Hashes[i])) {
			l.bareLens = append(l.bareLens, len(creds.Hashes[i]))
		}
	}
	s.mu.Lock()
	s.problem = nil
	s.mu.Unlock()
	s.cur.Store(l)

	s.lastLogged = ""
	users, bare := snap.userCounts()
	ev := s.log.Info().Str("source", source).Uint64("generation", gen).
		Int("hashes", len(creds.Hashes)).Strs("fingerprints", snap.Fingerprints).
		Int("users", len(users)).Int("bare_lines", bare).
		Dict("user_fingerprints", userFingerprints(snap)).
		Bool("username", creds.Username != "")
	summary := describeUsers(users, bare)
	if prev == nil {
		ev.Msg("credentials loaded: " + summary)
	} else {
		added, removed := userChanges(prev.snap, snap)
		if len(added) > 0 {
			ev.Strs("users_added", added)
			summary += "; added " + strings.Join(added, ", ")
		}
		if len(removed) > 0 {
			// Their tokens stop matching now: the verifier's cache is
			// dropped at every reload, and their sessions are bound to
			// lines that no longer exist.
			ev.Strs("users_removed", removed)
			summary += "; removed " + strings.Join(removed, ", ") + " (their tokens and sessions no longer work)"
		}
		ev.Strs("previous_fingerprints", prevFP).Msg("credentials reloaded: " + summary)
	}
	for _, w := range creds.Warnings {
		s.log.Warn().Str("source", source).Msg(w)
	}
	if creds.Username != "" {
		// bcrypt per hash: done once per content change, off the reload
		// path except for the first load of a file without named lines,
		// so that reloads stay fast and ComfyUI-Login's start-up page
		// already greets by name. A class file's lines would hold the
		// start for a quarter second each.
		if prev == nil && len(users) == 0 {
			s.vetUsername(l)
		} else {
			go s.vetUsername(l)
		}
	}

	// Wake waiters last, so that whoever reacts to Changed finds the new
	// snapshot, a cleared problem and the log line already written.
	s.mu.Lock()
	old := s.changed
	s.changed = make(chan struct{})
	s.mu.Unlock()
	close(old)
}

// userFingerprints lists each named user's hash fingerprints, for logs:
// which of a user's lines changed shows without a hash in the log.
func userFingerprints(snap *Snapshot) *zerolog.Event {
	d := zerolog.Dict()
	for _, name := range snap.UserNames() {
		var fps []string
		for _, i := range snap.UserLines(name) {
			fps = append(fps, snap.Fingerprints[i])
		}
		d.Strs(name, fps)
	}
	return d
}

// userChanges lists the names in next and not in prev (added), and in prev
// and not in next (removed), each in file order.
func userChanges(prev, next *Snapshot) (added, removed []string) {
	for _, n := range next.UserNames() {
		if !prev.HasUser(n) {
			added = append(added, n)
		}
	}
	for _, n := range prev.UserNames() {
		if !next.HasUser(n) {
			removed = append(removed, n)
		}
	}
	return added, removed
}

// Snapshot returns the credentials in force, or nil when none was ever loaded.
func (s *Store) Snapshot() *Snapshot {
	if l := s.cur.Load(); l != nil {
		return l.snap
	}
	return nil
}

// Status reports readiness and the newest load error.
func (s *Store) Status() Status {
	cur := s.cur.Load()
	s.mu.Lock()
	p := s.problem
	s.mu.Unlock()
	var st Status
	if cur != nil {
		st.Ready = true
		st.LastGood = cur.snap.LoadedAt
		st.Generation = cur.snap.Generation
		st.Users, st.BareLines = cur.snap.userCounts()
	}
	st.Failures = s.failures.Load()
	switch {
	case p != nil && cur == nil:
		st.LastError = p.Message
		st.Reason = p.Message
	case p != nil:
		st.LastError = p.Message
		st.Reason = fmt.Sprintf("keeping the credentials loaded at %s (generation %d, %s): %s",
			cur.snap.LoadedAt.UTC().Format(time.RFC3339), cur.snap.Generation, describeUsers(st.Users, st.BareLines), p.Message)
	case cur == nil:
		st.Reason = "no credentials loaded yet"
	}
	return st
}

// Changed returns a channel closed at the next successful reload. Callers
// re-call Changed after it fires.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// MatchHash reports whether token equals one of the loaded bare hash lines,
// comparing in constant time against every hash. It returns the 1-based hash
// line (the position among the hashes, which is the file line for
// ComfyUI-Login's layout) and the generation it matched in.
//
// Only bare lines count: the hash-as-token compatibility is ComfyUI-Login's,
// whose file has no named lines, and a named user's hash is not a credential
// (a copy of the file must not let anyone in as that user).
//
// A token whose length is no bare line's is answered at once: hashes have
// the public bcrypt length (60), so that says nothing of any hash. Otherwise
// both sides are reduced to SHA-256 first, so the comparison runs over 32
// bytes, and every hash is compared even after a match: timing says nothing
// about which hash, or whether any, matched.
func (s *Store) MatchHash(token string) (line int, gen uint64, ok bool) {
	l := s.cur.Load()
	if l == nil {
		return 0, 0, false
	}
	if !slices.Contains(l.bareLens, len(token)) {
		return 0, l.snap.Generation, false
	}
	d := sha256.Sum256([]byte(token))
	found := 0
	for i := range l.digests {
		eq := s.compareDigest(d[:], l.digests[i][:]) & l.bare[i]
		first := eq & subtle.ConstantTimeEq(int32(found), 0)
		found = subtle.ConstantTimeSelect(first, i+1, found)
	}
	return found, l.snap.Generation, found != 0
}
