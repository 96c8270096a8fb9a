package hashstore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// The gateway's Store, `token check` (ReadFile) and `token rotate`
// (AppendHash) read the same file and must say the same sentence about the
// same problem, so an operator never has two stories to reconcile.
func TestEveryReaderOfTheFileGivesTheSameSentence(t *testing.T) {
	tests := []struct {
		name   string
		make   func(t *testing.T, path string)
		reason string
	}{
		{"missing", func(t *testing.T, path string) {}, "does not exist"},
		{"directory", func(t *testing.T, path string) { must(t, os.Mkdir(path, 0o755)) }, "is a directory"},
		{"too large", func(t *testing.T, path string) { writeFile(t, path, strings.Repeat("#", MaxFileBytes+10)) }, "65546 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "qwen-api-user.token")
			tc.make(t, path)
			s, err := NewStore(StoreOptions{Path: path, PollInterval: -1, Logger: zerolog.Nop()})
			must(t, err)
			store := s.Status().LastError
			_, checkErr := ReadFile(path)
			_, rotateErr := AppendHash(path, cheapHash(t, "new"))
			if !strings.Contains(store, tc.reason) || !strings.Contains(store, path) {
				t.Fatalf("store says %q, want it to name %s and say %q", store, path, tc.reason)
			}
			for name, err := range map[string]error{"token check": checkErr, "token rotate": rotateErr} {
				if err == nil || err.Error() != store {
					t.Errorf("%s says %v\nthe gateway says %q", name, err, store)
				}
			}
		})
	}
}

// Every file the tools write ends with the mode asked for, whatever the
// mode of the file it replaces.
func TestWriteFileSyncedSetsTheModeAskedFor(t *testing.T) {
	dir := t.TempDir()
	fresh, existing := filepath.Join(dir, "fresh"), filepath.Join(dir, "existing")
	must(t, os.WriteFile(existing, []byte("old content that is longer"), 0o600))
	must(t, WriteFileSynced(fresh, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644, []byte("new")))
	must(t, WriteFileSynced(existing, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644, []byte("new")))
	for _, p := range []string{fresh, existing} {
		fi, err := os.Stat(p)
		must(t, err)
		b, err := os.ReadFile(p)
		must(t, err)
		if fi.Mode().Perm() != 0o644 || string(b) != "new" {
			t.Errorf("%s: mode %v content %q, want 0644 \"new\"", filepath.Base(p), fi.Mode().Perm(), b)
		}
	}
	if err := WriteFileSynced(fresh, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644, []byte("again")); err == nil {
		t.Error("O_EXCL over an existing file succeeded")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
