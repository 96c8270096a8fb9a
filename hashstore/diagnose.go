package hashstore

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// DiagnosisKind is which of the known credential mix-ups holds for one value.
// The deployment this gateway replaces lost days to exactly these: the raw
// token and the hash used in each other's place, two hash files out of sync,
// and hashes cut by Compose's `$` interpolation. Naming the case is what turns
// a bare 401 into something a person can fix.
type DiagnosisKind int

const (
	// DiagRawMatch: the value is a raw token that matches hash Diagnosis.Line.
	DiagRawMatch DiagnosisKind = iota
	// DiagHashItself: the value is one of the loaded hash strings; valid only
	// while hash tokens are accepted (ComfyUI-Login compatibility).
	DiagHashItself
	// DiagOtherHash: the value is a well-formed bcrypt hash, but not one of
	// the loaded ones (two hash files out of sync, or an old hash).
	DiagOtherHash
	// DiagDollarMangled: the value looks like a bcrypt hash whose `$` signs
	// were eaten (Compose or shell interpolation) or doubled (a `$$` escape
	// in a place that does not unescape).
	DiagDollarMangled
	// DiagNoMatch: a raw value that matches no loaded hash.
	DiagNoMatch
	// DiagTooLong: a raw value longer than bcrypt's 72-byte limit.
	DiagTooLong
	// DiagEmpty: there is no value to check.
	DiagEmpty
	// DiagFileProblem: the hash file cannot be read or is not valid, so
	// nothing can match.
	DiagFileProblem
)

// String names the kind for logs and test output.
func (k DiagnosisKind) String() string {
	switch k {
	case DiagRawMatch:
		return "raw-match"
	case DiagHashItself:
		return "hash-itself"
	case DiagOtherHash:
		return "other-hash"
	case DiagDollarMangled:
		return "dollar-mangled"
	case DiagNoMatch:
		return "no-match"
	case DiagTooLong:
		return "too-long"
	case DiagEmpty:
		return "empty"
	case DiagFileProblem:
		return "file-problem"
	}
	return fmt.Sprintf("DiagnosisKind(%d)", int(k))
}

// Diagnosis is the finding for one value against one set of credentials. It
// holds fingerprints only, never the value or a hash, so it can be logged.
type Diagnosis struct {
	Kind DiagnosisKind
	// Line is the 1-based position among the hashes that the value matched
	// (DiagRawMatch, DiagHashItself), or that a mangled hash seems to come
	// from (DiagDollarMangled, 0 when unknown).
	Line int
	// User is whose lines the value was checked against: the name in a
	// `name:secret` value that names a user of the file, or the owner of
	// the hash a DiagHashItself value is; "" for the bare lines.
	User string
	// Lines is how many lines the value was checked against (DiagRawMatch,
	// DiagNoMatch): the user's, or the bare ones.
	Lines int
	// UserNames are the file's user names, in file order (names are not
	// secrets; they make "which user?" answerable).
	UserNames []string
	// AcceptHash is whether the gateway takes the hash itself as a token.
	AcceptHash bool
	// ValueFingerprint is Fingerprint of the value checked.
	ValueFingerprint string
	// ValueLen is the value's length in bytes, a safe hint (60 = a hash,
	// 32 = a generated token).
	ValueLen int
	// HashFingerprints are Fingerprint of each loaded hash, in file order.
	HashFingerprints []string
	// Doubled is true for DiagDollarMangled when the `$` were doubled rather
	// than eaten.
	Doubled bool
	// Source names where the hashes came from (a path), for sentences.
	Source string
	// Err is the load problem for DiagFileProblem.
	Err error
}

// OK reports whether a gateway with these credentials lets the value in.
// A named user's hash is never a token (Store.MatchHash).
func (d Diagnosis) OK() bool {
	return d.Kind == DiagRawMatch || d.Kind == DiagHashItself && d.AcceptHash && d.User == ""
}

