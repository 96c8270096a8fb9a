package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// pacedCompare stands in for a slow bcrypt: each comparison waits for the
// next tick of a shared ticker, so one worker does about one comparison per
// tick however loaded the machine is, and the pool stays saturated by a
// flood without burning real cost-12 bcrypt.
func pacedCompare(t *testing.T, every time.Duration) func(hash, token []byte) error {
	tick := time.NewTicker(every)
	t.Cleanup(tick.Stop)
	return func(hash, token []byte) error {
		<-tick.C
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
		c.BcryptMaxWait = 20 * time.Second // generous: only starvation may fail this
		c.MaxLoginAttempts = 0
		c.bcryptCompare = pacedCompare(t, 2*time.Millisecond)
	}})

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	const attackers, conns = 64, 3
	var seq atomic.Int64
	missed := make([]atomic.Bool, attackers) // got an answer other than 503
	for a := range attackers {
		client := clientFrom(t, fmt.Sprintf("127.0.0.%d", 10+a))
		for range conns {
			wg.Go(func() {
				for ctx.Err() == nil {
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
		c.BcryptMaxWait = time.Minute
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
	if _, locked := g.Server.Throttle().Locked(&http.Request{RemoteAddr: "127.0.0.7:1", Header: http.Header{}}); !locked {
		t.Fatal("three over-the-share guesses did not lock the address")
	}
	open()
	wg.Wait()
	if n := g.Server.Verifier().Stats().Checks; n != 2 {
		t.Fatalf("%d bcrypt checks, want 2: refused guesses must cost none", n)
	}
	// Another address is untouched.
	if s := statusWith(t, clientFrom(t, "127.0.0.8"), g.URL+"/queue", "share-right").StatusCode; s != 200 {
		t.Fatalf("right token from another address = %d", s)
	}
}
