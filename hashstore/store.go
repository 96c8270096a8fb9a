package hashstore

import (
	"context"
	"errors"
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
	// directory watch). 0 means the 2 s default; negative disables polling.
	PollInterval time.Duration
	// Debounce groups bursts of events into one reload. 0 means 50 ms.
	Debounce time.Duration
	// Fallback is used when Path does not exist (COMFYUI_PASSWORD hashed in
	// memory). A file that exists always wins.
	Fallback *Credentials
	// Logger receives load, reload and failure events (never secrets).
	Logger zerolog.Logger
}

// Store holds the credentials in force and reloads them when the file changes.
type Store struct {
	opts StoreOptions
}

// NewStore loads the file once. A missing or invalid file is not an error
// here: the store starts not ready (fail closed) and keeps watching. An error
// is returned only for unusable options.
func NewStore(opts StoreOptions) (*Store, error) {
	return nil, errors.New("hashstore: NewStore not implemented")
}

// Run watches the file until ctx is done.
func (s *Store) Run(ctx context.Context) error { <-ctx.Done(); return nil }

// Snapshot returns the credentials in force, or nil when none was ever loaded.
func (s *Store) Snapshot() *Snapshot { return nil }

// Status reports readiness and the newest load error.
func (s *Store) Status() Status { return Status{} }

// Changed returns a channel closed at the next successful reload. Callers
// re-call Changed after it fires.
func (s *Store) Changed() <-chan struct{} { return nil }

// MatchHash reports whether token equals one of the loaded hash strings,
// comparing in constant time against every hash. It returns the 1-based hash
// line and the generation it matched in.
func (s *Store) MatchHash(token string) (line int, gen uint64, ok bool) { return 0, 0, false }
