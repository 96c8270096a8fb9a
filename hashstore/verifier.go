package hashstore

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sync/singleflight"
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

// String names the outcome for logs and metric labels.
func (o Outcome) String() string {
	switch o {
	case NoMatch:
		return "no_match"
	case Match:
		return "match"
	case Busy:
		return "busy"
	case TooLong:
		return "too_long"
	case NoCredentials:
		return "no_credentials"
	}
	return "outcome_" + strconv.Itoa(int(o))
}

// Result of Verifier.Verify.
type Result struct {
	Outcome    Outcome
	Line       int    // 1-based hash line on Match
	Generation uint64 // credential generation the decision was made in
	Cached     bool   // answered from the success cache, no bcrypt
}

// VerifierOptions configures the bounded pool. Workers, QueueLen and MaxWait
// have no default here: NewVerifier panics on a zero or negative one, so a
// value a person set can never be swapped for another behind their back
// (cmd/comfyui-auth holds the defaults and server.Config.Validate refuses
// such values with a sentence first).
type VerifierOptions struct {
	// Workers is the maximum number of concurrent bcrypt comparisons.
	Workers int
	// QueueLen bounds how many verifications may wait for a worker.
	QueueLen int
	// MaxWait bounds how long a verification waits for a worker.
	MaxWait time.Duration
	// OnWait, when set, is called by a worker with the time each job waited
	// in the queue (for a latency histogram). It must not block.
	OnWait func(time.Duration)
}

// The success cache holds more distinct tokens than a gateway's clients
// plausibly use (1024 entries stay well under a megabyte), and an entry
// lives long enough to spare a busy client's repeated requests a bcrypt
// check; every credential reload drops it anyway. Neither is worth a
// setting.
const (
	successCacheSize = 1024
	successCacheTTL  = 10 * time.Minute
)

// Stats are counters for tests and metrics.
type Stats struct {
	InFlight     int64 // bcrypt comparisons running now
	MaxInFlight  int64 // highest InFlight ever seen
	Queued       int64 // verifications waiting for a worker now
	Checks       int64 // bcrypt comparisons executed
	CacheHits    int64
	CacheMisses  int64
	Shed         int64 // verifications answered Busy
	CacheEntries int64 // entries in the success cache now
}

// Job states: a queued job is taken either by a worker (running) or by its
// waiter giving up (abandoned), never both.
const (
	jobQueued int32 = iota
	jobRunning
	jobAbandoned
)

type job struct {
	token    string
	mac      [32]byte
	snap     *Snapshot
	enqueued time.Time
	state    atomic.Int32
	done     chan Result // buffered 1: the worker never blocks on it
}

// Verifier checks raw tokens with bcrypt through a bounded pool.
//
// bcrypt at cost 12 burns about a quarter second of CPU. ComfyUI-Login ran it
// on the server's event loop, so a few wrong passwords per second froze
// everything. Here exactly Workers goroutines run bcrypt, at most QueueLen
// verifications wait, and anything beyond is answered Busy at once, without
// spending CPU. On Linux the workers also run at a lower scheduling priority
// than the proxy (see lowerWorkerPriority).
type Verifier struct {
	store *Store
	opts  VerifierOptions
	jobs  chan *job
	quit  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
	key   []byte    // per-process HMAC key for cache and singleflight keys
	macs  sync.Pool // of hash.Hash: HMAC-SHA256 keyed with key
	sf    singleflight.Group
	cache *successCache
	// compare is bcrypt.CompareHashAndPassword; tests replace it to hold a
	// worker busy on purpose.
	compare func(hash, token []byte) error

	inFlight, maxInFlight, queued, checks atomic.Int64
	hits, misses, shed                    atomic.Int64
}

// NewVerifier returns a Verifier over store's credentials. It panics when
// Workers, QueueLen or MaxWait is not positive, as time.NewTicker does for a
// non-positive period: that is a caller's bug, not a condition to handle.
func NewVerifier(store *Store, opts VerifierOptions) *Verifier {
	if opts.Workers < 1 || opts.QueueLen < 1 || opts.MaxWait <= 0 {
		panic(fmt.Sprintf("hashstore: NewVerifier needs positive Workers, QueueLen and MaxWait, got %d, %d, %s", opts.Workers, opts.QueueLen, opts.MaxWait))
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic("hashstore: no randomness for the cache key: " + err.Error())
	}
	v := &Verifier{
		store:   store,
		opts:    opts,
		jobs:    make(chan *job, opts.QueueLen),
		quit:    make(chan struct{}),
		key:     key,
		cache:   newSuccessCache(successCacheSize, successCacheTTL),
		compare: bcrypt.CompareHashAndPassword,
	}
	v.wg.Add(opts.Workers + 1)
	for range opts.Workers {
		go v.worker()
	}
	go v.dropCacheOnReload()
	return v
}

// dropCacheOnReload empties the cache at every reload. Entries of an old
// generation never count anyway; this frees them, and makes sure a token
// removed from the file is forgotten at once.
func (v *Verifier) dropCacheOnReload() {
	defer v.wg.Done()
	for {
		select {
		case <-v.quit:
			return
		case <-v.store.Changed():
			v.cache.clear()
		}
	}
}

