package server

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/comfyui-auth/comfyui-auth/middleware"
	"github.com/rs/zerolog"
)

// stateDir is the gateway's writable state directory (--state-dir): it keeps
// the users' session revocations, so a logout survives a restart, and the
// session key when neither SECRET_KEY nor --secret-key-file gives one.
// The directory is 0700 and its files 0600; every write is atomic (a
// temporary file, fsync, rename), so a crash leaves the old file or the new
// one, never half of one.
type stateDir struct {
	dir string
}

const (
	// revocationsFileName holds the users' revocation epoch and list.
	revocationsFileName = "sessions.json"
	// stateKeyFileName holds the session key the gateway generated.
	stateKeyFileName = "session.key"
	// revocationsFormat is the "format" field of sessions.json.
	revocationsFormat = 1
	// maxRevocationsFileBytes bounds what is read: a full list of
	// DefaultMaxRevoked entries takes about 500 KB.
	maxRevocationsFileBytes = 4 << 20
)

// openStateDir creates dir (0700) when missing and tightens a looser mode,
// since it may hold the session key.
func openStateDir(dir string, logger zerolog.Logger) (*stateDir, error) {
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("state directory %s is not a directory: point --state-dir (COMFYUI_AUTH_STATE_DIR) at a directory the gateway may write", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory %s cannot be created (%v): create it, writable by the gateway's user (uid %d), or unset --state-dir (COMFYUI_AUTH_STATE_DIR)", dir, unwrapPath(err), os.Geteuid())
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("state directory %s cannot be read (%v): make it readable by the gateway's user (uid %d)", dir, unwrapPath(err), os.Geteuid())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			logger.Warn().Str("state_dir", dir).Str("mode", fi.Mode().Perm().String()).
				Msg("the state directory is readable by other users and cannot be made 0700; its files stay 0600")
		}
	}
	return &stateDir{dir: dir}, nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (d *stateDir) path(name string) string { return filepath.Join(d.dir, name) }

// sessionKey reads the key the gateway keeps in the state directory,
// generating it at the first start.
func (d *stateDir) sessionKey() ([]byte, string, error) {
	return keyFile(d.path(stateKeyFileName), "unset --state-dir, or set SECRET_KEY")
}

// loadRevocations reads the users' revocations, dropping expired entries.
//
// A missing file gives a fresh state. A file that exists but cannot be read
// is an error: the gateway does not start, rather than let logged-out
// cookies back in. A file that is read but is not a valid list (damaged,
// from another version, over the bound) gives a fresh state too, with a new
// epoch, so every session issued before is ended, and a problem to log:
// failing safe costs users a login, never a logout.
func (d *stateDir) loadRevocations(now time.Time, bound int) (st middleware.RevocationState, problem string, err error) {
	p := d.path(revocationsFileName)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return middleware.NewRevocationState(), "", nil
	}
	if err != nil {
		return st, "", revocationsUnreadable(p, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRevocationsFileBytes+1))
	if err != nil {
		return st, "", revocationsUnreadable(p, err)
	}
	st, perr := parseRevocations(data, now, bound)
	if perr != nil {
		return middleware.NewRevocationState(), fmt.Sprintf("session state file %s is not valid (%v)", p, perr), nil
	}
	return st, "", nil
}

func revocationsUnreadable(p string, err error) error {
	return fmt.Errorf("session state file %s cannot be read (%v): make it readable by the gateway's user (uid %d); or delete it, which ends every session issued before (users log in again)", p, unwrapPath(err), os.Geteuid())
}

// saveRevocations replaces the users' revocations on disk.
func (d *stateDir) saveRevocations(st middleware.RevocationState) error {
	p := d.path(revocationsFileName)
	if err := writeFileAtomic(p, encodeRevocations(st)); err != nil {
		return fmt.Errorf("session state file %s cannot be written: %w: make %s writable by the gateway's user (uid %d) and leave space on its disk", p, err, d.dir, os.Geteuid())
	}
	return nil
}

// revocationsFile is the JSON form of sessions.json.
type revocationsFile struct {
	Format int `json:"format"`
	// Epoch is 16 hex digits.
	Epoch string `json:"epoch"`
	// Revoked maps a session ID (32 hex digits) to its expiry in Unix
	// seconds.
	Revoked map[string]int64 `json:"revoked"`
}