// Diagnose says which case holds for value against creds, the way the
// gateway reads it: `name:secret`, for a name that is a user of creds, is
// checked as secret against that user's lines; any other value, whole,
// against the bare lines. It runs bcrypt on every line checked (a quarter
// second each at cost 12), so it is for tools and the start-up check, never
// for the request path.
func Diagnose(value string, creds Credentials, acceptHash bool) Diagnosis {
	d := Diagnosis{AcceptHash: acceptHash, ValueLen: len(value)}
	for _, h := range creds.Hashes {
		d.HashFingerprints = append(d.HashFingerprints, Fingerprint(h))
	}
	snap := &Snapshot{Creds: creds}
	d.UserNames = snap.UserNames()
	if value == "" {
		d.Kind = DiagEmpty
		return d
	}
	d.ValueFingerprint = Fingerprint(value)
	user, secret := "", value
	if name, rest, ok := splitUserToken(snap, value); ok {
		user, secret = name, rest
	}
	for i, h := range creds.Hashes {
		if value == h || secret == h && creds.userOf(i) == user {
			d.Kind, d.Line, d.User = DiagHashItself, i+1, creds.userOf(i)
			return d
		}
	}
	d.User = user
	if hashCandidate(secret) {
		if _, perr := checkHash(1, secret); perr == nil {
			d.Kind = DiagOtherHash
			return d
		} else if perr.Reason == ReasonDollar || perr.Reason == ReasonLength {
			d.Kind = DiagDollarMangled
			d.Doubled = strings.Contains(secret, "$$")
			d.Line = mangledOrigin(secret, creds.Hashes)
			return d
		}
		// Another crypt scheme or bad characters: judge it as a raw value
		// below; a raw token may well start with `$`.
	}
	if len(secret) > MaxTokenBytes {
		d.Kind = DiagTooLong
		return d
	}
	lines := snap.UserLines(user)
	d.Lines = len(lines)
	for _, i := range lines {
		if bcrypt.CompareHashAndPassword([]byte(creds.Hashes[i]), []byte(secret)) == nil {
			d.Kind, d.Line = DiagRawMatch, i+1
			return d
		}
	}
	d.Kind = DiagNoMatch
	return d
}

// mangledOrigin returns the 1-based position of the hash that a damaged
// value seems to come from: undoing doubled `$` gives it back exactly, or it
// shares a long tail with it (interpolation eats from a `$` to the end of a
// variable name, so the end of the hash usually survives). 16 characters of
// bcrypt's checksum do not match by chance.
func mangledOrigin(value string, hashes []string) int {
	undoubled := strings.ReplaceAll(value, "$$", "$")
	for i, h := range hashes {
		if undoubled == h || commonSuffixLen(value, h) >= 16 {
			return i + 1
		}
	}
	return 0
}

func commonSuffixLen(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[len(a)-1-n] == b[len(b)-1-n] {
		n++
	}
	return n
}

// DiagnoseFile reads and parses the hash file at path, then diagnoses value
// against it. An unreadable or invalid file is DiagFileProblem, with the
// file's own actionable sentence in Err.
func DiagnoseFile(path, value string, acceptHash bool) Diagnosis {
	creds, err := ReadFile(path)
	if err != nil {
		return Diagnosis{Kind: DiagFileProblem, AcceptHash: acceptHash, ValueLen: len(value),
			ValueFingerprint: fingerprintOrEmpty(value), Source: path, Err: err}
	}
	d := Diagnose(value, creds, acceptHash)
	d.Source = path
	return d
}

func fingerprintOrEmpty(s string) string {
	if s == "" {
		return ""
	}
	return Fingerprint(s)
}

// ReadFile reads and parses the credential file at path, with the same
// sentences the gateway logs when it cannot load it.
func ReadFile(path string) (Credentials, error) {
	data, perr := readCredentialFile(path)
	if perr != nil {
		return Credentials{}, perr
	}
	creds, err := Parse(data)
	if err != nil {
		var perr *ParseError
		if errors.As(err, &perr) {
			return Credentials{}, &ParseError{Line: perr.Line, Reason: perr.Reason,
				Message: fmt.Sprintf("hash file %s: %s", path, perr.Message)}
		}
		return Credentials{}, fmt.Errorf("hash file %s: %w", path, err)
	}
	return creds, nil
}

