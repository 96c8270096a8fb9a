package middleware

import (
	"bytes"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestRefusalLogLinesAreBoundedWhateverTheNumberOfClients floods from more
// clients than the table holds, over several intervals: the lines written
// stay within 2 × capacity + 1 per interval, and every refusal is accounted
// for, logged or summarised.
func TestRefusalLogLinesAreBoundedWhateverTheNumberOfClients(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	clock := time.Unix(1_000_000, 0)
	l := newRefusalLog(zerolog.New(&buf), time.Hour, 4) // the timer never fires; the test flushes
	l.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }

	const clients, perClient, intervals = 50, 20, 3
	logged := 0
	for i := 0; i < intervals; i++ {
		for c := 0; c < clients; c++ {
			a := netip.AddrFrom4([4]byte{10, 0, 0, byte(c)})
			for k := 0; k < perClient; k++ {
				if l.first(a, 401) {
					logged++
				}
			}
		}
		advance(time.Hour)
		l.flush()
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if max := intervals * (2*4 + 1); logged+len(lines) > max {
		t.Fatalf("%d first lines and %d summaries over %d intervals, want at most %d", logged, len(lines), intervals, max)
	}
	summarised := 0
	for _, line := range lines {
		var n int
		if i := strings.Index(line, `"refused":`); i >= 0 {
			for _, ch := range line[i+len(`"refused":`):] {
				if ch < '0' || ch > '9' {
					break
				}
				n = n*10 + int(ch-'0')
			}
		}
		summarised += n
	}
	if total := intervals * clients * perClient; logged+summarised != total {
		t.Fatalf("%d logged + %d summarised, want all %d refusals accounted for", logged, summarised, total)
	}
}

// TestRefusalLogCloseWritesWhatIsPendingThenLogsEachRefusal: close writes
// the counts of a client and of the overflow whose interval has not
// passed, once; refusals after it are logged one by one.
func TestRefusalLogCloseWritesWhatIsPendingThenLogsEachRefusal(t *testing.T) {
	var buf bytes.Buffer
	l := newRefusalLog(zerolog.New(&buf), time.Hour, 1)
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	for _, c := range []netip.Addr{a, a, a, b, b} {
		l.first(c, 401)
	}
	if buf.Len() != 0 {
		t.Fatalf("a summary before the interval passed: %s", buf.String())
	}
	l.close()
	l.close()
	got := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{`"client":"10.0.0.1","refused":2,"statuses":{"401":2}`, `"client":"untracked","refused":2,"statuses":{"401":2}`}
	if len(got) != len(want) {
		t.Fatalf("close wrote %d lines, want %d:\n%s", len(got), len(want), buf.String())
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("line %d = %s, want it to contain %s", i, got[i], want[i])
		}
	}
	for i := range 3 {
		if !l.first(a, 401) {
			t.Fatalf("refusal %d after close was counted for a summary that will not be written", i+1)
		}
	}
}
