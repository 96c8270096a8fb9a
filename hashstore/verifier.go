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
	// ClientBusy: this client already has VerifierOptions.PerClient checks
	// queued or running; no bcrypt was spent. Only a client presenting
	// several different unverified tokens at once gets it (the same token
	// shares one check), so the HTTP layer counts it as a failure.
	ClientBusy
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
	case ClientBusy:
		return "client_busy"
	}
	return "outcome_" + strconv.Itoa(int(o))
}

// Result of Verifier.Verify.
type Result struct {
	Outcome Outcome
	Line    int // 1-based hash line on Match
	// User is the name of the matching line on Match, "" for a bare line
	// (middleware.UserDefault's) and for every other outcome.
	User       string
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
	// PerClient bounds the checks one client may have queued or running at
	// once; more are answered ClientBusy. 0 means 2, a fixed bound:
	// it is not a setting (tests set it).
	PerClient int
	// Clients bounds how many clients' recent misses are remembered for
	// fair queueing (about 100 bytes each); the least recently seen idle
	// one is forgotten first. 0 means 4096; it is never less than
	// QueueLen+Workers+1.
	Clients int
	// OnWait, when set, is called by a worker with the time each job waited
	// in the queue (for a latency histogram). It must not block.
	OnWait func(time.Duration)
	// Compare replaces bcrypt.CompareHashAndPassword; tests use it to hold
	// a worker busy on purpose instead of burning real bcrypt.
	Compare func(hash, token []byte) error
}

// The success cache holds more distinct tokens than a gateway's clients
// plausibly use (1024 entries stay well under a megabyte), and an entry
// lives long enough to spare a busy client's repeated requests a bcrypt
// check; a credential reload drops the entries of the lines it removed or
// changed. Neither is worth a setting.
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
	ClientBusy   int64 // verifications answered ClientBusy
	CacheEntries int64 // entries in the success cache now
}

// job is one comparison: waiting in the queue, then running on a worker.
// granted and the queue position are guarded by Verifier.mu.
type job struct {
	secret   string // the token, or what follows `name:` for a user's token
	user     string // "" for the bare lines
	lines    []int  // indexes into snap.Creds.Hashes to compare with
	mac      [32]byte
	snap     *Snapshot
	client   *clientState
	enqueued time.Time
	granted  bool        // a worker slot is reserved for it
	done     chan Result // buffered 1: neither worker nor evictor blocks on it
}

// Verifier checks raw tokens with bcrypt through a bounded, fair pool.
//
// bcrypt at cost 12 burns about a quarter second of CPU. ComfyUI-Login ran it
// on the server's event loop, so a few wrong passwords per second froze
// everything. Here exactly Workers goroutines run bcrypt, at most QueueLen
// verifications wait, and anything beyond is answered Busy at once, without
// spending CPU. On Linux the workers also run at a lower scheduling priority
// than the proxy (see lowerWorkerPriority).
//
// The queue is not first come, first served: a crowd of addresses sending
// wrong tokens would keep it full and starve everyone else. Each client (the
// key the caller passes, an address or IPv6 /64) may have at most PerClient
// checks queued or running; beyond that it is answered ClientBusy. When a
// worker frees up, it takes the waiting job whose client has the fewest
// recent misses (wrong tokens and ClientBusy answers, halving every
// minute), oldest first among equals; when the queue is full, a newcomer
// with fewer misses than the worst waiting job takes that job's place. A
// client that never sent a wrong token therefore waits only for the
// comparisons already running and for other clients with no misses.
type Verifier struct {
	store *Store
	opts  VerifierOptions
	work  chan *job // granted jobs; capacity Workers, so sends never block
	quit  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
	key   []byte    // per-process HMAC key for cache and singleflight keys
	macs  sync.Pool // of *keyedMAC: HMAC-SHA256 keyed with key
	sf    singleflight.Group
	cache *successCache
	// compare is opts.Compare or bcrypt.CompareHashAndPassword.
	compare func(hash, token []byte) error

	mu      sync.Mutex
	closed  bool
	free    int    // idle worker slots
	waiting []*job // queued, not granted; at most QueueLen
	clients clientTable

	inFlight, maxInFlight, queued, checks atomic.Int64
	hits, misses, shed, clientBusy        atomic.Int64
}

