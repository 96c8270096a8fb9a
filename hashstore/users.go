package hashstore

import (
	"fmt"
	"strings"
)

// MaxUserNameLen bounds a user name: long enough for an e-mail-like local
// part or "firstname.lastname", short enough for a log field and a metric
// label.
const MaxUserNameLen = 64

// The names a credential file may not give a user: the gateway calls the
// bare-line user and every guest by them (middleware.UserDefault and
// middleware.UserGuest), so a named user called so would be mistaken for
// either in logs, metrics and ComfyUI's user registry. They are refused in
// any letter case for the same reason.
var reservedUserNames = []string{"default", "guest"}

// ValidUserName returns nil when name may name a user in the credential
// file: 1 to MaxUserNameLen characters of [A-Za-z0-9_.-], and not a
// reserved name. Otherwise it returns one sentence saying what is wrong. The
// sentence does not repeat the name (the caller knows it, and a line that
// fails here may hold a secret), except for a reserved name, which is a
// fixed word.
func ValidUserName(name string) error {
	const rule = "a user name is 1 to 64 characters of A-Z, a-z, 0-9, `_`, `.` and `-`"
	switch {
	case name == "":
		return fmt.Errorf("the user name is empty: %s", rule)
	case len(name) > MaxUserNameLen:
		return fmt.Errorf("the user name has %d characters: %s", len(name), rule)
	}
	for i := 0; i < len(name); i++ {
		if !userNameChar(name[i]) {
			return fmt.Errorf("the user name has %s at position %d: %s", describeByte(name[i]), i+1, rule)
		}
	}
	for _, r := range reservedUserNames {
		if strings.EqualFold(name, r) {
			return fmt.Errorf("the user name `%s` is reserved: the gateway calls the bare-hash-line user `default` and every guest `guest`; pick another name", r)
		}
	}
	return nil
}

func userNameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
}

// userNameShape reports whether s is made only of user-name characters,
// whatever its length: such a prefix before a `:` makes a line a user's line.
func userNameShape(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !userNameChar(s[i]) {
			return false
		}
	}
	return true
}

// describeByte names a character without printing control bytes raw.
func describeByte(c byte) string {
	switch {
	case c == ' ':
		return "a space"
	case c == '\t':
		return "a tab"
	case c < 0x20 || c == 0x7f:
		return fmt.Sprintf("the control character 0x%02x", c)
	case c >= 0x80:
		return "a non-ASCII character"
	}
	return fmt.Sprintf("the character %q", c)
}

// userIndex maps each user name ("" for the bare lines) to its lines'
// indexes into Credentials.Hashes, in file order.
type userIndex struct {
	lines map[string][]int
	names []string // distinct non-empty names in file order
}

func newUserIndex(c *Credentials) *userIndex {
	ix := &userIndex{lines: map[string][]int{}}
	for i := range c.Hashes {
		name := c.userOf(i)
		if _, seen := ix.lines[name]; !seen && name != "" {
			ix.names = append(ix.names, name)
		}
		ix.lines[name] = append(ix.lines[name], i)
	}
	return ix
}

// userOf is the name of hash i, "" for a bare line. Credentials built by
// hand (the COMFYUI_PASSWORD fallback, tests) may leave Users nil.
func (c *Credentials) userOf(i int) string {
	if i < len(c.Users) {
		return c.Users[i]
	}
	return ""
}

// UserLines returns the indexes into Creds.Hashes of the lines of user name,
// in file order; name "" gives the bare lines. It is nil for a name the
// snapshot does not hold. The slice is shared: do not modify it.
func (s *Snapshot) UserLines(name string) []int {
	if s.users != nil {
		return s.users.lines[name]
	}
	return newUserIndex(&s.Creds).lines[name]
}

// UserNames returns the distinct user names of the named lines in file
// order (the bare lines have no name and are not listed). The slice is
// shared: do not modify it.
func (s *Snapshot) UserNames() []string {
	if s.users != nil {
		return s.users.names
	}
	return newUserIndex(&s.Creds).names
}

// HasUser reports whether name is a user with at least one line.
func (s *Snapshot) HasUser(name string) bool {
	return name != "" && len(s.UserLines(name)) > 0
}

// UserLineCount is one user's number of lines, for Status and logs.
type UserLineCount struct {
	Name  string
	Lines int
}

// userCounts lists each user's line count in file order, and the number of
// bare lines.
func (s *Snapshot) userCounts() ([]UserLineCount, int) {
	var out []UserLineCount
	for _, n := range s.UserNames() {
		out = append(out, UserLineCount{Name: n, Lines: len(s.UserLines(n))})
	}
	return out, len(s.UserLines(""))
}

// describeUsers is the sentence part logs and Status use:
// "3 users (alice 2 lines, bob 1 line, carol 1 line), 1 bare line". Names
// are not secrets; lines are counted, never shown.
func describeUsers(users []UserLineCount, bare int) string {
	var b strings.Builder
	if len(users) > 0 {
		b.WriteString(plural(len(users), "user", "users"))
		b.WriteString(" (")
		for i, u := range users {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(u.Name + " " + plural(u.Lines, "line", "lines"))
		}
		b.WriteString("), ")
	} else {
		b.WriteString("no named users, ")
	}
	b.WriteString(plural(bare, "bare line", "bare lines"))
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// splitUserToken splits a presented token `name:secret` when name is a user
// of snap: then only that user's lines are checked, with secret. Any other
// token is checked whole against the bare lines (ok false).
func splitUserToken(snap *Snapshot, token string) (name, secret string, ok bool) {
	i := strings.IndexByte(token, ':')
	if i <= 0 || i > MaxUserNameLen {
		return "", token, false
	}
	if name := token[:i]; snap.HasUser(name) {
		return name, token[i+1:], true
	}
	return "", token, false
}
