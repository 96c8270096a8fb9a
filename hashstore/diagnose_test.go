package hashstore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDiagnoseNamesEachCredentialMixUp(t *testing.T) {
	const oldTok, newTok = "old-token-0123456789abcdefghijklm", "new-token-0123456789abcdefghijklm"
	oldHash, newHash := cheapHash(t, oldTok), cheapHash(t, newTok)
	stranger := cheapHash(t, "someone-else")
	creds := Credentials{Hashes: []string{oldHash, newHash}}
	// What Compose makes of `$2b$04$<22 salt chars>...` when the salt starts
	// with a letter: `$<name>` is replaced by nothing up to the first `.` or
	// `/`, or the whole rest when there is none. Cut the middle out the
	// same way so the tail survives.
	composeEaten := newHash[:6] + newHash[40:]

	tests := []struct {
		name       string
		value      string
		acceptHash bool
		kind       DiagnosisKind
		line       int
		ok         bool
		says       string
	}{
		{"raw token matches the second hash", newTok, true, DiagRawMatch, 2, true, "matches hash 2"},
		{"raw token matches the first hash", oldTok, false, DiagRawMatch, 1, true, "matches hash 1"},
		{"hash itself with compatibility on", oldHash, true, DiagHashItself, 1, true, "ComfyUI-Login compatibility is on"},
		{"hash itself with compatibility off", newHash, false, DiagHashItself, 2, false, "hash tokens are refused"},
		{"a different hash", stranger, true, DiagOtherHash, 0, false, "out of sync"},
		{"dollar eaten by Compose", composeEaten, true, DiagDollarMangled, 2, false, "`$$`"},
		{"dollar signs all stripped", strings.ReplaceAll(newHash, "$", ""), true, DiagDollarMangled, 2, false, "eaten by interpolation"},
		{"dollar doubled outside Compose", strings.ReplaceAll(oldHash, "$", "$$"), true, DiagDollarMangled, 1, false, "doubled"},
		{"wrong raw token", "not-the-token-0123456789abcdefghi", true, DiagNoMatch, 0, false, "out of sync"},
		{"too long for bcrypt", strings.Repeat("x", 80), true, DiagTooLong, 0, false, "72 bytes"},
		{"empty", "", true, DiagEmpty, 0, false, "no token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Diagnose(tt.value, creds, tt.acceptHash)
			if d.Kind != tt.kind || d.Line != tt.line || d.OK() != tt.ok {
				t.Fatalf("got kind %v line %d ok %v, want %v line %d ok %v (%s)", d.Kind, d.Line, d.OK(), tt.kind, tt.line, tt.ok, d.Sentence())
			}
			s := d.Sentence()
			if !strings.Contains(s, tt.says) {
				t.Errorf("sentence %q does not say %q", s, tt.says)
			}
			for _, secret := range []string{oldTok, newTok, oldHash, newHash, stranger} {
				if strings.Contains(s, secret) {
					t.Errorf("sentence reveals a secret: %q", s)
				}
			}
			if tt.value != "" && len(tt.value) >= 8 && strings.Contains(s, tt.value) {
				t.Errorf("sentence reveals the value: %q", s)
			}
		})
	}
}

func TestDiagnoseSeedVector(t *testing.T) {
	d := Diagnose(vectorToken, Credentials{Hashes: []string{vectorHash}}, true)
	if d.Kind != DiagRawMatch || d.Line != 1 {
		t.Fatalf("seed token: %v %s", d.Kind, d.Sentence())
	}
}

func TestDiagnoseFileReportsUnreadableAndMalformedFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.token")
	h := cheapHash(t, "tok-0123456789")
	if err := os.WriteFile(good, []byte(h+"\nalice\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rawInFile := filepath.Join(dir, "raw.token")
	if err := os.WriteFile(rawInFile, []byte("tok-0123456789\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		kind DiagnosisKind
		says string
	}{
		{"good file", good, DiagRawMatch, "matches hash 1 of " + good},
		{"missing file", filepath.Join(dir, "nope.token"), DiagFileProblem, "does not exist"},
		{"directory", dir, DiagFileProblem, "is a directory: point the path at the hash file inside it"},
		{"raw token in the hash file", rawInFile, DiagFileProblem, "raw token or password, not a bcrypt hash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := DiagnoseFile(tt.path, "tok-0123456789", true)
			if d.Kind != tt.kind {
				t.Fatalf("kind %v, want %v: %s", d.Kind, tt.kind, d.Sentence())
			}
			if s := d.Sentence(); !strings.Contains(s, tt.says) || strings.Contains(s, "tok-0123456789") {
				t.Errorf("sentence %q: want it to say %q and not reveal the token", s, tt.says)
			}
		})
	}
}
