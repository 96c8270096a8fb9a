package middleware

import (
	"container/list"
	"fmt"
	"hash/maphash"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Throttler is the one interface every credential check consults about
// failures: the token authenticator, the login form and guest logins. It
// counts per ClientKey (see Client.Key), so a wrong password and a wrong
// token from one client count toward the same limit. Locked is called
// before any bcrypt work; Failed only after a credential was checked and
// found wrong. A success is never reported: it must not count, and it must
// not unlock an address an attacker behind the same NAT is hammering.
type Throttler interface {
	// Locked reports whether the client is locked out, and for how long.
	Locked(c ClientKey) (retryAfter time.Duration, locked bool)
	// Failed counts one failure for the client and reports whether this
	// failure locked it.
	Failed(c ClientKey) (retryAfter time.Duration, locked bool)
	// LockedToken is asked when a locked client presents a raw token, after
	// a look-up in the verifier's success cache (cached reports a hit). It
	// reports whether to let a cached token in. A token that is not cached
	// is remembered as one distinct guess of this lock; once the client has
	// presented the lock's budget of distinct guesses, even cached tokens
	// wait out the lock, so the cache is never a faster guessing oracle
	// than the throttle itself. Repeating one wrong token (a misconfigured
	// client) is one guess, however often.
	LockedToken(c ClientKey, token string, cached bool) (admit bool)
}

var _ Throttler = (*Throttle)(nil)

// ThrottleOptions configures NewThrottle. MaxFailures, Window and BaseLock
// have no default here: NewThrottle panics on a zero or negative one, so a
// value a person set is never swapped for another (cmd/comfyui-auth holds
// the defaults, and server.Config.Validate refuses such values first).
type ThrottleOptions struct {
	// MaxFailures is how many failures within Window lock a client
	// (MAX_LOGIN_ATTEMPTS). It must be at least 1.
	MaxFailures int
	// Window is the period failures are counted over.
	Window time.Duration
	// BaseLock is the first lock's length; each further lock of the same
	// client doubles it, up to MaxLock.
	BaseLock time.Duration
	// MaxLock caps the lock; 0 means maxLockFactor × BaseLock. Only tests
	// set it.
	MaxLock time.Duration
	// Capacity caps how many clients are remembered; the least recently
	// failing one is forgotten first. 0 means throttleCapacity. Only tests
	// set it.
	Capacity int
	// Now is the clock; nil means time.Now. Tests move it.
	Now func() time.Time
}

// maxLockGuesses caps the distinct unknown tokens a locked client may
// present while keeping its cached tokens (and the fingerprints remembered
// per client): min(MaxFailures, maxLockGuesses).
const maxLockGuesses = 16

// Throttle locks out, per client address, whoever keeps presenting wrong
// credentials. It guards the bcrypt pool: a locked client gets 429 without
// any bcrypt work, so a password-guessing flood costs a map lookup.
//
// It can never lock everyone out. A client is an address (an IPv6 /64), so
// one address's failures never lock another; a credential that is checked
// and matches is always let in; the hash token and sessions never consult
// it. Memory is bounded by Capacity: an attacker with more addresses than
// that can make the throttle forget its oldest entries, which only unlocks
// addresses early and never locks anyone.
//
// Requests a browser marks as cross-site (ClientKey.CrossSite) are counted
// in a budget of their own per address: a web page that makes its visitors'
// browsers send wrong tokens (an <img src=...?token=bad>) can lock only
// cross-site token use from their address, never their own direct use. A
// client that forges the header gains one more budget, not an unthrottled
// one.
type Throttle struct {
	opts ThrottleOptions
	seed maphash.Seed // keys the fingerprints of guesses made while locked

	mu      sync.Mutex
	lru     *list.List // of *throttleEntry, most recently failing first
	entries map[ClientKey]*list.Element
}

type throttleEntry struct {
	key         ClientKey
	failures    int
	windowStart time.Time
	lockedUntil time.Time
	// strikes is how many times this client was locked; it doubles the
	// next lock and is forgotten after a quiet MaxLock.
	strikes  int
	lastFail time.Time
	// guesses are fingerprints of the distinct uncached tokens presented
	// during the current lock (see LockedToken).
	guesses []uint64
}

// maxLockFactor caps a repeat offender's lock at 64 × BaseLock: six
// doublings, 64 minutes with the one-minute default, long enough to make
// guessing hopeless and short enough that a locked-out colleague behind the
// same address is not locked out for a day.
const maxLockFactor = 64

// throttleCapacity is how many failing clients are remembered, about 1 MB.
// It only bounds memory: forgetting a client unlocks it early, never locks
// anyone, so no deployment needs another value.
const throttleCapacity = 10_000

// NewThrottle returns a Throttle. It panics when MaxFailures, Window or
// BaseLock is not positive, or MaxLock or Capacity is negative: a caller's
// bug, as a non-positive period is for time.NewTicker.
func NewThrottle(o ThrottleOptions) *Throttle {
	if o.MaxFailures < 1 || o.Window <= 0 || o.BaseLock <= 0 || o.MaxLock < 0 || o.Capacity < 0 {
		panic(fmt.Sprintf("middleware: NewThrottle needs positive MaxFailures, Window and BaseLock, got %d, %s, %s", o.MaxFailures, o.Window, o.BaseLock))
	}
	if o.MaxLock == 0 {
		o.MaxLock = maxLockFactor * o.BaseLock
	}
	if o.Capacity == 0 {
		o.Capacity = throttleCapacity
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Throttle{opts: o, seed: maphash.MakeSeed(), lru: list.New(), entries: make(map[ClientKey]*list.Element)}
}

// id groups the key's address as the throttle counts it, whatever the
// caller passed.
func id(c ClientKey) ClientKey {
	c.Addr = throttleKey(c.Addr)
	return c
}

// Locked implements Throttler: one map lookup under a mutex.
func (t *Throttle) Locked(c ClientKey) (time.Duration, bool) {
	return t.locked(id(c))
}

// Failed implements Throttler.
func (t *Throttle) Failed(c ClientKey) (time.Duration, bool) {
	return t.failed(id(c))
}

// Admit counts one use by a client that is not locked and reports true; a
// locked client is refused (false) with what is left of its lock, and not
// counted. The check and the count are one step under the mutex, so
// callers racing each other never get more than MaxFailures admissions in
// a Window: the MaxFailures-th admission locks the client for the next.
// It meters something allowed a few times per client (guest logins),
// where Locked then Failed would let concurrent callers all pass the check
// before any of them is counted.
func (t *Throttle) Admit(c ClientKey) (time.Duration, bool) {
	left, _, wasLocked := t.count(id(c))
	if wasLocked {
		return left, false
	}
	return 0, true
}

// LockedToken implements Throttler.
func (t *Throttle) LockedToken(c ClientKey, token string, cached bool) bool {
	budget := min(t.opts.MaxFailures, maxLockGuesses)
	fp := maphash.String(t.seed, token)
	now := t.opts.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	el, ok := t.entries[id(c)]
	if !ok {
		return cached
	}
	e := el.Value.(*throttleEntry)
	if e.lockedUntil.Sub(now) <= 0 {
		return cached
	}
	if cached {
		return len(e.guesses) < budget
	}
	if len(e.guesses) < budget && !slices.Contains(e.guesses, fp) {
		e.guesses = append(e.guesses, fp)
	}
	return false
}

func (t *Throttle) locked(key ClientKey) (time.Duration, bool) {
	now := t.opts.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	el, ok := t.entries[key]
	if !ok {
		return 0, false
	}
	e := el.Value.(*throttleEntry)
	if left := e.lockedUntil.Sub(now); left > 0 {
		return left, true
	}
	return 0, false
}

func (t *Throttle) failed(key ClientKey) (time.Duration, bool) {
	left, locked, _ := t.count(key)
	return left, locked
}

// count counts one failure for key unless it is locked already
// (wasLocked), and reports the lock now in force, if any.
func (t *Throttle) count(key ClientKey) (left time.Duration, locked, wasLocked bool) {
	now := t.opts.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	var e *throttleEntry
	if el, ok := t.entries[key]; ok {
		e = el.Value.(*throttleEntry)
		t.lru.MoveToFront(el)
	} else {
		for t.lru.Len() >= t.opts.Capacity {
			old := t.lru.Back()
			delete(t.entries, old.Value.(*throttleEntry).key)
			t.lru.Remove(old)
		}
		e = &throttleEntry{key: key, windowStart: now}
		t.entries[key] = t.lru.PushFront(e)
	}
	if left := e.lockedUntil.Sub(now); left > 0 {
		// Failures while locked are not possible through Auth (it checks
		// first), but a caller racing the lock must not extend it forever.
		return left, true, true
	}
	if e.strikes > 0 && now.Sub(e.lastFail) > t.opts.MaxLock {
		e.strikes = 0
	}
	if now.Sub(e.windowStart) > t.opts.Window {
		e.failures, e.windowStart = 0, now
	}
	e.lastFail = now
	e.failures++
	if e.failures < t.opts.MaxFailures {
		return 0, false, false
	}
	lock := t.lockFor(e.strikes)
	e.strikes++
	e.failures, e.windowStart = 0, now
	e.lockedUntil = now.Add(lock)
	e.guesses = e.guesses[:0]
	return lock, true, false
}

// lockFor returns BaseLock × 2^strikes, capped at MaxLock.
func (t *Throttle) lockFor(strikes int) time.Duration {
	f := float64(t.opts.BaseLock) * math.Pow(2, float64(strikes))
	if f >= float64(t.opts.MaxLock) {
		return t.opts.MaxLock
	}
	return time.Duration(f)
}

// Len is how many clients are remembered (for tests and metrics).
func (t *Throttle) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lru.Len()
}

// RetryAfterSeconds renders a lock's remainder for the Retry-After header,
// rounded up so a client that obeys it is no longer locked.
func RetryAfterSeconds(d time.Duration) string {
	return strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10)
}

// RefuseLocked answers a locked-out client: 429 with Retry-After and a JSON
// body that says when to try again. It spends no bcrypt work.
func RefuseLocked(w http.ResponseWriter, r *http.Request, retryAfter time.Duration) {
	info := InfoFrom(r)
	info.Method = MethodNone
	info.Reason = "client locked out after repeated credential failures"
	info.Refusal = RefusalLocked
	secs := RetryAfterSeconds(retryAfter)
	w.Header().Set("Retry-After", secs)
	Refuse(w, r, http.StatusTooManyRequests, CodeLockedOut, "Too many failed attempts.",
		"too many wrong credentials from this address; retry after "+secs+" seconds with the right token")
}
