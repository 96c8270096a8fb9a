package server

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/middleware"
	"golang.org/x/crypto/bcrypt"
)

// pacedCompare stands in for a slow bcrypt: a check that reaches the hash
// paced waits for the next tick of a ticker, so one worker does at most one
// check per tick, and a flood keeps the pool saturated without burning real
// cost-12 bcrypt.
func pacedCompare(t *testing.T, paced string, every time.Duration) func(hash, token []byte) error {
	tick := time.NewTicker(every)
	t.Cleanup(tick.Stop)
	return func(hash, token []byte) error {
		if string(hash) == paced {
			<-tick.C
		}
		return bcrypt.CompareHashAndPassword(hash, token)
	}
}

// TestDistributedFloodDoesNotStarveAFirstTimeClient: 64 loopback addresses,
// three connections each, send never-repeating wrong raw tokens as fast as
// they are answered, keeping the one bcrypt worker and its queue full. A
// client that never sent a wrong token then presents a valid raw token it
// has never used (no cache hit): it must be let in every time, because the
// pool serves clients with fewer recent misses first and makes room for
// them in a full queue. The throttle is off, so this holds on fairness
// alone, not because the attackers were locked out.
func TestDistributedFloodDoesNotStarveAFirstTimeClient(t *testing.T) {
	const tries = 10
	var lines, tokens []string
	for i := range tries {
		tok := fmt.Sprintf("first-time-token-%02d", i)
		tokens = append(tokens, tok)
		lines = append(lines, lowCostHash(t, tok))
	}
	g := startGateway(t, gatewayOpts{hashContent: ptr(strings.Join(lines, "\n") + "\n"), configure: func(c *Config) {
		c.BcryptWorkers = 1
		c.BcryptQueue = 16
		c.BcryptMaxWait = 20 * time.Second // generous: only starvation may fail this
		c.MaxLoginAttempts = 0
		c.bcryptCompare = pacedCompare(t, lines[0], 5*time.Millisecond)
	}})

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	const attackers, conns = 64, 3
	var seq atomic.Int64
	// Refused attackers come back at most 200 times a second in all: a
	// hundred times the check rate keeps the queue full, without leaving
	// the nice-10 worker no CPU at all on a small, shared test machine.
	permits := time.NewTicker(5 * time.Millisecond)
	defer permits.Stop()
	missed := make([]atomic.Bool, attackers) // got an answer other than 503
	for a := range attackers {
		client := clientFrom(t, fmt.Sprintf("127.0.0.%d", 10+a))
		for range conns {
			wg.Go(func() {
				for ctx.Err() == nil {
					select {
					case <-ctx.Done():
						return
					case <-permits.C:
					}
					req, _ := http.NewRequestWithContext(ctx, "GET", g.URL+"/queue", nil)
					req.Header.Set("Authorization", fmt.Sprintf("Bearer wrong-guess-%d", seq.Add(1)))
					resp, err := client.Do(req)
					if err != nil {
						continue
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusServiceUnavailable {
						missed[a].Store(true)
					}
				}
			})
		}
	}
	// The flood is established once every attacker has been answered 401 or
	// 429 at least once, that is, has a miss on record.
	eventually(t, 60*time.Second, "every attacker to be refused once", func() bool {
		for i := range missed {
			if !missed[i].Load() {
				return false
			}
		}
		return true
	})
	legit := clientFrom(t, "127.0.0.250")
	for i, tok := range tokens {
		if st := g.Server.Verifier().Stats(); st.InFlight+st.Queued == 0 {
			t.Fatalf("try %d: the pool is idle, so the flood is not measuring anything", i)
		}
		if s := statusWith(t, legit, g.URL+"/queue", tok).StatusCode; s != http.StatusOK {
			t.Fatalf("first-time client, try %d of %d, during the flood = %d, want 200", i+1, tries, s)
		}
	}
}

// TestConcurrentDistinctGuessesFromOneAddressLockIt: a client may have two
// checks queued or running; each further distinct token it sends meanwhile
// is refused at once, without bcrypt, and counts as a failed attempt, so
// flooding the pool from one address locks that address quickly.
func TestConcurrentDistinctGuessesFromOneAddressLockIt(t *testing.T) {
	release := make(chan struct{})
	g := startGateway(t, gatewayOpts{hashContent: ptr(lowCostHash(t, "share-right")), configure: func(c *Config) {
		c.BcryptWorkers = 1
		c.BcryptMaxWait = 5 * time.Second
		c.MaxLoginAttempts = 3
		c.bcryptCompare = func(h, p []byte) error { <-release; return bcrypt.CompareHashAndPassword(h, p) }
	}})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	defer open()
	guesser := clientFrom(t, "127.0.0.7")
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() { statusWith(t, guesser, g.URL+"/queue", fmt.Sprintf("held-%d", i)) })
	}
	eventually(t, 10*time.Second, "two checks pending", func() bool {
		st := g.Server.Verifier().Stats()
		return st.InFlight+st.Queued == 2
	})
	var codes []int
	for i := range 4 {
		codes = append(codes, statusWith(t, guesser, g.URL+"/queue", fmt.Sprintf("extra-%d", i)).StatusCode)
	}
	if want := []int{429, 429, 429, 429}; fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Fatalf("guesses over the share = %v, want %v", codes, want)
	}
	if _, locked := g.Server.Throttle().Locked(middleware.ClientKey{Addr: netip.MustParseAddr("127.0.0.7")}); !locked {
		t.Fatal("three over-the-share guesses did not lock the address")
	}
	open()
	wg.Wait()
	if n := g.Server.Verifier().Stats().Checks; n > 2 {
		t.Fatalf("%d bcrypt checks, want at most the 2 held ones: refused guesses must cost none", n)
	}
	// Another address is untouched.
	if s := statusWith(t, clientFrom(t, "127.0.0.8"), g.URL+"/queue", "share-right").StatusCode; s != 200 {
		t.Fatalf("right token from another address = %d", s)
	}
}