// Sentence is the finding in one sentence a person can act on. It names
// fingerprints, never the value or a hash.
func (d Diagnosis) Sentence() string {
	hashes := "the hash file"
	if d.Source != "" {
		hashes = d.Source
	}
	fps := strings.Join(d.HashFingerprints, ", ")
	switch d.Kind {
	case DiagRawMatch:
		if d.User != "" {
			return fmt.Sprintf("the token (fingerprint %s) is user %s's: it matches hash %d of %s (fingerprint %s), and clients sending it whole as `Authorization: Bearer %s:<secret>` are let in as %s",
				d.ValueFingerprint, d.User, d.Line, hashes, d.HashFingerprints[d.Line-1], d.User, d.User)
		}
		return fmt.Sprintf("the raw token (fingerprint %s) matches hash %d of %s (fingerprint %s): clients sending it as `Authorization: Bearer <token>` are let in",
			d.ValueFingerprint, d.Line, hashes, d.HashFingerprints[d.Line-1])
	case DiagHashItself:
		if d.User != "" {
			return fmt.Sprintf("the value is user %s's hash (hash %d of %s, fingerprint %s), not a token: a user's hash never lets anyone in (the hash-as-token compatibility is for bare lines only); send `%s:<token>` with the raw token written when the hash was made",
				d.User, d.Line, hashes, d.HashFingerprints[d.Line-1], d.User)
		}
		if d.AcceptHash {
			return fmt.Sprintf("the value is hash %d of %s itself (fingerprint %s), not the raw token: it is let in only because ComfyUI-Login compatibility is on (COMFYUI_AUTH_ACCEPT_HASH_TOKEN=true); clients that can should send the raw token from .env.generated instead",
				d.Line, hashes, d.ValueFingerprint)
		}
		return fmt.Sprintf("the value is hash %d of %s itself (fingerprint %s), not the raw token, and hash tokens are refused (COMFYUI_AUTH_ACCEPT_HASH_TOKEN=false): send the raw token from .env.generated, or turn ComfyUI-Login compatibility on",
			d.Line, hashes, d.ValueFingerprint)
	case DiagOtherHash:
		return fmt.Sprintf("the value is a bcrypt hash (fingerprint %s), but not one in %s (fingerprints %s): two hash files are out of sync (login/PASSWORD versus .secrets/qwen-api-user.token?) or the hash is from before a rotation; send the raw token, or copy the hash from the file the server mounts",
			d.ValueFingerprint, hashes, fps)
	case DiagDollarMangled:
		from := ""
		if d.Line > 0 {
			from = fmt.Sprintf(" (it seems to be hash %d of %s, fingerprint %s, damaged)", d.Line, hashes, d.HashFingerprints[d.Line-1])
		}
		if d.Doubled {
			return fmt.Sprintf("the value (%d characters, fingerprint %s) looks like a bcrypt hash with each `$` doubled%s: `$$` is Compose's escape and is undone only inside compose.yaml and Compose's .env; in a shell, `docker run --env-file` or a script write single `$` and quote with single quotes",
				d.ValueLen, d.ValueFingerprint, from)
		}
		return fmt.Sprintf("the value (%d characters, fingerprint %s) looks like a bcrypt hash with `$` signs eaten by interpolation%s: in a Compose .env or YAML write each `$` as `$$`; in a shell quote it with single quotes ('$2b$12$...'); better, send the raw token, which never contains `$`",
			d.ValueLen, d.ValueFingerprint, from)
	case DiagNoMatch:
		if d.User != "" {
			return fmt.Sprintf("the secret after `%s:` (value fingerprint %s) matches none of user %s's %s in %s: the token is not that user's current one (revoked or rotated?); take it from the file written when the user's line was made, or make a new one with `comfyui-auth token rotate --user %s`",
				d.User, d.ValueFingerprint, d.User, plural(d.Lines, "line", "lines"), hashes, d.User)
		}
		if d.Lines == 0 {
			return fmt.Sprintf("the value (%d characters, fingerprint %s) does not start with the name of a user of %s (%s) followed by `:`, and the file has no bare hash line to check it against: send `NAME:TOKEN`",
				d.ValueLen, d.ValueFingerprint, hashes, strings.Join(d.UserNames, ", "))
		}
		if len(d.UserNames) > 0 {
			return fmt.Sprintf("the value (%d characters, fingerprint %s) matches none of the %s in %s: a user's token is sent as `NAME:TOKEN` (the file's users: %s); otherwise the token and the hash are out of sync",
				d.ValueLen, d.ValueFingerprint, plural(d.Lines, "bare hash line", "bare hash lines"), hashes, strings.Join(d.UserNames, ", "))
		}
		return fmt.Sprintf("the value (%d characters, fingerprint %s) matches none of the %d hash(es) in %s (fingerprints %s): the token and the hash are out of sync; take the token from the .env.generated written with this hash, or make a new pair with `comfyui-auth token generate --force`",
			d.ValueLen, d.ValueFingerprint, len(d.HashFingerprints), hashes, fps)
	case DiagTooLong:
		if d.User != "" {
			return fmt.Sprintf("the secret after `%s:` (value fingerprint %s) is longer than the 72 bytes bcrypt can check, so it can never match: was a whole line or file pasted? send `%s:` and the 32-character token",
				d.User, d.ValueFingerprint, d.User)
		}
		return fmt.Sprintf("the value (%d characters, fingerprint %s) is longer than the 72 bytes bcrypt can check, so it can never match: was a whole line or file pasted? send the 32-character token from .env.generated",
			d.ValueLen, d.ValueFingerprint)
	case DiagEmpty:
		return "there is no token to check: pass --token, or set QWEN_API_USER_TOKEN (the raw token from .env.generated)"
	case DiagFileProblem:
		if d.Err != nil {
			return d.Err.Error()
		}
		return hashes + " cannot be used: " + generateHint
	}
	return "unknown finding " + d.Kind.String()
}
