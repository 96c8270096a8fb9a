package hashstore

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestParseAcceptsTheLayoutsInTheWild(t *testing.T) {
	h2a := "$2a$10$" + vectorHash[7:]
	h2y := "$2y$11$" + vectorHash[7:]
	tests := []struct {
		name     string
		in       string
		hashes   []string
		username string
		warnings int
	}{
		{"bare hash, no newline", vectorHash, []string{vectorHash}, "", 0},
		{"bare hash, newline", vectorHash + "\n", []string{vectorHash}, "", 0},
		{"CRLF", vectorHash + "\r\n", []string{vectorHash}, "", 0},
		{"surrounding whitespace", "  \t" + vectorHash + "  \n\n", []string{vectorHash}, "", 0},
		{"UTF-8 BOM", "\xef\xbb\xbf" + vectorHash + "\n", []string{vectorHash}, "", 0},
		{"ComfyUI-Login PASSWORD", vectorHash + "\nadmin\n", []string{vectorHash}, "admin", 0},
		{"PASSWORD with CRLF", vectorHash + "\r\nadmin\r\n", []string{vectorHash}, "admin", 0},
		{"$2a$ and $2y$", h2a + "\n" + h2y + "\n", []string{h2a, h2y}, "", 0},
		{"rotation with comments and username",
			"# new one\n" + h2a + "\n\n# old one, remove after the 1st\n" + vectorHash + "\nadmin\n",
			[]string{h2a, vectorHash}, "admin", 0},
		{"username first", "admin\n" + vectorHash, []string{vectorHash}, "admin", 0},
		{"low cost warns", "$2b$04$" + vectorHash[7:], []string{"$2b$04$" + vectorHash[7:]}, "", 1},
		{"high cost warns", "$2b$15$" + vectorHash[7:], []string{"$2b$15$" + vectorHash[7:]}, "", 1},
		{"cost 31 is legal", "$2b$31$" + vectorHash[7:], []string{"$2b$31$" + vectorHash[7:]}, "", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !slices.Equal(c.Hashes, tt.hashes) || c.Username != tt.username || len(c.Warnings) != tt.warnings {
				t.Fatalf("got %+v", c)
			}
			for _, w := range c.Warnings {
				if strings.Contains(w, vectorHash[7:]) {
					t.Fatalf("warning leaks the hash: %s", w)
				}
			}
		})
	}
}

func TestParseRefusesWithOneActionableSentence(t *testing.T) {
	body := vectorHash[7:]
	tests := []struct {
		name   string
		in     string
		reason ParseReason
		line   int
		want   string // substring of the message
	}{
		{"empty", "", ReasonEmpty, 0, "credential file is empty"},
		{"only whitespace and comments", "\n  \n# hash goes here\n\r\n", ReasonEmpty, 0, "`comfyui-auth hash`"},
		{"too large", strings.Repeat("#", MaxFileBytes+1), ReasonTooLarge, 0, "is 65537 bytes, not a credential file"},
		{"truncated by compose", "$2b$12$" + body[:50], ReasonLength, 1, "was a `$` eaten by Docker Compose interpolation? Escape each `$` as `$$` in .env/YAML, or mount the file instead"},
		{"one character short", vectorHash[:59], ReasonLength, 1, "has 59 characters"},
		{"too long", vectorHash + "x", ReasonLength, 1, "bcrypt hashes have 60"},
		{"salt eaten, only prefix left", "$2b$12", ReasonLength, 1, "Docker Compose"},
		{"leading $ eaten", vectorHash[1:], ReasonDollar, 1, "was a `$` eaten by Docker Compose"},
		{"all $ eaten", strings.ReplaceAll(vectorHash, "$", ""), ReasonDollar, 1, "with a `$` missing"},
		{"doubled $$ in a mounted file", strings.ReplaceAll(vectorHash, "$", "$$"), ReasonDollar, 1, "belongs in .env/YAML only"},
		{"argon2", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", ReasonPrefix, 1, "is a `$argon2id$` hash, not bcrypt"},
		{"apr1 from htpasswd", "$apr1$GKODusU7$TQked1tW25DhbihdfmrCY0", ReasonPrefix, 1, "only bcrypt"},
		{"$2x$ variant", "$2x$12$" + body, ReasonPrefix, 1, "does not start with $2a$, $2b$ or $2y$"},
		{"cost not digits", "$2b$1a$" + body, ReasonCost, 1, "no two-digit cost"},
		{"cost too low", "$2b$03$" + body, ReasonCost, 1, "cost 3, outside 4..31"},
		{"cost too high", "$2b$32$" + body, ReasonCost, 1, "cost 32, outside 4..31"},
		{"quoted", `$2b$12$` + body[:52] + `"`, ReasonAlphabet, 1, "outside bcrypt's alphabet"},
		{"raw token", vectorToken + "\n", ReasonRawToken, 1, "line 1 looks like a raw token or password, not a bcrypt hash: the server needs the hash; generate it with `comfyui-auth hash`"},
		{"raw password", "hunter2", ReasonRawToken, 1, "raw token"},
		{"raw token after a comment", "# token\n" + vectorToken, ReasonRawToken, 2, "line 2"},
		{"long non-hash line", strings.Repeat("x", 300), ReasonNotHash, 1, "is not a bcrypt hash"},
		{"two non-hash lines", vectorHash + "\nadmin\n" + vectorToken, ReasonExtraLines, 3, "lines 2 and 3 are both not bcrypt hashes"},
		{"username and raw token, no hash", "admin\n" + vectorToken, ReasonExtraLines, 2, "at most one username line"},
		{"bad second hash", vectorHash + "\n$2b$12$short", ReasonLength, 2, "line 2 has 12 characters"},
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
			if strings.Count(msg, ". ") > 0 || strings.Contains(msg, "\n") {
				t.Errorf("message is not one sentence: %q", msg)
			}
			for _, line := range strings.Split(tt.in, "\n") {
				line = strings.TrimSpace(line)
				if len(line) >= 8 && strings.Contains(msg, line) {
					t.Errorf("message contains the input line %q: %q", line, msg)
				}
			}
		})
	}
}

// TestRawTokenLineMessageGivesNoFingerprintOrLength: a line that looks like
// a raw token may be a password; SHA-256's first 32 bits and the length would
// let anyone reading the message (the log, the start-up error) confirm a
// guessed password offline, so the message names the line number only.
func TestRawTokenLineMessageGivesNoFingerprintOrLength(t *testing.T) {
	for _, secret := range []string{vectorToken, "hunter2", "correct horse battery staple"} {
		_, err := Parse([]byte("# the hash belongs here\n" + secret + "\n"))
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Reason != ReasonRawToken || pe.Line != 2 {
			t.Fatalf("%d-character line: %v, want a raw-token ParseError on line 2", len(secret), err)
		}
		msg := err.Error()
		if strings.Contains(msg, Fingerprint(secret)) || strings.Contains(msg, fmt.Sprint(len(secret))) {
			t.Errorf("the message gives the fingerprint or length of a %d-character secret: %q", len(secret), msg)
		}
	}
}
