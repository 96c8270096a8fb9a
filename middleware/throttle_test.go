package middleware

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// clock is a settable time source for throttle tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newTestThrottle(c *clock) *Throttle {
	return NewThrottle(ThrottleOptions{MaxFailures: 3, Window: time.Minute, BaseLock: 10 * time.Second, MaxLock: 40 * time.Second, Capacity: 100, Now: c.Now})
}

var (
	attacker  = netip.MustParseAddr("203.0.113.66")
	bystander = netip.MustParseAddr("203.0.113.67")
)

func TestThrottleLocksAfterMaxFailuresAndOnlyThatAddress(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	th := newTestThrottle(c)
	for i := 1; i <= 2; i++ {
		if _, locked := th.Failed(ClientKey{Addr: attacker}); locked {
			t.Fatalf("locked after %d failures, want 3", i)
		}
	}
	d, locked := th.Failed(ClientKey{Addr: attacker})
	if !locked || d != 10*time.Second {
		t.Fatalf("third failure: locked=%v for %s, want 10s", locked, d)
	}
	if _, locked := th.Locked(ClientKey{Addr: attacker}); !locked {
		t.Fatal("attacker not locked")
	}
	if _, locked := th.Locked(ClientKey{Addr: bystander}); locked {
		t.Fatal("another address was locked by the attacker's failures")
	}
	c.Add(10 * time.Second)
	if _, locked := th.Locked(ClientKey{Addr: attacker}); locked {
		t.Fatal("still locked after the lock period")
	}
}

func TestThrottleLockGrowsOnRepeatUpToTheCap(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	th := newTestThrottle(c)
	var got []time.Duration
	for round := 0; round < 4; round++ {
		var d time.Duration
		for i := 0; i < 3; i++ {
			d, _ = th.Failed(ClientKey{Addr: attacker})
		}
		got = append(got, d)
		c.Add(d)
	}
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 40 * time.Second}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("locks %v, want %v", got, want)
	}
	// A quiet MaxLock forgets the strikes.
	c.Add(41 * time.Second)
	for i := 0; i < 3; i++ {
		d, locked := th.Failed(ClientKey{Addr: attacker})
		if i == 2 && (!locked || d != 10*time.Second) {
			t.Fatalf("after a quiet period: %v %s, want the base lock again", locked, d)
		}
	}
}

func TestThrottleFailuresOutsideTheWindowDoNotAddUp(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	th := newTestThrottle(c)
	for i := 0; i < 10; i++ {
		th.Failed(ClientKey{Addr: attacker})
		th.Failed(ClientKey{Addr: attacker})
		if _, locked := th.Locked(ClientKey{Addr: attacker}); locked {
			t.Fatalf("locked with two failures per window (round %d)", i)
		}
		c.Add(61 * time.Second)
	}
}

func TestThrottleMemoryIsCapped(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	th := newTestThrottle(c)
	for i := 0; i < 1000; i++ {
		th.Failed(ClientKey{Addr: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})})
	}
	if n := th.Len(); n != 100 {
		t.Fatalf("remembers %d clients, cap is 100", n)
	}
}

func TestThrottleCountsAnIPv6ClientPerSlash64(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	th := newTestThrottle(c)
	for i := 1; i <= 3; i++ {
		th.Failed(ClientKey{Addr: netip.MustParseAddr(fmt.Sprintf("2001:db8:1:2::%x", i))})
	}
	if _, locked := th.Locked(ClientKey{Addr: netip.MustParseAddr("2001:db8:1:2::ffff")}); !locked {
		t.Fatal("rotating addresses inside one /64 escaped the throttle")
	}
	if _, locked := th.Locked(ClientKey{Addr: netip.MustParseAddr("2001:db8:1:3::1")}); locked {
		t.Fatal("a neighbouring /64 was locked")
	}
}

func TestThrottleResolvesTheClientThroughTrustedProxies(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	trusted, _ := ParseTrustedProxies("10.0.0.0/8")
	th := NewThrottle(ThrottleOptions{MaxFailures: 1, Window: time.Minute, BaseLock: time.Minute, Now: c.Now})
	key := func(r *http.Request) ClientKey { return ClientResolver{Trusted: trusted}.Resolve(r).Key() }
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "10.0.0.2:1234"
	r.Header.Set("X-Forwarded-For", "198.51.100.1")
	th.Failed(key(r))
	other := httptest.NewRequest("GET", "/", nil)
	other.RemoteAddr = "10.0.0.2:1235"
	other.Header.Set("X-Forwarded-For", "198.51.100.2")
	if _, locked := th.Locked(key(other)); locked {
		t.Fatal("one client behind the proxy locked another")
	}
	if _, locked := th.Locked(key(r)); !locked {
		t.Fatal("the failing client behind the proxy is not locked")
	}
}

