package server

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/middleware"
	"github.com/rs/zerolog"
)

func TestParseRevocations(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	id := strings.Repeat("ab", 16)
	id2 := strings.Repeat("cd", 16)
	live, dead := "1700003600", "1699999999"
	tests := []struct {
		name    string
		data    string
		entries int
		problem string
	}{
		{"valid", `{"format":1,"epoch":"0123456789abcdef","revoked":{"` + id + `":` + live + `}}`, 1, ""},
		{"expired entries dropped", `{"format":1,"epoch":"0123456789abcdef","revoked":{"` + id + `":` + dead + `,"` + id2 + `":` + live + `}}`, 1, ""},
		{"no revocations", `{"format":1,"epoch":"0123456789abcdef","revoked":{}}` + "\n", 0, ""},
		{"over the bound", `{"format":1,"epoch":"0123456789abcdef","revoked":{"` + id + `":` + live + `,"` + id2 + `":` + live + `}}`, 0, "more than 1 unexpired"},
		{"cut short", `{"format":1,"epoch":"01`, 0, "not the expected JSON"},
		{"empty", ``, 0, "not the expected JSON"},
		{"another format", `{"format":2,"epoch":"0123456789abcdef","revoked":{}}`, 0, "format 2"},
		{"short epoch", `{"format":1,"epoch":"0123","revoked":{}}`, 0, "epoch"},
		{"upper-case epoch", `{"format":1,"epoch":"0123456789ABCDEF","revoked":{}}`, 0, "epoch"},
		{"bad ID", `{"format":1,"epoch":"0123456789abcdef","revoked":{"xyz":` + live + `}}`, 0, "session ID"},
		{"negative expiry", `{"format":1,"epoch":"0123456789abcdef","revoked":{"` + id + `":-5}}`, 0, "expiry"},
		{"unknown field", `{"format":1,"epoch":"0123456789abcdef","revoked":{},"notBefore":1}`, 0, "not the expected JSON"},
		{"trailing data", `{"format":1,"epoch":"0123456789abcdef","revoked":{}} {}`, 0, "trailing"},
		{"too large", strings.Repeat(" ", maxRevocationsFileBytes+1), 0, "larger than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bound := 10
			if tc.name == "over the bound" {
				bound = 1
			}
			st, err := parseRevocations([]byte(tc.data), now, bound)
			if tc.problem != "" {
				if err == nil || !strings.Contains(err.Error(), tc.problem) {
					t.Fatalf("error %v, want one saying %q", err, tc.problem)
				}
				return
			}
			if err != nil || len(st.Revoked) != tc.entries || st.Epoch != 0x0123456789abcdef {
				t.Fatalf("%v: %d entries, epoch %x", err, len(st.Revoked), st.Epoch)
			}
		})
	}
}

// TestStateDirIsPrivateAndWritesAreAtomic: the directory is made 0700, the
// file 0600, a write leaves no temporary file, and what was saved loads
// back.
func TestStateDirIsPrivateAndWritesAreAtomic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	must(t, os.Mkdir(dir, 0o755))
	sd, err := openStateDir(dir, zerolog.Nop())
	must(t, err)
	now := time.Now()
	st := middleware.NewRevocationState()
	st.Revoked[[16]byte{1}] = now.Add(time.Hour).Truncate(time.Second)
	must(t, sd.saveRevocations(st))
	back, problem, err := sd.loadRevocations(now, 10)
	if err != nil || problem != "" || back.Epoch != st.Epoch || !maps.Equal(back.Revoked, st.Revoked) {
		t.Fatalf("loaded %+v (%q, %v), saved %+v", back, problem, err, st)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, revocationsFileName): 0o600} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %v", p, err, fi.Mode().Perm(), want)
		}
	}
	names, _ := filepath.Glob(filepath.Join(dir, "*"))
	hidden, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(names) != 1 || len(hidden) != 0 {
		t.Errorf("state dir holds %v %v, want sessions.json only", names, hidden)
	}
}

// FuzzParseRevocations: no input makes the state parser panic or accept
// more than the bound, and whatever it accepts survives a save and a load
// unchanged.
func FuzzParseRevocations(f *testing.F) {
	now := time.Unix(1_700_000_000, 0)
	st := middleware.RevocationState{Epoch: 42, Revoked: map[[16]byte]time.Time{{1}: now.Add(time.Hour), {2}: now.Add(2 * time.Hour)}}
	f.Add(encodeRevocations(st))
	f.Add([]byte(`{"format":1,"epoch":"0123456789abcdef","revoked":{}}`))
	f.Add([]byte(`{"format":1,"epoch":"0123456789abcdef","revoked":{"abababababababababababababababab":1}}`))
	f.Add([]byte(`{"format":1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		const bound = 8
		got, err := parseRevocations(data, now, bound)
		if err != nil {
			return
		}
		if len(got.Revoked) > bound {
			t.Fatalf("accepted %d entries, bound %d", len(got.Revoked), bound)
		}
		again, err := parseRevocations(encodeRevocations(got), now, bound)
		if err != nil || again.Epoch != got.Epoch || !maps.EqualFunc(again.Revoked, got.Revoked, time.Time.Equal) {
			t.Fatalf("accepted %q, which does not survive a save and a load (%v)", data, err)
		}
	})
}
