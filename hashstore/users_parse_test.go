package hashstore

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// htpasswdLine is what `htpasswd -nbB NAME PASSWORD` prints: `$2y$`, cost 5.
func htpasswdLine(name string) string { return name + ":$2y$05$" + vectorHash[7:] }

func TestParseReadsNamedLines(t *testing.T) {
	h05 := "$2y$05$" + vectorHash[7:]
	h2a := "$2a$10$" + vectorHash[7:]
	tests := []struct {
		name     string
		in       string
		hashes   []string
		users    []string
		username string
		warnings int
	}{
		{"htpasswd -B output as it is", htpasswdLine("alice") + "\n", []string{h05}, []string{"alice"}, "", 1},
		{"several users, one with two lines",
			htpasswdLine("alice") + "\n" + htpasswdLine("bob") + "\nalice:" + h2a + "\n",
			[]string{h05, h05, h2a}, []string{"alice", "bob", "alice"}, "", 2},
		{"named and bare lines mixed, username line kept",
			"# class of 2026\nalice:" + h2a + "\n" + vectorHash + "\nadmin\nbob:" + h2a + "\r\n",
			[]string{h2a, vectorHash, h2a}, []string{"alice", "", "bob"}, "admin", 0},
		{"every name character", "A.b_c-9:" + h2a, []string{h2a}, []string{"A.b_c-9"}, "", 0},
		{"64-character name", strings.Repeat("n", 64) + ":" + h2a, []string{h2a}, []string{strings.Repeat("n", 64)}, "", 0},
		{"whitespace around the colon", "  carol : " + h2a + "  ", []string{h2a}, []string{"carol"}, "", 0},
		{"username line with a colon after a space", "Dr Who: the teacher\n" + vectorHash, []string{vectorHash}, []string{""}, "Dr Who: the teacher", 0},
		{"names that differ from reserved ones", "defaults:" + h2a + "\nguest2:" + h2a, []string{h2a, h2a}, []string{"defaults", "guest2"}, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !slices.Equal(c.Hashes, tt.hashes) || !slices.Equal(c.Users, tt.users) || c.Username != tt.username || len(c.Warnings) != tt.warnings {
				t.Fatalf("got hashes %q users %q username %q warnings %q", c.Hashes, c.Users, c.Username, c.Warnings)
			}
			for i, w := range c.Warnings {
				if strings.Contains(w, vectorHash[7:]) {
					t.Fatalf("warning leaks the hash: %s", w)
				}
				if u := c.Users[0]; u != "" && i == 0 && !strings.Contains(w, "user "+u) {
					t.Errorf("warning does not name the user %s: %s", u, w)
				}
			}
		})
	}
}

// TestHtpasswdCostFiveGetsTheLowCostWarning: htpasswd -B defaults to cost 5,
// which a leaked file gives up quickly; the file loads, with a warning that
// names the user and says how to regenerate.
func TestHtpasswdCostFiveGetsTheLowCostWarning(t *testing.T) {
	c, err := Parse([]byte(htpasswdLine("alice")))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "user alice") ||
		!strings.Contains(c.Warnings[0], "cost 5") || !strings.Contains(c.Warnings[0], "token rotate --user alice") {
		t.Fatalf("warnings %q", c.Warnings)
	}
}