func TestRetryAfterRoundsUp(t *testing.T) {
	for d, want := range map[time.Duration]string{time.Second: "1", 1500 * time.Millisecond: "2", time.Millisecond: "1", time.Minute: "60"} {
		if got := RetryAfterSeconds(d); got != want {
			t.Errorf("RetryAfterSeconds(%s) = %s, want %s", d, got, want)
		}
	}
}

func TestNewThrottleRefusesZeroInsteadOfPickingADefault(t *testing.T) {
	for _, o := range []ThrottleOptions{
		{MaxFailures: 0, Window: time.Minute, BaseLock: time.Minute},
		{MaxFailures: 1, Window: 0, BaseLock: time.Minute},
		{MaxFailures: 1, Window: time.Minute, BaseLock: 0},
		{MaxFailures: 1, Window: time.Minute, BaseLock: time.Minute, Capacity: -1},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewThrottle(%+v) did not panic", o)
				}
			}()
			NewThrottle(o)
		}()
	}
}

func TestLockedClientKeepsCachedTokensUntilItGuesses(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	th := newTestThrottle(c)
	r := ClientKey{Addr: attacker}
	if !th.LockedToken(r, "good", true) || th.LockedToken(r, "bad", false) {
		t.Fatal("an unlocked client: cached tokens pass, others are for the verifier")
	}
	for range 3 {
		th.Failed(r)
	}
	steps := []struct {
		token  string
		cached bool
		want   bool
	}{
		{"good", true, true},
		{"retired", false, false},
		{"retired", false, false}, // a repeat is the same guess
		{"good", true, true},
		{"guess-1", false, false},
		{"good", true, true}, // two distinct guesses of three
		{"guess-2", false, false},
		{"good", true, false}, // the budget is spent
	}
	for i, s := range steps {
		if got := th.LockedToken(r, s.token, s.cached); got != s.want {
			t.Fatalf("step %d (%s, cached %v) = %v, want %v", i, s.token, s.cached, got, s.want)
		}
	}
	c.Add(10 * time.Second)
	th.Failed(r)
	th.Failed(r)
	th.Failed(r) // a new lock starts with a fresh budget
	if !th.LockedToken(r, "good", true) {
		t.Fatal("a new lock did not reset the guess budget")
	}
}

func TestCrossSiteFailuresHaveTheirOwnBudget(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	th := newTestThrottle(c)
	direct := httptest.NewRequest("GET", "http://gw/queue", nil)
	direct.RemoteAddr = attacker.String() + ":1"
	img := httptest.NewRequest("GET", "http://gw/view?token=x", nil)
	img.RemoteAddr = attacker.String() + ":2"
	img.Header.Set("Sec-Fetch-Site", "cross-site")
	foreign := httptest.NewRequest("POST", "http://gw/login", nil)
	foreign.RemoteAddr = attacker.String() + ":3"
	foreign.Header.Set("Origin", "https://evil.example")
	key := func(r *http.Request) ClientKey { return ClientResolver{}.Resolve(r).Key() }
	for range 2 {
		th.Failed(key(img))
		th.Failed(key(foreign))
	}
	if _, locked := th.Locked(key(img)); !locked {
		t.Fatal("cross-site failures did not lock cross-site use")
	}
	if _, locked := th.Locked(key(direct)); locked {
		t.Fatal("cross-site failures locked the visitor's own requests")
	}
	own := httptest.NewRequest("POST", "http://gw/login", nil)
	own.RemoteAddr = attacker.String() + ":4"
	own.Header.Set("Origin", "http://gw")
	if IsCrossSite(own, nil) || !IsCrossSite(foreign, nil) {
		t.Fatal("Origin classification is wrong")
	}
}

// TestAdmitLetsExactlyMaxFailuresInAtOnce: callers racing on one client get
// MaxFailures admissions between them, the rest the lock's remainder, and
// a refused caller does not extend the lock.
func TestAdmitLetsExactlyMaxFailuresInAtOnce(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	th := newTestThrottle(c)
	const callers = 50
	var wg sync.WaitGroup
	var mu sync.Mutex
	in, out := 0, 0
	start := make(chan struct{})
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			d, ok := th.Admit(ClientKey{Addr: attacker})
			mu.Lock()
			defer mu.Unlock()
			if ok {
				in++
			} else if d == 10*time.Second {
				out++
			}
		}()
	}
	close(start)
	wg.Wait()
	if in != 3 || out != callers-3 {
		t.Fatalf("%d racing callers: %d admitted, %d refused for the full lock; want 3 and %d", callers, in, out, callers-3)
	}
	c.Add(10 * time.Second)
	if _, ok := th.Admit(ClientKey{Addr: attacker}); !ok {
		t.Fatal("refused after the lock ended: refusals extended it")
	}
	if _, ok := th.Admit(ClientKey{Addr: bystander}); !ok {
		t.Fatal("another address was refused")
	}
}