// Verify checks a raw token. It waits for a worker at most opts.MaxWait, and
// returns Busy as soon as ctx is done; a comparison already running for
// other callers of the same token is not cancelled by one caller leaving.
func (v *Verifier) Verify(ctx context.Context, token string) Result {
	snap := v.store.Snapshot()
	if snap == nil {
		return Result{Outcome: NoCredentials}
	}
	gen := snap.Generation
	if len(token) > MaxTokenBytes {
		return Result{Outcome: TooLong, Generation: gen}
	}
	if token == "" {
		return Result{Outcome: NoMatch, Generation: gen}
	}
	mac := v.mac(token)
	if line, ok := v.cache.get(mac, gen, time.Now()); ok {
		v.hits.Add(1)
		return Result{Outcome: Match, Line: line, Generation: gen, Cached: true}
	}
	v.misses.Add(1)

	// The key is the HMAC of what the client sent plus the generation: fixed
	// length, so unambiguous, and independent of any stored secret.
	sfKey := hex.EncodeToString(mac[:]) + "/" + strconv.FormatUint(gen, 10)
	ch := v.sf.DoChan(sfKey, func() (any, error) {
		return v.run(token, mac, snap), nil
	})
	select {
	case r := <-ch:
		res := r.Val.(Result)
		if res.Outcome == Busy {
			v.shed.Add(1)
		}
		return res
	case <-ctx.Done():
		v.shed.Add(1)
		return Result{Outcome: Busy, Generation: gen}
	}
}

func (v *Verifier) mac(token string) [32]byte {
	// Every request with a raw token lands here, cache hit or not; a
	// keyed HMAC from the pool saves setting one up (five allocations).
	m, _ := v.macs.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha256.New, v.key)
	}
	m.Reset()
	m.Write([]byte(token))
	var out [32]byte
	m.Sum(out[:0])
	v.macs.Put(m)
	return out
}

// run queues one comparison and waits for it. It depends on no caller's
// context because singleflight shares it between callers.
func (v *Verifier) run(token string, mac [32]byte, snap *Snapshot) Result {
	busy := Result{Outcome: Busy, Generation: snap.Generation}
	select {
	case <-v.quit:
		return busy
	default:
	}
	j := &job{token: token, mac: mac, snap: snap, enqueued: time.Now(), done: make(chan Result, 1)}
	v.queued.Add(1)
	select {
	case v.jobs <- j:
	default:
		v.queued.Add(-1)
		return busy
	}
	t := time.NewTimer(v.opts.MaxWait)
	defer t.Stop()
	select {
	case r := <-j.done:
		return r
	case <-t.C:
	case <-v.quit:
	}
	if j.state.CompareAndSwap(jobQueued, jobAbandoned) {
		v.queued.Add(-1)
		return busy
	}
	// A worker took it just in time; the comparison is bounded by bcrypt's
	// own cost, so take its answer rather than waste it.
	return <-j.done
}

func (v *Verifier) worker() {
	defer v.wg.Done()
	lowerWorkerPriority()
	for {
		select {
		case <-v.quit:
			return
		case j := <-v.jobs:
			if !j.state.CompareAndSwap(jobQueued, jobRunning) {
				continue // its waiter gave up
			}
			v.queued.Add(-1)
			if v.opts.OnWait != nil {
				v.opts.OnWait(time.Since(j.enqueued))
			}
			j.done <- v.check(j)
		}
	}
}

// check compares the token with each hash, stopping at the first match:
// bcrypt's own cost dominates, so stopping early reveals nothing useful.
func (v *Verifier) check(j *job) Result {
	gen := j.snap.Generation
	for i, h := range j.snap.Creds.Hashes {
		n := v.inFlight.Add(1)
		for {
			m := v.maxInFlight.Load()
			if n <= m || v.maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		v.checks.Add(1)
		err := v.compare([]byte(h), []byte(j.token))
		v.inFlight.Add(-1)
		if err == nil {
			v.cache.put(j.mac, gen, i+1, time.Now())
			return Result{Outcome: Match, Line: i + 1, Generation: gen}
		}
	}
	return Result{Outcome: NoMatch, Generation: gen}
}

// Stats returns a copy of the counters. Each is read atomically; they are
// not a snapshot of one instant.
func (v *Verifier) Stats() Stats {
	return Stats{
		InFlight:     v.inFlight.Load(),
		MaxInFlight:  v.maxInFlight.Load(),
		Queued:       v.queued.Load(),
		Checks:       v.checks.Load(),
		CacheHits:    v.hits.Load(),
		CacheMisses:  v.misses.Load(),
		Shed:         v.shed.Load(),
		CacheEntries: int64(v.cache.len()),
	}
}

// Close stops the workers. Verifications still waiting answer Busy.
func (v *Verifier) Close() {
	v.once.Do(func() {
		close(v.quit)
		v.wg.Wait()
	})
}
