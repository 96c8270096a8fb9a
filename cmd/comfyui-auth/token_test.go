package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/comfyui-auth/comfyui-auth/hashstore"
	"golang.org/x/crypto/bcrypt"
)

func init() { costFloor = bcrypt.MinCost }

// readEnvToken returns the value of name in a KEY=VALUE file.
func readEnvToken(t *testing.T, path, name string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, name+"="); ok {
			return v
		}
	}
	t.Fatalf("%s has no %s= line", path, name)
	return ""
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestTokenGenerateWritesPairWithModesAndNeverPrintsTheToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), ".secrets")
	var out, errb bytes.Buffer
	code := run([]string{"token", "generate", "--out-dir", dir, "--cost", "4", "--compose-env"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	envFile, hashFile := filepath.Join(dir, ".env.generated"), filepath.Join(dir, "qwen-api-user.token")
	for path, want := range map[string]os.FileMode{dir: 0o700, envFile: 0o600, hashFile: 0o600} {
		if got := mode(t, path); got != want {
			t.Errorf("%s has mode %o, want %o", path, got, want)
		}
	}
	tok := readEnvToken(t, envFile, "QWEN_API_USER_TOKEN")
	if len(tok) != 32 || strings.Trim(tok, tokenAlphabet) != "" {
		t.Fatalf("token has length %d or characters outside [A-Za-z0-9_-]", len(tok))
	}
	hash, _ := os.ReadFile(hashFile)
	if err := bcrypt.CompareHashAndPassword(bytes.TrimSpace(hash), []byte(tok)); err != nil {
		t.Fatalf("the hash does not verify the token: %v", err)
	}
	if cost, _ := bcrypt.Cost(bytes.TrimSpace(hash)); cost != 4 {
		t.Errorf("cost %d, want 4", cost)
	}
	s := out.String()
	if strings.Contains(s, tok) {
		t.Fatal("generate printed the raw token")
	}
	for _, want := range []string{envFile, hashFile, "mounts", "sed -n 's/^QWEN_API_USER_TOKEN=//p'", strings.ReplaceAll(string(bytes.TrimSpace(hash)), "$", "$$")} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
}

func TestTokenGenerateRefusesToOverwriteWithoutForce(t *testing.T) {
	dir := t.TempDir()
	hashFile := filepath.Join(dir, "qwen-api-user.token")
	if err := os.WriteFile(hashFile, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"token", "generate", "--out-dir", dir, "--cost", "4"}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if got, _ := os.ReadFile(hashFile); string(got) != "keep me" || !strings.Contains(errb.String(), "--force") {
		t.Fatalf("file changed or no hint: %q / %s", got, errb.String())
	}
	if _, err := os.Stat(filepath.Join(dir, ".env.generated")); err == nil {
		t.Fatal(".env.generated was written although generate refused")
	}
	before, _ := os.Stat(hashFile)
	if code := run([]string{"token", "generate", "--out-dir", dir, "--cost", "4", "--force"}, &out, &errb); code != 0 {
		t.Fatalf("--force: exit %d: %s", code, errb.String())
	}
	after, _ := os.Stat(hashFile)
	if !os.SameFile(before, after) {
		t.Error("--force replaced the hash file instead of rewriting it in place (a single-file bind mount would miss it)")
	}
	tok := readEnvToken(t, filepath.Join(dir, ".env.generated"), "QWEN_API_USER_TOKEN")
	if d := hashstore.DiagnoseFile(hashFile, tok, true); d.Kind != hashstore.DiagRawMatch {
		t.Fatal(d.Sentence())
	}
}

// TestTokenGenerateForceNeverWidensTheHashFileMode: --force rewrites the
// hash file in place and keeps its mode, so a 0600 (or 0640) file does not
// become world-readable; the hash logs in like the token while hash tokens
// are accepted. A group- or world-readable mode is kept, and pointed out.
func TestTokenGenerateForceNeverWidensTheHashFileMode(t *testing.T) {
	for _, m := range []os.FileMode{0o600, 0o640, 0o644} {
		t.Run(m.String(), func(t *testing.T) {
			dir := t.TempDir()
			hashFile := filepath.Join(dir, "qwen-api-user.token")
			var out, errb bytes.Buffer
			if code := run([]string{"token", "generate", "--out-dir", dir, "--cost", "4"}, &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			if err := os.Chmod(hashFile, m); err != nil {
				t.Fatal(err)
			}
			out.Reset()
			if code := run([]string{"token", "generate", "--out-dir", dir, "--cost", "4", "--force"}, &out, &errb); code != 0 {
				t.Fatalf("--force: exit %d: %s", code, errb.String())
			}
			if got := mode(t, hashFile); got != m {
				t.Errorf("--force changed the hash file's mode from %04o to %04o", m, got)
			}
			if !strings.Contains(out.String(), fmt.Sprintf("mode %04o", m)) {
				t.Errorf("output does not report mode %04o:\n%s", m, out.String())
			}
			if noted := strings.Contains(out.String(), "chmod 600"); noted != (m&0o077 != 0) {
				t.Errorf("mode %04o: chmod advice printed = %v:\n%s", m, noted, out.String())
			}
			tok := readEnvToken(t, filepath.Join(dir, ".env.generated"), "QWEN_API_USER_TOKEN")
			if d := hashstore.DiagnoseFile(hashFile, tok, true); d.Kind != hashstore.DiagRawMatch {
				t.Fatal(d.Sentence())
			}
		})
	}
}

func TestNewTokenUsesTheWholeAlphabet(t *testing.T) {
	seen := map[rune]bool{}
	for range 200 {
		tok, err := newToken()
		if err != nil {
			t.Fatal(err)
		}
		if len(tok) != 32 {
			t.Fatalf("length %d", len(tok))
		}
		for _, c := range tok {
			if !strings.ContainsRune(tokenAlphabet, c) {
				t.Fatalf("character %q outside the alphabet", c)
			}
			seen[c] = true
		}
	}
	if len(seen) != 64 {
		t.Errorf("200 tokens used %d of 64 symbols", len(seen))
	}
}

func TestUsageErrorsExitTwoAndHelpExitsZero(t *testing.T) {
	tests := []struct {
		args []string
		code int
	}{
		{[]string{"token"}, 2},
		{[]string{"token", "nope"}, 2},
		{[]string{"token", "generate", "--help"}, 0},
		{[]string{"token", "rotate", "--help"}, 0},
		{[]string{"token", "check", "--help"}, 0},
		{[]string{"token", "revoke", "--help"}, 0},
		{[]string{"token", "users", "--help"}, 0},
		{[]string{"hash", "--help"}, 0},
		{[]string{"probe", "--help"}, 0},
		{[]string{"token", "generate", "--cost", "15"}, 2},
		{[]string{"token", "generate", "extra"}, 2},
		{[]string{"token", "rotate", "--keep-old", "1m", "--retire-old"}, 2},
		{[]string{"probe", "--url", "ftp://x"}, 2},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(tt.args, &out, &errb); code != tt.code {
				t.Fatalf("exit %d, want %d: %s", code, tt.code, errb.String())
			}
		})
	}
}

