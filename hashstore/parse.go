package hashstore

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// ParseReason classifies why a credential file was refused, so a diagnosis
// tool can pick its advice without matching on message text.
type ParseReason string

// The reasons Parse and the Store report.
const (
	ReasonEmpty      ParseReason = "empty"       // nothing but blank lines and comments
	ReasonTooLarge   ParseReason = "too-large"   // over MaxFileBytes
	ReasonMissing    ParseReason = "missing"     // the file does not exist (Store only)
	ReasonUnreadable ParseReason = "unreadable"  // open or read failed (Store only)
	ReasonLength     ParseReason = "length"      // hash-like line that is not 60 characters
	ReasonDollar     ParseReason = "dollar"      // `$` eaten or doubled by Compose escaping
	ReasonPrefix     ParseReason = "prefix"      // not $2a$, $2b$ or $2y$
	ReasonCost       ParseReason = "cost"        // cost field malformed or outside 4..31
	ReasonAlphabet   ParseReason = "alphabet"    // characters outside bcrypt's base64
	ReasonRawToken   ParseReason = "raw-token"   // a raw token where the hash belongs
	ReasonNotHash    ParseReason = "not-hash"    // one long line that is not a hash
	ReasonExtraLines ParseReason = "extra-lines" // more than one non-hash line
	ReasonUserName   ParseReason = "user-name"   // a `name:hash` line with a name that is not allowed
)

// ParseError is a refused credential file. Its message is one sentence a
// person can act on; it never contains the secret, only a Fingerprint.
type ParseError struct {
	// Line is the 1-based physical line of the file at fault, 0 when the
	// problem is the whole file.
	Line   int
	Reason ParseReason
	// Message is the actionable sentence returned by Error.
	Message string
}

func (e *ParseError) Error() string { return e.Message }

// Cost bounds. bcrypt itself refuses costs outside 4..31; below 10 a leaked
// hash is cheap to brute-force, above 14 each raw-token check takes seconds of
// CPU, which turns the worker pool into a denial-of-service lever.
const (
	minCost      = 4
	maxCost      = 31
	warnLowCost  = 10
	warnHighCost = 14
	hashLen      = 60
	// rawTokenMaxLen: a single non-hash line up to this long is most likely
	// a raw token or password pasted where the hash belongs.
	rawTokenMaxLen = 200
)

const composeHint = "was a `$` eaten by Docker Compose interpolation? Escape each `$` as `$$` in .env/YAML, or mount the file instead"

const generateHint = "generate it with `comfyui-auth hash`"

