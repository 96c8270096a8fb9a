package hashstore

import (
	"fmt"

	"golang.org/x/crypto/bcrypt"
)

// displayName is a username that passed vetUsername, tied to the loaded
// state it was vetted for.
type displayName struct {
	l    *loaded
	name string
}

// DisplayName returns the username line of the credentials in force once it
// is known not to be a secret, else "". The login page is public, so it
// shows this, never Credentials.Username: a raw token or password pasted as
// the username line (a common mix-up with ComfyUI-Login's hash-then-name
// layout) must not be printed to every visitor. Right after a reload the
// name is "" until vetting (one bcrypt check per hash) has finished.
func (s *Store) DisplayName() string {
	l, d := s.cur.Load(), s.display.Load()
	if l == nil || d == nil || d.l != l {
		return ""
	}
	return d.name
}

// vetUsername publishes l's username for DisplayName unless it bcrypt-matches
// one of l's hashes, in which case it is the secret itself: it is logged as
// an error (by line number and hash fingerprint only) and never shown.
func (s *Store) vetUsername(l *loaded) {
	creds := l.snap.Creds
	if n := usernameMatchesHash(creds); n > 0 {
		where := "the username"
		if creds.UsernameLine > 0 {
			where = fmt.Sprintf("line %d", creds.UsernameLine)
		}
		of := fmt.Sprintf("hash %d", n)
		if u := creds.userOf(n - 1); u != "" {
			of = fmt.Sprintf("hash %d (user %s)", n, u)
		}
		s.log.Error().Str("source", l.snap.Source).Uint64("generation", l.snap.Generation).
			Str("hash_fingerprint", l.snap.Fingerprints[n-1]).
			Msgf("%s of the credential file is the raw token or password of %s, not a display name: it is never shown on the login page; "+
				"remove that line (the file holds hashes and, optionally, a name that is not the password), and consider the token exposed to whoever could read the file", where, of)
		return
	}
	s.displayMu.Lock()
	defer s.displayMu.Unlock()
	// A newer state may have been installed meanwhile; its own vetting
	// publishes its name.
	if s.cur.Load() == l {
		s.display.Store(&displayName{l: l, name: creds.Username})
	}
}

// usernameMatchesHash returns the 1-based position of the hash the username
// line matches as a password, 0 when none does. bcrypt cannot take more
// than MaxTokenBytes, so a longer line matches nothing.
func usernameMatchesHash(creds Credentials) int {
	if creds.Username == "" || len(creds.Username) > MaxTokenBytes {
		return 0
	}
	for i, h := range creds.Hashes {
		if bcrypt.CompareHashAndPassword([]byte(h), []byte(creds.Username)) == nil {
			return i + 1
		}
	}
	return 0
}
