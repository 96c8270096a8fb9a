package hashstore

import (
	"crypto/subtle"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

// What can be checked of "constant time" without a stopwatch (a timing
// assertion flakes on a shared machine): a token of a hash's length is
// compared with crypto/subtle, over 32-byte digests (so
// subtle.ConstantTimeCompare's early return on unequal lengths never
// fires), against every loaded hash, with as many comparisons whether it
// matches the first hash, the last, or none. A token of any other length
// is answered with no comparison at all: a bcrypt hash's length is public,
// so that tells nothing of the hashes.
func TestMatchHashComparesEqualLengthDigestsWithEveryHash(t *testing.T) {
	hashes := []string{cheapHash(t, "one"), cheapHash(t, "two"), cheapHash(t, "three")}
	path := filepath.Join(t.TempDir(), "token")
	writeFile(t, path, strings.Join(hashes, "\n")+"\n")
	s, err := NewStore(StoreOptions{Path: path, PollInterval: -1, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		lengths [][2]int
	)
	s.compareDigest = func(x, y []byte) int {
		mu.Lock()
		lengths = append(lengths, [2]int{len(x), len(y)})
		mu.Unlock()
		return subtle.ConstantTimeCompare(x, y)
	}
	flip := []byte(hashes[0])
	flip[40] ^= 1
	tests := []struct {
		name  string
		token string
		line  int // 0: no match
	}{
		{"first hash", hashes[0], 1},
		{"middle hash", hashes[1], 2},
		{"last hash", hashes[2], 3},
		{"one character off", string(flip), 0},
		{"prefix of a hash", hashes[0][:59], 0},
		{"hash plus a byte", hashes[2] + "x", 0},
		{"empty", "", 0},
		{"short", "x", 0},
		{"long", strings.Repeat("y", 4096), 0},
	}
	for _, tc := range tests {
		lengths = nil
		line, _, ok := s.MatchHash(tc.token)
		if line != tc.line || ok != (tc.line != 0) {
			t.Errorf("%s: line %d ok %v, want line %d", tc.name, line, ok, tc.line)
		}
		want := len(hashes)
		if len(tc.token) != len(hashes[0]) {
			want = 0
		}
		if len(lengths) != want {
			t.Errorf("%s: %d comparisons, want %d (one per hash for a token of a hash's length, whatever matched; none otherwise)", tc.name, len(lengths), want)
		}
		for _, l := range lengths {
			if l != [2]int{32, 32} {
				t.Errorf("%s: compared %d against %d bytes, want two 32-byte digests", tc.name, l[0], l[1])
			}
		}
	}
}
