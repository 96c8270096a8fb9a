// Package hashstore owns the credential file: it parses it, watches it, reloads
// it, and verifies raw tokens against it through a bounded bcrypt worker pool.
// It knows nothing about HTTP.
package hashstore

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// MaxFileBytes caps how much of the credential file is read. A real file is
// under 1 KiB for one user (a few 60-character hashes and a username), and
// about 7 KiB for a class of 100 named users; anything larger is not a
// credential file.
const MaxFileBytes = 64 << 10

// MaxTokenBytes is bcrypt's input limit. bcrypt silently ignores bytes past
// 72, so a longer token is refused before any bcrypt work.
const MaxTokenBytes = 72

// Credentials is the parsed content of one credential file.
type Credentials struct {
	// Hashes are the bcrypt hashes in file order.
	Hashes []string
	// Users is parallel to Hashes: Users[i] is the name of hash i's line
	// (`name:$2y$...`), "" for a bare line. A token `name:secret` is
	// checked against name's lines only; any other token against the bare
	// lines only. Hand-built Credentials may leave it nil (all bare).
	Users []string
	// Username is the optional display name (ComfyUI-Login's line 2). It
	// is not vetted: show Store.DisplayName, never this, to a visitor.
	Username string
	// UsernameLine is the username's 1-based physical line, 0 when none.
	UsernameLine int
	// Warnings are non-fatal findings a person should read (low cost, ...).
	Warnings []string
}

// Snapshot is an immutable view of the credentials in force.
type Snapshot struct {
	Creds Credentials
	// Generation increases by one on every successful (re)load.
	Generation uint64
	// Fingerprints holds Fingerprint(hash) for each hash, for logs.
	Fingerprints []string
	// Source says where the credentials came from: the file path, or
	// "COMFYUI_PASSWORD" when hashed in memory.
	Source   string
	LoadedAt time.Time

	// users indexes Creds.Users; set by the Store, nil in a hand-built
	// Snapshot (the methods then scan).
	users *userIndex
}

// Status is what readiness and logs report about the store.
type Status struct {
	// Ready is true once a valid credential is loaded.
	Ready bool
	// Reason explains why Ready is false, or what is degraded (the file
	// became unreadable and the last good credentials are kept).
	Reason string
	// LastError is the newest load error, empty when the last load succeeded.
	LastError string
	// LastGood is when the credentials in force were loaded.
	LastGood time.Time
	// Generation of the credentials in force (0 when none); it counts the
	// successful loads.
	Generation uint64
	// Failures counts refused loads: each distinct missing, unreadable or
	// invalid content once, whether or not good credentials were kept.
	Failures uint64
	// Users lists the named users in force with their line counts, in file
	// order; BareLines counts the unnamed hash lines. Both are empty when
	// nothing is loaded.
	Users     []UserLineCount
	BareLines int
}

// Fingerprint returns the first 8 hex digits of SHA-256 of s: enough to tell
// two secrets apart in a log, useless for recovering them.
func Fingerprint(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}