// TestLockedAddressStillUsesCachedTokens: one client behind a shared
// address (the Docker bridge) keeps sending a wrong token and locks the
// address. Tokens that address already had verified are still let in,
// without bcrypt; an unverified one waits out the lock. Repeating the one
// wrong token does not use up the exemption; guessing does.
func TestLockedAddressStillUsesCachedTokens(t *testing.T) {
	g := startGateway(t, gatewayOpts{hashContent: ptr(lowCostHash(t, "bridge-good-a") + "\n" + lowCostHash(t, "bridge-good-b") + "\n"),
		configure: func(c *Config) { c.MaxLoginAttempts = 3 }})
	host := clientFrom(t, "127.0.0.3")
	u := g.URL + "/queue"
	if s := statusWith(t, host, u, "bridge-good-a").StatusCode; s != 200 {
		t.Fatalf("first use of the good token = %d", s)
	}
	for i := range 3 {
		if s := statusWith(t, host, u, "retired-token").StatusCode; s != 401 {
			t.Fatalf("misconfigured client, try %d = %d, want 401", i, s)
		}
	}
	checks := g.Server.Verifier().Stats().Checks
	tests := []struct {
		name, token string
		want        int
	}{
		{"the misconfigured client again", "retired-token", 429},
		{"a verified, cached token", "bridge-good-a", 200},
		{"a right token never verified costs bcrypt, so it waits", "bridge-good-b", 429},
	}
	for round := range 5 { // repeats of the one wrong token never use up the exemption
		for _, tc := range tests {
			if s := statusWith(t, host, u, tc.token).StatusCode; s != tc.want {
				t.Fatalf("round %d, %s = %d, want %d", round, tc.name, s, tc.want)
			}
		}
	}
	// Browser login with the cached password works too.
	resp := statusWithLogin(t, host, g.URL, "bridge-good-a")
	if resp.StatusCode != http.StatusFound || !strings.Contains(resp.Header.Get("Set-Cookie"), "comfyui_auth_session=") {
		t.Fatalf("login with a cached password while locked = %d", resp.StatusCode)
	}
	// Guessing while locked: after the lock's budget of distinct unknown
	// tokens (3; the retired token and the unverified good one spent two),
	// even cached tokens wait, so the cache cannot be searched faster than
	// the throttle allows.
	if s := statusWith(t, host, u, "bridge-good-a").StatusCode; s != 200 {
		t.Fatalf("cached token with one guess left = %d, want 200", s)
	}
	statusWith(t, host, u, "locked-guess")
	if s := statusWith(t, host, u, "bridge-good-a").StatusCode; s != 429 {
		t.Fatalf("cached token after the guess budget = %d, want 429", s)
	}
	if n := g.Server.Verifier().Stats().Checks - checks; n != 0 {
		t.Fatalf("the locked address cost %d bcrypt checks, want 0", n)
	}
}

