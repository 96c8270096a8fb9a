package hashstore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// stepper lets the workers run one comparison per step, recording the
// order in which tokens were compared.
type stepper struct {
	step  chan struct{}
	mu    sync.Mutex
	order []string
}

func newStepper(v *Verifier) *stepper {
	s := &stepper{step: make(chan struct{})}
	v.compare = func(h, p []byte) error {
		s.mu.Lock()
		s.order = append(s.order, string(p))
		s.mu.Unlock()
		<-s.step
		return bcrypt.CompareHashAndPassword(h, p)
	}
	return s
}

func (s *stepper) compared() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.order...)
}

func verifyAsync(v *Verifier, client, token string) chan Result {
	ch := make(chan Result, 1)
	go func() { ch <- v.VerifyFor(context.Background(), client, token) }()
	return ch
}

func TestClientWithoutMissesIsServedBeforeAGuesser(t *testing.T) {
	v := newVerifier(t, fallbackStore(t, cheapHash(t, "right")), VerifierOptions{Workers: 1, QueueLen: 8, PerClient: 2, MaxWait: time.Minute})
	s := newStepper(v)
	defer close(s.step)
	w0 := verifyAsync(v, "guesser", "wrong-0")
	waitFor(t, "the guesser to hold the worker", func() bool { return v.Stats().InFlight == 1 })
	w1 := verifyAsync(v, "guesser", "wrong-1")
	waitFor(t, "the guesser's second guess to queue", func() bool { return v.Stats().Queued == 1 })
	// A third distinct token while two are pending: over the cap, at once.
	if r := v.VerifyFor(context.Background(), "guesser", "wrong-2"); r.Outcome != ClientBusy {
		t.Fatalf("third concurrent guess = %v, want ClientBusy", r.Outcome)
	}
	fresh := verifyAsync(v, "newcomer", "right")
	waitFor(t, "the newcomer to queue", func() bool { return v.Stats().Queued == 2 })
	for range 3 {
		s.step <- struct{}{}
	}
	if r := <-fresh; r.Outcome != Match {
		t.Fatalf("newcomer: %+v", r)
	}
	if r := <-w0; r.Outcome != NoMatch {
		t.Fatalf("first guess: %+v", r)
	}
	if r := <-w1; r.Outcome != NoMatch {
		t.Fatalf("second guess: %+v", r)
	}
	got := s.compared()
	if len(got) != 3 || got[0] != "wrong-0" || got[1] != "right" || got[2] != "wrong-1" {
		t.Fatalf("compared in order %q, want the newcomer before the guesser's queued guess", got)
	}
	if st := v.Stats(); st.ClientBusy != 1 || st.Checks != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFullQueueMakesRoomForAClientWithFewerMisses(t *testing.T) {
	v := newVerifier(t, fallbackStore(t, cheapHash(t, "right")), VerifierOptions{Workers: 1, QueueLen: 1, PerClient: 2, MaxWait: time.Minute})
	s := newStepper(v)
	defer close(s.step)
	verifyAsync(v, "guesser", "wrong-0")
	waitFor(t, "the guesser to hold the worker", func() bool { return v.Stats().InFlight == 1 })
	queued := verifyAsync(v, "guesser", "wrong-1")
	waitFor(t, "the queue to fill", func() bool { return v.Stats().Queued == 1 })
	v.VerifyFor(context.Background(), "guesser", "wrong-2") // a miss: ClientBusy
	// Nor does a further guess from the same client.
	if r := v.VerifyFor(context.Background(), "guesser", "wrong-3"); r.Outcome != ClientBusy {
		t.Fatalf("got %v", r.Outcome)
	}
	fresh := verifyAsync(v, "newcomer", "right")
	if r := <-queued; r.Outcome != Busy {
		t.Fatalf("the guesser's queued guess = %v, want Busy (evicted)", r.Outcome)
	}
	s.step <- struct{}{}
	s.step <- struct{}{}
	if r := <-fresh; r.Outcome != Match {
		t.Fatalf("newcomer: %+v", r)
	}
	if st := v.Stats(); st.Queued != 0 || st.Checks != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestAnIdleWorkerIsNeverShed: with a wait limit far shorter than it takes
// to schedule a nice-10 worker thread, a verification that finds a worker
// slot free still runs, because the slot is taken before the wait.
func TestAnIdleWorkerIsNeverShed(t *testing.T) {
	v := newVerifier(t, fallbackStore(t, cheapHash(t, "x")), VerifierOptions{Workers: 1, QueueLen: 1, MaxWait: time.Nanosecond})
	// Distinct wrong tokens: each needs a real check (a match would be
	// cached and spare the worker).
	for i := range 50 {
		if r := v.VerifyFor(context.Background(), "one client", fmt.Sprintf("wrong-%d", i)); r.Outcome != NoMatch {
			t.Fatalf("verification %d with an idle worker = %v, want NoMatch", i, r.Outcome)
		}
	}
	if st := v.Stats(); st.Shed != 0 || st.Checks != 50 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCachedNeverRunsBcrypt(t *testing.T) {
	v := newVerifier(t, fallbackStore(t, cheapHash(t, "tok")), VerifierOptions{Workers: 1})
	if _, ok := v.Cached("tok"); ok {
		t.Fatal("an unverified token was reported cached")
	}
	if r := v.VerifyFor(context.Background(), "c", "tok"); r.Outcome != Match {
		t.Fatalf("%+v", r)
	}
	if r, ok := v.Cached("tok"); !ok || r.Outcome != Match || !r.Cached || r.Line != 1 {
		t.Fatalf("after a match: %+v %v", r, ok)
	}
	if st := v.Stats(); st.Checks != 1 {
		t.Fatalf("checks %d, want 1", st.Checks)
	}
}

func TestClientTableForgetsIdleClientsFirst(t *testing.T) {
	tab := newClientTable(2)
	now := time.Now()
	a := tab.get("a", now)
	a.active = 1
	b := tab.get("b", now)
	b.miss(now)
	tab.get("c", now) // full: b is idle, a is pinned by its job
	if _, ok := tab.items["a"]; !ok || tab.len() != 2 {
		t.Fatalf("a client with a job was forgotten; len %d", tab.len())
	}
	if _, ok := tab.items["b"]; ok {
		t.Fatal("the idle client was kept")
	}
	if s := b.score(now.Add(missHalfLife)); s < 0.49 || s > 0.51 {
		t.Fatalf("one miss after a half-life scores %v, want 0.5", s)
	}
}