// NewVerifier returns a Verifier over store's credentials. It panics when
// Workers, QueueLen or MaxWait is not positive, as time.NewTicker does for a
// non-positive period: that is a caller's bug, not a condition to handle.
func NewVerifier(store *Store, opts VerifierOptions) *Verifier {
	if opts.Workers < 1 || opts.QueueLen < 1 || opts.MaxWait <= 0 {
		panic(fmt.Sprintf("hashstore: NewVerifier needs positive Workers, QueueLen and MaxWait, got %d, %d, %s", opts.Workers, opts.QueueLen, opts.MaxWait))
	}
	if opts.PerClient <= 0 {
		opts.PerClient = 2
	}
	// Every queued or running job pins its client's entry, so the table
	// must hold at least that many.
	if opts.Clients <= 0 {
		opts.Clients = 4096
	}
	opts.Clients = max(opts.Clients, opts.QueueLen+opts.Workers+1)
	compare := opts.Compare
	if compare == nil {
		compare = bcrypt.CompareHashAndPassword
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic("hashstore: no randomness for the cache key: " + err.Error())
	}
	v := &Verifier{
		store:   store,
		opts:    opts,
		work:    make(chan *job, opts.Workers),
		quit:    make(chan struct{}),
		key:     key,
		cache:   newSuccessCache(successCacheSize, successCacheTTL),
		compare: compare,
		free:    opts.Workers,
		clients: newClientTable(opts.Clients),
	}
	v.wg.Add(opts.Workers + 1)
	for range opts.Workers {
		go v.worker()
	}
	go v.followReloads()
	return v
}

// followReloads moves the cache to each reload's generation: entries whose
// line is still loaded (same user, same hash) are kept, the others are
// forgotten at once. A lookup does the same for its own entry, so the
// answer never depends on whether this ran yet.
func (v *Verifier) followReloads() {
	defer v.wg.Done()
	// The next channel is taken before the snapshot is read, so a reload
	// landing meanwhile wakes the loop again.
	changed := v.store.Changed()
	for {
		select {
		case <-v.quit:
			return
		case <-changed:
			changed = v.store.Changed()
			if snap := v.store.Snapshot(); snap != nil {
				v.cache.follow(snap)
			}
		}
	}
}

// Verify is VerifyFor with no client key: such callers share one place in
// the fair queue and are exempt from the per-client cap, so use it only
// where callers are not strangers (tools, tests); HTTP requests go through
// VerifyFor.
func (v *Verifier) Verify(ctx context.Context, token string) Result {
	return v.VerifyFor(ctx, "", token)
}

// Cached answers a raw token from the success cache alone: Match with
// Cached set when the token was verified in the current generation, and
// false otherwise. It never runs bcrypt and never queues, so it is safe
// for a client the throttle has locked out.
func (v *Verifier) Cached(token string) (Result, bool) {
	snap := v.store.Snapshot()
	if snap == nil {
		return Result{}, false
	}
	user, secret := route(snap, token)
	if secret == "" || len(secret) > MaxTokenBytes {
		return Result{}, false
	}
	if res, ok := v.cached(snap, user, v.mac(user, secret)); ok {
		v.hits.Add(1)
		return res, true
	}
	return Result{}, false
}

// route says whose lines a token is checked against: `name:secret` for a
// user name of snap goes to that user's lines with secret; any other token,
// whole, to the bare lines (user ""). A token that is far too long for
// either is not split, so no name lookup is spent on it.
func route(snap *Snapshot, token string) (user, secret string) {
	if len(token) > MaxUserNameLen+1+MaxTokenBytes {
		return "", token
	}
	if name, secret, ok := splitUserToken(snap, token); ok {
		return name, secret
	}
	return "", token
}

// cached looks key up in the success cache: a hit when the line it matched
// is still in snap. The entry must name the same user as the line it points
// at in snap: the key already holds the user, so this only guards against a
// mistake elsewhere.
func (v *Verifier) cached(snap *Snapshot, user string, key [32]byte) (Result, bool) {
	line, ok := v.cache.get(key, snap, time.Now())
	if !ok || line < 1 || line > len(snap.Creds.Hashes) || snap.Creds.userOf(line-1) != user {
		return Result{}, false
	}
	return Result{Outcome: Match, Line: line, User: user, Generation: snap.Generation, Cached: true}, true
}