// encodeRevocations writes st as sessions.json, entries in ID order.
func encodeRevocations(st middleware.RevocationState) []byte {
	f := revocationsFile{Format: revocationsFormat, Revoked: make(map[string]int64, len(st.Revoked))}
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], st.Epoch)
	f.Epoch = hex.EncodeToString(e[:])
	for id, exp := range st.Revoked {
		f.Revoked[hex.EncodeToString(id[:])] = exp.Unix()
	}
	data, _ := json.Marshal(f) // a struct of strings and integers always encodes
	return append(data, '\n')
}

// parseRevocations reads sessions.json. Entries expired at now are
// dropped; more than bound live entries is an error (the list never grows
// past it).
func parseRevocations(data []byte, now time.Time, bound int) (middleware.RevocationState, error) {
	var st middleware.RevocationState
	if len(data) > maxRevocationsFileBytes {
		return st, fmt.Errorf("larger than %d bytes", maxRevocationsFileBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f revocationsFile
	if err := dec.Decode(&f); err != nil {
		return st, fmt.Errorf("not the expected JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return st, errors.New("trailing data after the JSON object")
	}
	if f.Format != revocationsFormat {
		return st, fmt.Errorf("format %d, this gateway reads format %d", f.Format, revocationsFormat)
	}
	epoch, ok := hexBytes(f.Epoch, 8)
	if !ok {
		return st, errors.New("the epoch is not 16 lower-case hex digits")
	}
	st.Epoch = binary.BigEndian.Uint64(epoch)
	st.Revoked = make(map[[16]byte]time.Time, min(len(f.Revoked), bound))
	for k, exp := range f.Revoked {
		b, ok := hexBytes(k, 16)
		if !ok {
			return st, errors.New("a session ID is not 32 lower-case hex digits")
		}
		if exp <= 0 {
			return st, errors.New("an expiry is not a positive Unix time")
		}
		t := time.Unix(exp, 0)
		if !now.Before(t) {
			continue
		}
		if len(st.Revoked) >= bound {
			return st, fmt.Errorf("more than %d unexpired revocations", bound)
		}
		st.Revoked[[16]byte(b)] = t
	}
	return st, nil
}

// hexBytes decodes exactly n bytes of lower-case hex, so each value has one
// spelling.
func hexBytes(s string, n int) ([]byte, bool) {
	if len(s) != 2*n || strings.ToLower(s) != s {
		return nil, false
	}
	b, err := hex.DecodeString(s)
	return b, err == nil
}

// keyFile reads a session key file, or creates it with a random key when it
// does not exist, so restarts keep the key. orElse says what else the person
// can do when the file is unusable.
func keyFile(path, orElse string) ([]byte, string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		fresh := make([]byte, 32)
		if _, err := rand.Read(fresh); err != nil {
			return nil, "", fmt.Errorf("no randomness for a session key: %w", err)
		}
		data = []byte(hex.EncodeToString(fresh) + "\n")
		if werr := writeFileAtomic(path, data); werr != nil {
			return nil, "", fmt.Errorf("secret key file %s does not exist and cannot be created (%v): create it with `head -c 32 /dev/urandom | base64 > %s`, or %s", path, werr, path, orElse)
		}
		return []byte(strings.TrimSpace(string(data))), path + " (created)", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("cannot read secret key file %s: %w (check its permissions, or %s)", path, err, orElse)
	}
	k := strings.TrimSpace(string(data))
	if len(k) < 16 {
		return nil, "", fmt.Errorf("secret key file %s holds %d characters; put at least 32 random ones in it, for example `head -c 32 /dev/urandom | base64 > %s`", path, len(k), path)
	}
	return []byte(k), path, nil
}

// writeFileAtomic replaces path with data (mode 0600): a temporary file in
// the same directory, fsynced, renamed over path, then the directory
// fsynced, so a crash leaves the old content or the new, never a mix.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp") // mode 0600
	if err != nil {
		return unwrapPath(err)
	}
	name := tmp.Name()
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(name, path)
	}
	if err != nil {
		os.Remove(name)
		return unwrapPath(err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // best effort: not every filesystem syncs directories
		d.Close()
	}
	return nil
}