// Parse reads a credential file's bytes. It accepts bare bcrypt hash lines,
// ComfyUI-Login's PASSWORD layout (hash, then username), several hash lines
// for rotation, and htpasswd-style `name:<bcrypt hash>` lines (what
// `htpasswd -B` writes), mixed in any order, with at most one non-hash
// (username) line anywhere. Blank lines, `#` comments, CRLF, surrounding
// whitespace and a UTF-8 BOM are ignored because editors and `echo` add them
// without the user noticing.
//
// A line that is not a hash and has a `:` whose prefix is made only of
// user-name characters ([A-Za-z0-9_.-]) is a user's line, never the username
// line: `alice:$2y$...` names alice's hash, and `alice:hunter2` is refused
// as a password where the hash belongs. So a ComfyUI-Login username line may
// hold a `:` only after a character outside that set ("Dr Who: admin" is a
// username line, "admin:teacher" is not). Names are case-sensitive, but two
// names that differ only in case are refused, as are `default` and `guest`.
func Parse(data []byte) (Credentials, error) {
	if len(data) > MaxFileBytes {
		return Credentials{}, &ParseError{Reason: ReasonTooLarge,
			Message: fmt.Sprintf("file is %d bytes, not a credential file (a credential file holds a few 60-character bcrypt hashes)", len(data))}
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))

	var (
		creds     Credentials
		others    []int // physical line numbers of non-hash lines
		otherText []string
		lines     []string // every kept line, for the leak guard
		// folded maps each user name in lower case to its first spelling
		// and line, to refuse names that differ only in case.
		folded = map[string]namedAt{}
	)
	for i, raw := range strings.Split(string(data), "\n") {
		n := i + 1
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		lines = append(lines, line)
		name, hash := "", line
		if !hashCandidate(line) {
			var (
				named bool
				perr  *ParseError
			)
			name, hash, named, perr = userLine(n, line)
			if perr != nil {
				return Credentials{}, guard(perr, lines)
			}
			if !named {
				others = append(others, n)
				otherText = append(otherText, line)
				continue
			}
			lower := strings.ToLower(name)
			if first, ok := folded[lower]; ok && first.name != name {
				return Credentials{}, guard(&ParseError{Line: n, Reason: ReasonUserName, Message: fmt.Sprintf(
					"lines %d and %d name users `%s` and `%s`, which differ only in case: ComfyUI and people would take them for one user; spell the name the same way on every line of that user",
					first.line, n, first.name, name)}, lines)
			} else if !ok {
				folded[lower] = namedAt{name: name, line: n}
			}
		}
		cost, perr := checkHash(n, hash)
		if perr != nil {
			if name != "" {
				perr = forUser(perr, n, name)
			}
			return Credentials{}, guard(perr, lines)
		}
		creds.Hashes = append(creds.Hashes, hash)
		creds.Users = append(creds.Users, name)
		hn := len(creds.Hashes)
		what, regen := fmt.Sprintf("hash %d (line %d, fingerprint %s)", hn, n, Fingerprint(hash)), "`comfyui-auth hash`"
		if name != "" {
			what = fmt.Sprintf("hash %d (line %d, user %s, fingerprint %s)", hn, n, name, Fingerprint(hash))
			regen = fmt.Sprintf("`comfyui-auth token rotate --user %s` or `htpasswd -B -C 12`", name)
		}
		switch {
		case cost < warnLowCost:
			creds.Warnings = append(creds.Warnings, fmt.Sprintf(
				"%s has bcrypt cost %d: below %d a leaked hash is cheap to brute-force; regenerate it with %s",
				what, cost, warnLowCost, regen))
		case cost > warnHighCost:
			creds.Warnings = append(creds.Warnings, fmt.Sprintf(
				"%s has bcrypt cost %d: each raw-token check costs seconds of CPU; regenerate it at cost 10-12 with %s",
				what, cost, regen))
		}
	}

	switch {
	case len(lines) == 0:
		return Credentials{}, &ParseError{Reason: ReasonEmpty,
			Message: "credential file is empty: write a bcrypt hash into it (" + generateHint + ", or create token and hash with `comfyui-auth token generate`)"}
	case len(creds.Hashes) == 0 && len(others) == 1:
		// No fingerprint and no length here: the line may be a password,
		// and SHA-256's first 32 bits plus the length are enough to confirm
		// a guessed password offline. The sentence names the line only.
		n, line := others[0], otherText[0]
		if len(line) <= rawTokenMaxLen {
			return Credentials{}, guard(&ParseError{Line: n, Reason: ReasonRawToken, Message: fmt.Sprintf(
				"line %d looks like a raw token or password, not a bcrypt hash: the server needs the hash; %s",
				n, generateHint)}, lines)
		}
		return Credentials{}, guard(&ParseError{Line: n, Reason: ReasonNotHash, Message: fmt.Sprintf(
			"line %d (over %d characters) is not a bcrypt hash: the file must hold a 60-character `$2b$...` hash; %s",
			n, rawTokenMaxLen, generateHint)}, lines)
	case len(others) > 1:
		return Credentials{}, guard(&ParseError{Line: others[1], Reason: ReasonExtraLines, Message: fmt.Sprintf(
			"lines %d and %d are both not bcrypt hashes: the file holds hash lines and at most one username line; remove the extra line or %s",
			others[0], others[1], generateHint)}, lines)
	}
	if len(others) == 1 {
		creds.Username, creds.UsernameLine = otherText[0], others[0]
	}
	return creds, nil
}