// VerifyFor checks a raw token presented by client (the throttle's key for
// it: an address, an IPv6 /64).
//
// A token `name:secret` whose name is a user of the credentials in force is
// compared, as secret, with that user's lines only; any other token is
// compared whole with the bare lines only. So a wrong guess costs at most
// the named user's line count of bcrypt (the bare line count for an unnamed
// token, and none at all when there are no such lines), never one check per
// user in the file. User names are not secrets: that an unknown name costs
// no bcrypt when the file has no bare lines reveals nothing a name could
// protect.
//
// A cached token is answered at once. Otherwise
// the check is queued fairly (see Verifier): ClientBusy when client already
// has PerClient checks queued or running, Busy when it waited opts.MaxWait
// without a worker, the queue is full of clients with no more misses than
// client, or ctx is done. Once a worker slot is reserved for the check, it
// is waited for regardless of MaxWait: its cost is bounded by bcrypt's. A
// comparison shared with other callers of the same token from the same
// client is not cancelled by one caller leaving.
func (v *Verifier) VerifyFor(ctx context.Context, client, token string) Result {
	snap := v.store.Snapshot()
	if snap == nil {
		return Result{Outcome: NoCredentials}
	}
	gen := snap.Generation
	user, secret := route(snap, token)
	if len(secret) > MaxTokenBytes {
		return Result{Outcome: TooLong, Generation: gen}
	}
	if secret == "" {
		return Result{Outcome: NoMatch, Generation: gen}
	}
	mac := v.mac(user, secret)
	if res, ok := v.cached(snap, user, mac); ok {
		v.hits.Add(1)
		return res
	}
	v.misses.Add(1)
	lines := snap.UserLines(user)
	if len(lines) == 0 {
		// No line to compare with (a file of named users only, and a
		// token naming none of them): nothing to queue.
		return Result{Outcome: NoMatch, Generation: gen}
	}

	// The key is the HMAC of what the client sent (user and secret), the
	// generation and the client: fixed-length fields first, so unambiguous,
	// and independent of any stored secret. The client is part of it so that one client's
	// per-client cap never answers another client's request.
	sfKey := hex.EncodeToString(mac[:]) + "/" + strconv.FormatUint(gen, 10) + "/" + client
	ch := v.sf.DoChan(sfKey, func() (any, error) {
		return v.run(client, &job{secret: secret, user: user, lines: lines, mac: mac, snap: snap}), nil
	})
	select {
	case r := <-ch:
		res := r.Val.(Result)
		switch res.Outcome {
		case Busy:
			v.shed.Add(1)
		case ClientBusy:
			v.clientBusy.Add(1)
		}
		return res
	case <-ctx.Done():
		v.shed.Add(1)
		return Result{Outcome: Busy, Generation: gen}
	}
}

// mac keys the cache and singleflight with the user and the secret: the
// name's length comes first, so `alice` + `b:c` and `alice:b` + `c` cannot
// collide, and a bare token `alice:s` checked against the bare lines (when
// alice was no user) never shares an entry with alice's secret `s`.
// keyedMAC is a pooled HMAC with the scratch buffer its input is built in.
type keyedMAC struct {
	h   hash.Hash
	buf []byte
	sum [32]byte
}

func (v *Verifier) mac(user, secret string) [32]byte {
	// Every request with a raw token lands here, cache hit or not; a
	// keyed HMAC from the pool saves setting one up (five allocations).
	// The input is assembled in the pooled scratch buffer: each []byte
	// conversion handed to the hash.Hash interface would be an allocation.
	m, _ := v.macs.Get().(*keyedMAC)
	if m == nil {
		m = &keyedMAC{h: hmac.New(sha256.New, v.key)}
	}
	m.h.Reset()
	m.buf = append(append(append(m.buf[:0], byte(len(user))), user...), secret...)
	m.h.Write(m.buf)
	out := [32]byte(m.h.Sum(m.sum[:0]))
	clear(m.buf)
	v.macs.Put(m)
	return out
}

// run queues one comparison and waits for it. It depends on no caller's
// context because singleflight shares it between callers.
func (v *Verifier) run(client string, j *job) Result {
	snap := j.snap
	j.enqueued, j.done = time.Now(), make(chan Result, 1)
	if out, refused := v.enqueue(client, j); refused {
		return out
	}
	t := time.NewTimer(v.opts.MaxWait)
	defer t.Stop()
	select {
	case r := <-j.done:
		return r
	case <-t.C:
	case <-v.quit:
	}
	v.mu.Lock()
	if !j.granted && v.unqueue(j) {
		v.mu.Unlock()
		return Result{Outcome: Busy, Generation: snap.Generation}
	}
	v.mu.Unlock()
	// A worker slot was reserved just in time (or the job was evicted and
	// answered); the comparison is bounded by bcrypt's own cost, so take
	// its answer rather than waste it.
	return <-j.done
}