func statusWithLogin(t *testing.T, c *http.Client, base, password string, headers ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/login", strings.NewReader("password="+password))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestCrossSiteRequestsNeverLockTheVisitor: a page on another site embeds
// <img src="http://gateway/view?...&token=bad"> many times and auto-submits
// a login form. None of it counts toward the visitor's own lock: the
// visitor's next direct request with a valid, never-cached token is let in,
// and so is its login. The cross-site login forms are refused outright.
func TestCrossSiteRequestsNeverLockTheVisitor(t *testing.T) {
	g := startGateway(t, gatewayOpts{hashContent: ptr(lowCostHash(t, "visitor-right") + "\n"),
		configure: func(c *Config) { c.MaxLoginAttempts = 3 }})
	visitor := clientFrom(t, "127.0.0.4")
	for i := range 10 {
		url := fmt.Sprintf("%s/view?filename=x.png&token=bad-%d", g.URL, i)
		s := statusWith(t, visitor, url, "", "Sec-Fetch-Site", "cross-site", "Sec-Fetch-Dest", "image", "Accept", "image/avif,image/webp,*/*").StatusCode
		if s != 401 && s != 429 {
			t.Fatalf("cross-site img %d = %d, want 401 or 429", i, s)
		}
	}
	checks := g.Server.Verifier().Stats().Checks
	for i, h := range [][]string{
		{"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"},
		{"Origin", "null", "Sec-Fetch-Site", "cross-site"},
		{"Origin", "https://evil.example"},
		{"Sec-Fetch-Site", "cross-site"},
	} {
		resp := statusWithLogin(t, visitor, g.URL, "visitor-right", h...)
		if resp.StatusCode != http.StatusForbidden || strings.Contains(resp.Header.Get("Set-Cookie"), "comfyui_auth_session=") {
			t.Fatalf("cross-site login form %d (%v) = %d, want 403 and no session", i, h, resp.StatusCode)
		}
	}
	if n := g.Server.Verifier().Stats().Checks - checks; n != 0 {
		t.Fatalf("refused cross-site logins cost %d bcrypt checks", n)
	}
	if s := statusWith(t, visitor, g.URL+"/queue", "visitor-right").StatusCode; s != 200 {
		t.Fatalf("the visitor's own request with the right token = %d, want 200", s)
	}
	host := strings.TrimPrefix(g.URL, "http://")
	resp := statusWithLogin(t, visitor, g.URL, "visitor-right", "Origin", "http://"+host, "Sec-Fetch-Site", "same-origin")
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("the visitor's own login = %d, want 302", resp.StatusCode)
	}
	// Forging Sec-Fetch-Site buys a second budget, not unlimited guesses:
	// the cross-site budget locks too.
	if s := statusWith(t, visitor, g.URL+"/queue", "still-bad", "Sec-Fetch-Site", "cross-site").StatusCode; s != 429 {
		t.Fatalf("cross-site guess after its own budget = %d, want 429", s)
	}
}