type namedAt struct {
	name string
	line int
}

// userLine reads a non-hash line as a user's line `name:hash` (named true,
// hash still to be checked), as the username line (named false), or refuses
// it. The refusals never repeat what follows the `:`, and repeat the name
// only once it is known to be a valid one: on a line such as `s3cr3t:x` the
// "name" is part of a secret.
func userLine(n int, line string) (name, hash string, named bool, perr *ParseError) {
	i := strings.IndexByte(line, ':')
	if i < 0 {
		return "", "", false, nil
	}
	name, rest := strings.TrimSpace(line[:i]), strings.TrimSpace(line[i+1:])
	switch {
	case hashCandidate(rest):
		if err := ValidUserName(name); err != nil {
			return "", "", false, &ParseError{Line: n, Reason: ReasonUserName, Message: fmt.Sprintf(
				"line %d holds a hash after a `:` but the name before it is not valid (%v)", n, err)}
		}
		return name, rest, true, nil
	case !userNameShape(name):
		return "", "", false, nil
	case rest == "":
		return "", "", false, &ParseError{Line: n, Reason: ReasonNotHash, Message: fmt.Sprintf(
			"line %d has a name and a `:` but nothing after it: put that user's bcrypt hash after the `:` (`htpasswd -nB NAME` prints such a line) or remove the line", n)}
	case strings.HasPrefix(rest, "{SHA}"):
		return "", "", false, &ParseError{Line: n, Reason: ReasonPrefix, Message: fmt.Sprintf(
			"line %d holds a SHA-1 hash (`htpasswd -s`), not bcrypt: the server accepts only bcrypt; write the line with `htpasswd -B`", n)}
	}
	// No fingerprint, no length and no name, as for a raw token alone.
	return "", "", false, &ParseError{Line: n, Reason: ReasonRawToken, Message: fmt.Sprintf(
		"line %d looks like `name:password`, a user's raw token or password where the bcrypt hash belongs (or a non-bcrypt htpasswd hash): the server needs `name:<bcrypt hash>`; write it with `htpasswd -nB NAME` or `comfyui-auth token generate --user NAME`, and consider that password exposed to whoever could read the file", n)}
}

// forUser names the user in a hash line's refusal: "line 3 (user alice) has
// 59 characters...". The name was validated, so it is not a secret.
func forUser(perr *ParseError, n int, name string) *ParseError {
	at := fmt.Sprintf("line %d", n)
	msg := strings.Replace(perr.Message, at, fmt.Sprintf("%s (user %s)", at, name), 1)
	if perr.Reason == ReasonPrefix {
		msg += "; with htpasswd, pass -B for bcrypt"
	}
	return &ParseError{Line: perr.Line, Reason: perr.Reason, Message: msg}
}

// hashCandidate reports whether a line should be judged as a hash: anything
// starting with `$`, and anything that looks like a bcrypt hash whose `$`
// signs were removed (the Compose interpolation accident).
func hashCandidate(s string) bool {
	if strings.HasPrefix(s, "$2") || strings.HasPrefix(s, "$$") {
		return true
	}
	// "$argon2id$...", "$apr1$...", "$6$...": some other crypt scheme. A
	// lone leading `$` without a scheme after it is more likely a raw token.
	if strings.HasPrefix(s, "$") {
		if i := strings.IndexByte(s[1:], '$'); i > 0 && i <= 10 {
			return true
		}
	}
	return dollarEaten(s)
}

// dollarEaten recognises "2b$12$...", "2b12...", and 52-59 character lines
// made only of bcrypt's alphabet and `$`.
func dollarEaten(s string) bool {
	if !onlyAlphabet(s, true) {
		return false
	}
	t := strings.ReplaceAll(s, "$", "")
	if len(t) >= 40 && len(t) <= hashLen &&
		t[0] == '2' && strings.IndexByte("aby", t[1]) >= 0 && isDigit(t[2]) && isDigit(t[3]) {
		return true
	}
	return len(s) >= 52 && len(s) <= 59 && strings.Contains(s, "$")
}