// enqueue reserves a worker slot for j, or queues it, or refuses it at once
// (refused true, with the answer).
func (v *Verifier) enqueue(client string, j *job) (Result, bool) {
	gen := j.snap.Generation
	now := j.enqueued
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return Result{Outcome: Busy, Generation: gen}, true
	}
	c := v.clients.get(client, now)
	if client != "" && c.active >= v.opts.PerClient {
		c.miss(now)
		return Result{Outcome: ClientBusy, Generation: gen}, true
	}
	j.client = c
	if v.free > 0 {
		// A slot first, then the wait: an idle worker that the scheduler
		// has not run yet must not make the job look shed.
		v.free--
		c.active++
		j.granted = true
		v.work <- j
		return Result{}, false
	}
	if len(v.waiting) >= v.opts.QueueLen {
		worst := v.worstWaiting(now)
		if worst < 0 || !c.before(v.waiting[worst].client, now) {
			v.clients.release(c)
			return Result{Outcome: Busy, Generation: gen}, true
		}
		evicted := v.waiting[worst]
		v.unqueue(evicted)
		evicted.done <- Result{Outcome: Busy, Generation: evicted.snap.Generation}
	}
	c.active++
	v.waiting = append(v.waiting, j)
	v.queued.Add(1)
	return Result{}, false
}

// unqueue removes a waiting job; false if it is not waiting. Called with
// v.mu held.
func (v *Verifier) unqueue(j *job) bool {
	for i, w := range v.waiting {
		if w == j {
			v.waiting = append(v.waiting[:i], v.waiting[i+1:]...)
			j.client.active--
			v.clients.release(j.client)
			v.queued.Add(-1)
			return true
		}
	}
	return false
}

// worstWaiting is the index of the waiting job to give up first: the
// client with the most misses, the newest job among equals. Called with
// v.mu held.
func (v *Verifier) worstWaiting(now time.Time) int {
	worst := -1
	for i, w := range v.waiting {
		if worst < 0 || !w.client.before(v.waiting[worst].client, now) {
			worst = i
		}
	}
	return worst
}

// next grants the freed worker slot to the waiting job whose client has the
// fewest misses, the oldest among equals, or returns the slot. Called with
// v.mu held, by the worker that finished.
func (v *Verifier) next(now time.Time) {
	best := -1
	for i, w := range v.waiting {
		if best < 0 || w.client.before(v.waiting[best].client, now) {
			best = i
		}
	}
	if best < 0 || v.closed {
		v.free++
		return
	}
	j := v.waiting[best]
	v.waiting = append(v.waiting[:best], v.waiting[best+1:]...)
	v.queued.Add(-1)
	j.granted = true
	v.work <- j
}

func (v *Verifier) worker() {
	defer v.wg.Done()
	lowerWorkerPriority()
	for {
		select {
		case <-v.quit:
			return
		case j := <-v.work:
			if v.opts.OnWait != nil {
				v.opts.OnWait(time.Since(j.enqueued))
			}
			res := v.check(j)
			now := time.Now()
			v.mu.Lock()
			j.client.active--
			if res.Outcome == NoMatch {
				j.client.miss(now)
			}
			v.clients.release(j.client)
			v.next(now)
			v.mu.Unlock()
			j.done <- res
		}
	}
}

// check compares the secret with each of the job's lines, stopping at the
// first match: bcrypt's own cost dominates, so stopping early reveals
// nothing useful.
func (v *Verifier) check(j *job) Result {
	gen := j.snap.Generation
	for _, i := range j.lines {
		h := j.snap.Creds.Hashes[i]
		n := v.inFlight.Add(1)
		for {
			m := v.maxInFlight.Load()
			if n <= m || v.maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		v.checks.Add(1)
		err := v.compare([]byte(h), []byte(j.secret))
		v.inFlight.Add(-1)
		if err == nil {
			v.cache.put(j.mac, j.snap, i+1, time.Now())
			return Result{Outcome: Match, Line: i + 1, User: j.user, Generation: gen}
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
		ClientBusy:   v.clientBusy.Load(),
		CacheEntries: int64(v.cache.len()),
	}
}

// Close stops the workers. Verifications still waiting answer Busy.
func (v *Verifier) Close() {
	v.once.Do(func() {
		v.mu.Lock()
		v.closed = true
		v.mu.Unlock()
		close(v.quit)
		v.wg.Wait()
		// Jobs granted but never picked up by a worker answer Busy.
		for {
			select {
			case j := <-v.work:
				j.done <- Result{Outcome: Busy, Generation: j.snap.Generation}
			default:
				return
			}
		}
	})
}
