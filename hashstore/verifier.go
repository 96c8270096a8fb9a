package hashstore

import (
	"context"
	"time"
)

// Outcome is the result class of a raw-token verification.
type Outcome int

const (
	// NoMatch: the token matches no loaded hash.
	NoMatch Outcome = iota
	// Match: the token matches hash line Result.Line.
	Match
	// Busy: the pool's queue is full or the wait limit passed; no bcrypt was
	// spent. The HTTP layer answers 503 with Retry-After.
	Busy
	// TooLong: the token is over MaxTokenBytes; refused without bcrypt.
	TooLong
	// NoCredentials: nothing valid is loaded; fail closed.
	NoCredentials
)

// Result of Verifier.Verify.
type Result struct {
	Outcome    Outcome
	Line       int    // 1-based hash line on Match
	Generation uint64 // credential generation the decision was made in
	Cached     bool   // answered from the success cache, no bcrypt
}

// VerifierOptions configures the bounded pool.
type VerifierOptions struct {
	// Workers is the maximum number of concurrent bcrypt comparisons.
	Workers int
	// QueueLen bounds how many verifications may wait for a worker.
	QueueLen int
	// MaxWait bounds how long a verification waits for a worker.
	MaxWait time.Duration
	// CacheSize bounds the success cache (entries); CacheTTL is its expiry.
	CacheSize int
	CacheTTL  time.Duration
}

// Stats are counters for tests and metrics.
type Stats struct {
	InFlight    int64 // bcrypt comparisons running now
	MaxInFlight int64 // highest InFlight ever seen
	Queued      int64 // verifications waiting for a worker now
	Checks      int64 // bcrypt comparisons executed
	CacheHits   int64
	CacheMisses int64
	Shed        int64 // verifications answered Busy
}

// Verifier checks raw tokens with bcrypt through a bounded pool.
type Verifier struct{}

// NewVerifier returns a Verifier over store's credentials.
func NewVerifier(store *Store, opts VerifierOptions) *Verifier { return &Verifier{} }

// Verify checks a raw token. It never blocks past opts.MaxWait or ctx.
func (v *Verifier) Verify(ctx context.Context, token string) Result { return Result{} }

// Stats returns a consistent copy of the counters.
func (v *Verifier) Stats() Stats { return Stats{} }

// Close stops the workers.
func (v *Verifier) Close() {}
