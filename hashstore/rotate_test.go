package hashstore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAppendThenRetireKeepsInodeModeAndUsername(t *testing.T) {
	path := filepath.Join(t.TempDir(), "PASSWORD")
	oldHash, newHash := cheapHash(t, "old"), cheapHash(t, "new")
	if err := os.WriteFile(path, []byte("# managed\n"+oldHash+"\nalice"), 0o640); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(path)

	creds, err := AppendHash(path, newHash)
	if err != nil {
		t.Fatal(err)
	}
	if len(creds.Hashes) != 2 || creds.Hashes[1] != newHash || creds.Username != "alice" {
		t.Fatalf("after append: %+v", creds)
	}
	if _, err := AppendHash(path, newHash); err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Fatalf("appending the same hash twice: %v", err)
	}

	removed, kept, err := RetireOld(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != Fingerprint(oldHash) || kept != Fingerprint(newHash) {
		t.Fatalf("removed %v kept %s", removed, kept)
	}
	data, _ := os.ReadFile(path)
	if got, want := string(data), "# managed\nalice\n"+newHash+"\n"; got != want {
		t.Fatalf("file after retire:\n%q\nwant\n%q", got, want)
	}
	after, _ := os.Stat(path)
	if !os.SameFile(before, after) || after.Mode().Perm() != 0o640 {
		t.Fatalf("the file was replaced or its mode changed: same=%v mode=%v", os.SameFile(before, after), after.Mode())
	}

	removed, _, err = RetireOld(path)
	if err != nil || len(removed) != 0 {
		t.Fatalf("retiring with one hash left: removed %v, %v", removed, err)
	}
}

func TestRotationRefusesBrokenOrMissingFiles(t *testing.T) {
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken.token")
	if err := os.WriteFile(broken, []byte("2b12UDceblhZeEySDwVMC0ccN.IaQmMBfKdTY.aAE3poXcq1zsOP6coni\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := cheapHash(t, "x")
	tests := []struct {
		name, path, hash, says string
	}{
		{"missing file", filepath.Join(dir, "nope"), good, "token generate"},
		{"broken file left untouched", broken, good, "left untouched"},
		{"invalid new hash", broken, "not-a-hash-at-all-but-long-enough", "new hash is not valid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := AppendHash(tt.path, tt.hash)
			if err == nil || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("AppendHash: %v, want it to say %q", err, tt.says)
			}
		})
	}
	if _, _, err := RetireOld(broken); err == nil {
		t.Fatal("RetireOld accepted a broken file")
	}
}