func TestTokenCheckSaysWhichCaseHoldsAndWhichVariableItRead(t *testing.T) {
	dir := t.TempDir()
	tok := "check-token-0123456789abcdefghij"
	h, _ := bcrypt.GenerateFromPassword([]byte(tok), bcrypt.MinCost)
	other, _ := bcrypt.GenerateFromPassword([]byte("other"), bcrypt.MinCost)
	hash := string(h)
	hashFile := filepath.Join(dir, "qwen-api-user.token")
	os.WriteFile(hashFile, []byte(hash+"\n"), 0o644)
	malformed := filepath.Join(dir, "malformed.token")
	os.WriteFile(malformed, []byte(hash[:55]+"\n"), 0o644)

	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		stdin string
		code  int
		says  []string
	}{
		{"raw token from QWEN_API_USER_TOKEN", nil, map[string]string{"QWEN_API_USER_TOKEN": tok, "COMFYUI_API_TOKEN": hash}, "", 0, []string{"QWEN_API_USER_TOKEN:", "matches hash 1"}},
		{"hash from COMFYUI_API_TOKEN", nil, map[string]string{"COMFYUI_API_TOKEN": hash}, "", 0, []string{"COMFYUI_API_TOKEN:", "ComfyUI-Login compatibility is on"}},
		{"hash with compatibility off", []string{"--accept-hash-token=false"}, map[string]string{"COMFYUI_AUTH_TOKEN": hash}, "", 1, []string{"COMFYUI_AUTH_TOKEN:", "refused"}},
		{"another hash", []string{"--token", string(other)}, nil, "", 1, []string{"--token:", "out of sync"}},
		{"dollar eaten", nil, map[string]string{"QWEN_API_TOKEN": strings.ReplaceAll(hash, "$", "")}, "", 1, []string{"QWEN_API_TOKEN:", "`$$`"}},
		{"no match from stdin", []string{"--token", "-"}, nil, "wrong-token-0123456789abcdefghij\n", 1, []string{"token from stdin:", "matches none"}},
		{"missing file", []string{"--hash-file", filepath.Join(dir, "nope")}, map[string]string{"QWEN_API_USER_TOKEN": tok}, "", 1, []string{"does not exist"}},
		{"malformed file", []string{"--hash-file", malformed}, map[string]string{"QWEN_API_USER_TOKEN": tok}, "", 1, []string{"55 characters"}},
		{"no token anywhere", nil, nil, "", 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"COMFYUI_AUTH_TOKEN_FILE": hashFile}
			for k, v := range tt.env {
				env[k] = v
			}
			getenv := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
			var out, errb bytes.Buffer
			code := runTokenCheck(tt.args, strings.NewReader(tt.stdin), getenv, &out, &errb)
			if code != tt.code {
				t.Fatalf("exit %d, want %d: %s%s", code, tt.code, out.String(), errb.String())
			}
			s := out.String()
			for _, w := range tt.says {
				if !strings.Contains(s, w) {
					t.Errorf("output %q lacks %q", s, w)
				}
			}
			if strings.Count(strings.TrimSpace(s), "\n") > 0 {
				t.Errorf("check should answer in one line: %q", s)
			}
			for _, secret := range []string{tok, hash, string(other)} {
				if strings.Contains(s, secret) {
					t.Fatal("check printed a secret")
				}
			}
		})
	}
}