// checkHash validates one hash candidate and returns its cost.
func checkHash(n int, s string) (int, *ParseError) {
	fp := Fingerprint(s)
	fail := func(r ParseReason, format string, args ...any) (int, *ParseError) {
		return 0, &ParseError{Line: n, Reason: r, Message: fmt.Sprintf(format, args...)}
	}
	switch {
	case strings.HasPrefix(s, "$$"):
		return fail(ReasonDollar, "line %d (fingerprint %s) starts with `$$`: that escaping belongs in .env/YAML only; a mounted file must hold the hash as printed by `comfyui-auth hash`, with single `$`", n, fp)
	case !strings.HasPrefix(s, "$"):
		return fail(ReasonDollar, "line %d (%d characters, fingerprint %s) looks like a bcrypt hash with a `$` missing: %s", n, len(s), fp, composeHint)
	case !strings.HasPrefix(s, "$2"):
		return fail(ReasonPrefix, "line %d (fingerprint %s) is a %s hash, not bcrypt: the server accepts only bcrypt ($2a$, $2b$, $2y$); %s", n, fp, schemeName(s), generateHint)
	case len(s) != hashLen:
		return fail(ReasonLength, "line %d has %d characters (fingerprint %s) but bcrypt hashes have %d: %s", n, len(s), fp, hashLen, composeHint)
	}
	if p := s[:4]; p != "$2a$" && p != "$2b$" && p != "$2y$" {
		return fail(ReasonPrefix, "line %d (fingerprint %s) does not start with $2a$, $2b$ or $2y$: the server accepts only those bcrypt variants; %s", n, fp, generateHint)
	}
	if !isDigit(s[4]) || !isDigit(s[5]) || s[6] != '$' {
		return fail(ReasonCost, "line %d (fingerprint %s) has no two-digit cost after the prefix: the hash is damaged; %s", n, fp, generateHint)
	}
	cost, _ := strconv.Atoi(s[4:6])
	if cost < minCost || cost > maxCost {
		return fail(ReasonCost, "line %d (fingerprint %s) has bcrypt cost %d, outside %d..%d: no bcrypt library can check it; %s", n, fp, cost, minCost, maxCost, generateHint)
	}
	if !onlyAlphabet(s[7:], false) {
		return fail(ReasonAlphabet, "line %d (fingerprint %s) has characters outside bcrypt's alphabet after the cost: was it copied with quotes or escapes? %s", n, fp, generateHint)
	}
	return cost, nil
}

// schemeName names a non-bcrypt crypt scheme ("$argon2id$" → "argon2id")
// only when the identifier is short and plain, so no secret can leak.
func schemeName(s string) string {
	rest := s[1:]
	i := strings.IndexByte(rest, '$')
	if i <= 0 || i > 10 {
		return "non-bcrypt"
	}
	id := rest[:i]
	for j := 0; j < len(id); j++ {
		c := id[j]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return "non-bcrypt"
		}
	}
	return "`$" + id + "$`"
}

// guard is the last line of defence for "never print the secret": should a
// message ever contain one of the file's lines verbatim, it is replaced by a
// sentence built only from the line number.
func guard(e *ParseError, lines []string) *ParseError {
	for _, l := range lines {
		if len(l) >= 8 && strings.Contains(e.Message, l) {
			e.Message = fmt.Sprintf("line %d of the credential file is not valid: %s", e.Line, generateHint)
			for _, l2 := range lines {
				if len(l2) >= 8 && strings.Contains(e.Message, l2) {
					e.Message = "the credential file is not valid: " + generateHint
					break
				}
			}
			break
		}
	}
	return e
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// onlyAlphabet reports whether s uses only bcrypt's base64 alphabet
// ("./A-Za-z0-9"), plus `$` when dollar is true.
func onlyAlphabet(s string, dollar bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '/':
		case c == '$' && dollar:
		default:
			return false
		}
	}
	return true
}
