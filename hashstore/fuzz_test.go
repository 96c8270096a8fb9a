package hashstore

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		vectorHash, vectorHash + "\nadmin\n", vectorToken, "", "# c\n",
		strings.ReplaceAll(vectorHash, "$", "$$"), vectorHash[1:], vectorHash[:55],
		"$2a$10$" + vectorHash[7:] + "\r\n$2y$31$" + vectorHash[7:] + "\n",
		// Named lines: htpasswd -B output, users with several lines mixed
		// with bare lines and a username line, and the refused shapes.
		"alice:$2y$05$" + vectorHash[7:] + "\n",
		"alice:" + vectorHash + "\nbob:" + vectorHash + "\n" + vectorHash + "\nalice:$2a$10$" + vectorHash[7:] + "\nadmin\n",
		"alice:hunter2\n" + vectorHash, "default:" + vectorHash, "Alice:" + vectorHash + "\nalice:" + vectorHash,
		" carol : " + vectorHash + " \r\nDr Who: teacher\n", "bob:" + vectorHash[:50], "bob:", ":" + vectorHash,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			msg := err.Error()
			for _, line := range strings.Split(string(data), "\n") {
				// The part after a `:` may be a user's password.
				_, secret, _ := strings.Cut(line, ":")
				for _, l := range []string{line, strings.TrimSpace(line), strings.TrimSpace(secret)} {
					if len(l) >= 20 && strings.Contains(msg, l) {
						t.Fatalf("message %q contains input line %q", msg, l)
					}
				}
			}
			return
		}
		if len(c.Hashes) == 0 {
			t.Fatalf("accepted with no hash: %+v", c)
		}
		if len(c.Users) != len(c.Hashes) {
			t.Fatalf("%d users for %d hashes", len(c.Users), len(c.Hashes))
		}
		// Every accepted hash comes from one line of the input, bare or
		// after its user's name and `:`.
		kept := map[[2]string]bool{}
		for _, line := range strings.Split(string(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))), "\n") {
			line = strings.TrimSpace(line)
			kept[[2]string{"", line}] = true
			if name, rest, ok := strings.Cut(line, ":"); ok {
				kept[[2]string{strings.TrimSpace(name), strings.TrimSpace(rest)}] = true
			}
		}
		folded := map[string]string{}
		for i, h := range c.Hashes {
			u := c.Users[i]
			if !kept[[2]string{u, h}] {
				t.Fatalf("hash %d of user %q is not a line of the input", i+1, u)
			}
			if u == "" {
				continue
			}
			if err := ValidUserName(u); err != nil {
				t.Fatalf("accepted user name %q: %v", u, err)
			}
			if other, ok := folded[strings.ToLower(u)]; ok && other != u {
				t.Fatalf("accepted users %q and %q, which differ only in case", other, u)
			}
			folded[strings.ToLower(u)] = u
		}
		// A username line never reads as a user's line (nor the reverse).
		if name, _, ok := strings.Cut(c.Username, ":"); ok && userNameShape(strings.TrimSpace(name)) {
			t.Fatalf("username line %q has a user name before its `:`", c.Username)
		}
		for _, h := range c.Hashes {
			if len(h) != 60 {
				t.Fatalf("accepted a %d-character hash", len(h))
			}
			if p := h[:4]; p != "$2a$" && p != "$2b$" && p != "$2y$" {
				t.Fatalf("accepted prefix %q", p)
			}
			cost, err := strconv.Atoi(h[4:6])
			if err != nil || cost < 4 || cost > 31 || h[6] != '$' {
				t.Fatalf("accepted cost field %q", h[4:7])
			}
		}
	})
}

// FuzzRouteToken: whatever a client sends as a token, it is either split
// into a user of the file and that user's secret (and nothing is lost or
// added), or checked whole against the bare lines; a name that is no user
// never selects any line.
func FuzzRouteToken(f *testing.F) {
	h := "$2b$10$" + vectorHash[7:]
	creds, err := Parse([]byte("alice:" + h + "\nbob:" + h + "\n" + h + "\nx:" + h + "\n"))
	if err != nil {
		f.Fatal(err)
	}
	snap := &Snapshot{Creds: creds, users: newUserIndex(&creds)}
	for _, s := range []string{
		"alice:secret", "bob:", ":x", "x:y:z", "zed:secret", "alice", "Alice:s", "alice :s", " alice:s",
		strings.Repeat("a", 64) + ":s", strings.Repeat("a", 65) + ":s", "alice:" + strings.Repeat("s", 200), vectorToken,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		user, secret := route(snap, token)
		if user == "" {
			if secret != token {
				t.Fatalf("an unnamed token was changed: %q -> %q", token, secret)
			}
			return
		}
		if user+":"+secret != token {
			t.Fatalf("%q split into %q and %q", token, user, secret)
		}
		if !snap.HasUser(user) || ValidUserName(user) != nil {
			t.Fatalf("routed to %q, not a user of the file", user)
		}
		for _, i := range snap.UserLines(user) {
			if creds.Users[i] != user {
				t.Fatalf("user %q got line %d of %q", user, i, creds.Users[i])
			}
		}
	})
}