func TestParseRefusesBadNamedLines(t *testing.T) {
	body := vectorHash[7:]
	h := "$2b$10$" + body
	tests := []struct {
		name   string
		in     string
		reason ParseReason
		line   int
		want   string
	}{
		{"reserved default", "default:" + h, ReasonUserName, 1, "`default` is reserved"},
		{"reserved guest in another case", vectorHash + "\nGuest:" + h, ReasonUserName, 2, "`guest` is reserved"},
		{"name too long", strings.Repeat("n", 65) + ":" + h, ReasonUserName, 1, "has 65 characters"},
		{"space in the name", "al ice:" + h, ReasonUserName, 1, "a space at position 3"},
		{"non-ASCII name", "zoë:" + h, ReasonUserName, 1, "a non-ASCII character"},
		{"empty name", ":" + h, ReasonUserName, 1, "the user name is empty"},
		{"names differing in case", "alice:" + h + "\nAlice:" + h, ReasonUserName, 2, "lines 1 and 2 name users `alice` and `Alice`"},
		{"short hash", "alice:" + h[:59], ReasonLength, 1, "line 1 (user alice) has 59 characters"},
		{"dollar eaten", "bob:" + strings.ReplaceAll(h, "$", ""), ReasonDollar, 1, "line 1 (user bob)"},
		{"apr1 from htpasswd without -B", "bob:$apr1$GKODusU7$TQked1tW25DhbihdfmrCY0", ReasonPrefix, 1, "pass -B"},
		{"sha from htpasswd -s", "bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", ReasonPrefix, 1, "htpasswd -B"},
		{"nothing after the colon", vectorHash + "\nalice:", ReasonNotHash, 2, "nothing after it"},
		{"name:password among hashes", vectorHash + "\nalice:correct-horse-battery", ReasonRawToken, 2, "line 2 looks like `name:password`"},
		{"name:token alone", "bob:" + vectorToken, ReasonRawToken, 1, "consider that password exposed"},
		{"bad hash after a named line", "alice:" + h + "\n$2b$12$short", ReasonLength, 2, "line 2 has 12 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("want *ParseError, got %v", err)
			}
			if pe.Reason != tt.reason || pe.Line != tt.line {
				t.Errorf("reason %q line %d, want %q line %d (%s)", pe.Reason, pe.Line, tt.reason, tt.line, pe)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("message %q does not contain %q", msg, tt.want)
			}
			if strings.Contains(msg, ". ") || strings.Contains(msg, "\n") {
				t.Errorf("message is not one sentence: %q", msg)
			}
			for _, line := range strings.Split(tt.in, "\n") {
				line = strings.TrimSpace(line)
				_, after, _ := strings.Cut(line, ":")
				for _, part := range []string{line, after, body} {
					if len(part) >= 8 && strings.Contains(msg, part) {
						t.Errorf("message contains %q from the input: %q", part, msg)
					}
				}
			}
		})
	}
}

// TestNamedPasswordLineGivesNoNameFingerprintOrLength: `name:password` is a
// secret pasted where the hash belongs; as for a raw token alone, the
// sentence names the line number only, and not the part before the `:`,
// which may be a piece of the secret.
func TestNamedPasswordLineGivesNoNameFingerprintOrLength(t *testing.T) {
	for _, line := range []string{"alice:hunter2", "bob:" + vectorToken, "s3cr3t:pa55word-with-colon:more"} {
		name, secret, _ := strings.Cut(line, ":")
		_, err := Parse([]byte(vectorHash + "\n" + line + "\n"))
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Reason != ReasonRawToken || pe.Line != 2 {
			t.Fatalf("%d-character line: %v, want a raw-token ParseError on line 2", len(line), err)
		}
		msg := err.Error()
		for _, leak := range []string{name, secret, Fingerprint(secret), Fingerprint(line), fmt.Sprint(len(secret)), fmt.Sprint(len(line))} {
			if strings.Contains(msg, leak) {
				t.Errorf("the message gives away %q: %q", leak, msg)
			}
		}
	}
}

func TestValidUserName(t *testing.T) {
	for _, ok := range []string{"a", "alice", "Bob.Smith", "st-01", "x_y", strings.Repeat("z", 64), "defaults", "guest-1"} {
		if err := ValidUserName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "default", "DEFAULT", "guest", "gUeSt", strings.Repeat("z", 65), "a b", "a:b", "a/b", "é", "a\x00b", "alice\n"} {
		err := ValidUserName(bad)
		if err == nil {
			t.Errorf("%q accepted", bad)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, ". ") || strings.Contains(msg, "\n") || strings.ContainsAny(msg, "\x00é") {
			t.Errorf("%q: not one clean sentence: %q", bad, msg)
		}
	}
}

func TestSnapshotUserLinesAndNames(t *testing.T) {
	h := "$2b$10$" + vectorHash[7:]
	c, err := Parse([]byte("alice:" + h + "\n" + vectorHash + "\nbob:" + h + "\nalice:" + h + "\n" + vectorHash + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	built := &Snapshot{Creds: c}
	indexed := &Snapshot{Creds: c, users: newUserIndex(&c)}
	for _, s := range []*Snapshot{built, indexed} {
		if got := s.UserNames(); !slices.Equal(got, []string{"alice", "bob"}) {
			t.Errorf("UserNames %q", got)
		}
		for name, want := range map[string][]int{"alice": {0, 3}, "bob": {2}, "": {1, 4}, "carol": nil} {
			if got := s.UserLines(name); !slices.Equal(got, want) {
				t.Errorf("UserLines(%q) = %v, want %v", name, got, want)
			}
		}
	}
	bare := &Snapshot{Creds: Credentials{Hashes: []string{vectorHash}}}
	if got := bare.UserLines(""); !slices.Equal(got, []int{0}) || len(bare.UserNames()) != 0 {
		t.Errorf("hand-built credentials without Users: bare lines %v, names %q", got, bare.UserNames())
	}
}