func TestHashReadsOneLineFromAPipe(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runHash([]string{"--cost", "4"}, strings.NewReader("s3cret-pass\nignored\n"), &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if err := bcrypt.CompareHashAndPassword(bytes.TrimSpace(out.Bytes()), []byte("s3cret-pass")); err != nil {
		t.Fatal(err)
	}
	if code := runHash(nil, strings.NewReader("\n"), &out, &errb); code != 1 || !strings.Contains(errb.String(), "empty") {
		t.Fatalf("empty password: exit %d, %s", code, errb.String())
	}
}

func TestTokenRotateAddsThenRetires(t *testing.T) {
	dir := t.TempDir()
	hashFile := filepath.Join(dir, "qwen-api-user.token")
	oldTok := "old-token-0123456789abcdefghijklm"
	h, _ := bcrypt.GenerateFromPassword([]byte(oldTok), bcrypt.MinCost)
	os.WriteFile(hashFile, append(h, '\n'), 0o644)
	envFile := filepath.Join(dir, ".env.generated")

	var out, errb bytes.Buffer
	if code := runTokenRotate(context.Background(), []string{"--hash-file", hashFile, "--cost", "4"}, &out, &errb); code != 0 {
		t.Fatalf("rotate: exit %d: %s", code, errb.String())
	}
	newTok := readEnvToken(t, envFile, "QWEN_API_USER_TOKEN")
	if mode(t, envFile) != 0o600 {
		t.Errorf(".env.generated mode %o", mode(t, envFile))
	}
	for tok, line := range map[string]int{oldTok: 1, newTok: 2} {
		if d := hashstore.DiagnoseFile(hashFile, tok, false); d.Kind != hashstore.DiagRawMatch || d.Line != line {
			t.Fatalf("during the overlap: %s", d.Sentence())
		}
	}
	if strings.Contains(out.String(), newTok) || !strings.Contains(out.String(), "--retire-old") {
		t.Fatalf("output printed the token or lacks the retire hint:\n%s", out.String())
	}

	// --keep-old waits (on a timer), then retires by itself.
	out.Reset()
	if code := runTokenRotate(context.Background(), []string{"--hash-file", hashFile, "--cost", "4", "--keep-old", "50ms"}, &out, &errb); code != 0 {
		t.Fatalf("rotate --keep-old: exit %d: %s", code, errb.String())
	}
	newest := readEnvToken(t, envFile, "QWEN_API_USER_TOKEN")
	for tok, kind := range map[string]hashstore.DiagnosisKind{oldTok: hashstore.DiagNoMatch, newTok: hashstore.DiagNoMatch, newest: hashstore.DiagRawMatch} {
		if d := hashstore.DiagnoseFile(hashFile, tok, false); d.Kind != kind {
			t.Fatalf("after --keep-old: want %v, got %s", kind, d.Sentence())
		}
	}
	if !strings.Contains(out.String(), "retired 2 old hash") {
		t.Fatalf("output:\n%s", out.String())
	}

	// An interrupted wait leaves both valid and says so.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out.Reset()
	if code := runTokenRotate(ctx, []string{"--hash-file", hashFile, "--cost", "4", "--keep-old", "1h"}, &out, &errb); code != 1 {
		t.Fatalf("interrupted rotate: exit %d", code)
	}
	if !strings.Contains(out.String(), "both stay valid") {
		t.Fatalf("output:\n%s", out.String())
	}
	if d := hashstore.DiagnoseFile(hashFile, newest, false); d.Kind != hashstore.DiagRawMatch {
		t.Fatal(d.Sentence())
	}

	out.Reset()
	if code := runTokenRotate(context.Background(), []string{"--hash-file", hashFile, "--retire-old"}, &out, &errb); code != 0 {
		t.Fatalf("--retire-old: exit %d: %s", code, errb.String())
	}
	if d := hashstore.DiagnoseFile(hashFile, newest, false); d.Kind != hashstore.DiagNoMatch {
		t.Fatalf("after --retire-old the previous token should be gone: %s", d.Sentence())
	}
}
