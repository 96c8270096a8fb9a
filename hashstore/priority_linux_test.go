package hashstore

import (
	"context"
	"testing"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"
)

func TestBcryptRunsAtNiceTenOnLinux(t *testing.T) {
	v := newVerifier(t, fallbackStore(t, cheapHash(t, "x")), VerifierOptions{Workers: 1})
	nice := make(chan int, 1)
	v.compare = func(h, p []byte) error {
		raw, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
		if err != nil {
			t.Error(err)
		}
		nice <- 20 - raw
		return bcrypt.CompareHashAndPassword(h, p)
	}
	if r := v.Verify(context.Background(), "x"); r.Outcome != Match {
		t.Fatalf("got %+v", r)
	}
	if n := <-nice; n < workerNice {
		t.Fatalf("bcrypt ran at nice %d, want at least %d", n, workerNice)
	}
	// The test's own thread, like the proxy's, keeps its priority.
	if raw, _ := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid()); 20-raw >= workerNice {
		t.Fatalf("the caller's thread is at nice %d too", 20-raw)
	}
}
