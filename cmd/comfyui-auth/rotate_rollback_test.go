package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// When the hash cannot be added, token rotate puts the token file back as it
// was; when that fails too, it says which file now holds a token the hash
// file does not accept, and how to fix it, instead of exiting with the
// token file and the hash file out of step in silence.
func TestTokenRotateRollbackIsCheckedAndReported(t *testing.T) {
	const oldEnv = "# kept by the operator\nQWEN_API_USER_TOKEN=old-token\n"
	injected := errors.New("injected: disk full")
	tests := []struct {
		name       string
		envExisted bool
		failUndo   bool
		wantEnv    string // "" with envExisted false: the file must be gone
		wantSays   []string
	}{
		{"old token file put back", true, false, oldEnv, []string{"was put back as it was"}},
		{"new token file removed", false, false, "", []string{"was removed again"}},
		{"putting back fails", true, true, "NEW", []string{"putting the token file back failed too", "injected: disk full",
			"holds a NEW token", "do not give it to clients", "put back your own copy of"}},
		{"removing fails", false, true, "NEW", []string{"putting the token file back failed too", "injected: disk full",
			"holds a NEW token", "To fix: delete"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.failUndo {
				restore, remove := restoreFile, removeFile
				restoreFile = func(string, int, os.FileMode, []byte) error { return injected }
				removeFile = func(string) error { return injected }
				t.Cleanup(func() { restoreFile, removeFile = restore, remove })
			}
			dir := t.TempDir()
			// A hash file that is not valid makes AppendHash refuse after
			// the token file was written.
			hashFile := filepath.Join(dir, "qwen-api-user.token")
			if err := os.WriteFile(hashFile, []byte("not a hash\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			envFile := filepath.Join(dir, ".env.generated")
			if tc.envExisted {
				if err := os.WriteFile(envFile, []byte(oldEnv), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var out, errb bytes.Buffer
			if code := runTokenRotate(context.Background(), []string{"--hash-file", hashFile, "--cost", "4"}, &out, &errb); code != 1 {
				t.Fatalf("exit %d, want 1; stderr:\n%s", code, errb.String())
			}
			got, err := os.ReadFile(envFile)
			switch {
			case tc.wantEnv == "NEW":
				if err != nil || string(got) == oldEnv {
					t.Fatalf("the injected failure should have left the new token file: %v", err)
				}
			case tc.envExisted:
				if string(got) != tc.wantEnv || mode(t, envFile) != 0o600 {
					t.Fatalf("token file after rollback: %q mode %o, want the old content at 0600", got, mode(t, envFile))
				}
			default:
				if !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("token file after rollback: %v, want it removed", err)
				}
			}
			says := errb.String()
			for _, w := range append(tc.wantSays, envFile) {
				if !strings.Contains(says, w) {
					t.Errorf("stderr lacks %q:\n%s", w, says)
				}
			}
			if tc.failUndo && !strings.Contains(says, hashFile) {
				t.Errorf("stderr does not name the hash file %s:\n%s", hashFile, says)
			}
		})
	}
}
