package logbuf

import (
	"strings"
	"sync"
	"testing"
)

// Run under -race: concurrent writers and a reader, and every line whole.
func TestConcurrentWritesStayWholeAndReadable(t *testing.T) {
	var b Buffer
	const writers, lines = 8, 200
	line := strings.Repeat("x", 100) + "\n"
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range lines {
				if _, err := b.Write([]byte(line)); err != nil {
					t.Error(err)
				}
				_ = b.String()
			}
		})
	}
	wg.Wait()
	got := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(got) != writers*lines {
		t.Fatalf("%d lines, want %d", len(got), writers*lines)
	}
	for i, l := range got {
		if l+"\n" != line {
			t.Fatalf("line %d is torn: %q", i, l)
		}
	}
}
