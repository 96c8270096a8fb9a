package hashstore

import (
	"strings"
	"testing"
)

func TestDiagnoseReadsNamedTokensAsTheGatewayDoes(t *testing.T) {
	f := userFile{{"alice", "a-old"}, {"alice", "a-new"}, {"", "shared"}, {"bob", "b"}}
	creds := f.credentials(t)
	aliceHash, bareHash := creds.Hashes[1], creds.Hashes[2]
	noBare := userFile{{"alice", "a-new"}, {"bob", "b"}}.credentials(t)
	tests := []struct {
		name  string
		creds Credentials
		value string
		kind  DiagnosisKind
		line  int
		user  string
		ok    bool
		says  string
	}{
		{"a user's token", creds, "alice:a-new", DiagRawMatch, 2, "alice", true, "let in as alice"},
		{"a user's wrong token", creds, "alice:nope", DiagNoMatch, 0, "alice", false, "none of user alice's 2 lines"},
		{"another user's token under this name", creds, "bob:a-new", DiagNoMatch, 0, "bob", false, "none of user bob's 1 line"},
		{"a user's secret without the name", creds, "a-new", DiagNoMatch, 0, "", false, "`NAME:TOKEN` (the file's users: alice, bob)"},
		{"the bare token", creds, "shared", DiagRawMatch, 3, "", true, "matches hash 3"},
		{"a user's hash as a token", creds, aliceHash, DiagHashItself, 2, "alice", false, "never lets anyone in"},
		{"a user's hash after the name", creds, "alice:" + aliceHash, DiagHashItself, 2, "alice", false, "bare lines only"},
		{"the bare hash as a token", creds, bareHash, DiagHashItself, 3, "", true, "compatibility is on"},
		{"a secret too long for bcrypt", creds, "bob:" + strings.Repeat("x", 73), DiagTooLong, 0, "bob", false, "after `bob:`"},
		{"unknown user, no bare lines", noBare, "zed:x", DiagNoMatch, 0, "", false, "no bare hash line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Diagnose(tt.value, tt.creds, true)
			if d.Kind != tt.kind || d.Line != tt.line || d.User != tt.user || d.OK() != tt.ok {
				t.Fatalf("got %v line %d user %q ok %v, want %v line %d user %q ok %v (%s)",
					d.Kind, d.Line, d.User, d.OK(), tt.kind, tt.line, tt.user, tt.ok, d.Sentence())
			}
			s := d.Sentence()
			if !strings.Contains(s, tt.says) {
				t.Errorf("sentence %q does not say %q", s, tt.says)
			}
			_, secret, _ := strings.Cut(tt.value, ":")
			for _, leak := range append([]string{tt.value, secret}, tt.creds.Hashes...) {
				if len(leak) >= 5 && strings.Contains(s, leak) {
					t.Errorf("sentence reveals %q: %s", leak, s)
				}
			}
		})
	}
}
