package hashstore

import (
	"fmt"
	"os"
	"strings"
)

// WriteInPlace replaces the content of the existing file at path while
// keeping the file itself (same inode, same mode and owner): it truncates and
// writes in one call, then fsyncs.
//
// Why in place: the hash file is often a single-file bind mount, and a
// container keeps the inode it was started with, so a rename over the file
// (the usual "atomic write") is never seen inside. The cost is a moment where
// a reader sees an empty or partial file; the gateway's Store re-reads after
// a settle delay and keeps the last good credentials meanwhile, so no request
// is refused because of it.
func WriteInPlace(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("opening %s to rewrite it: %w (is it writable by you? on the host, not inside the read-only container mount)", path, err)
	}
	if err := finishWrite(f, 0, data); err != nil {
		return fmt.Errorf("writing %s: %w; the file may now be partial: check it with `comfyui-auth token check`", path, err)
	}
	return nil
}

// WriteFileSynced writes data to the file at path opened with flag (os.O_*),
// gives it perm whatever its old mode or the umask, and fsyncs it before
// closing, so that once it returns nil a crash cannot leave the file empty.
func WriteFileSynced(path string, flag int, perm os.FileMode, data []byte) error {
	f, err := os.OpenFile(path, flag, perm)
	if err != nil {
		return err
	}
	if err := finishWrite(f, perm, data); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// finishWrite writes data in one call, sets perm unless it is 0, syncs and
// closes f: the one write-and-fsync sequence behind every file the tools
// write.
func finishWrite(f *os.File, perm os.FileMode, data []byte) error {
	_, err := f.Write(data)
	if err == nil && perm != 0 {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// readForRewrite reads and validates the credential file before a rotation
// step changes it: rewriting a file that is already broken would hide the
// original problem.
func readForRewrite(path string) ([]byte, Credentials, error) {
	data, perr := readCredentialFile(path)
	if perr != nil {
		return nil, Credentials{}, perr
	}
	creds, err := Parse(data)
	if err != nil {
		return nil, Credentials{}, fmt.Errorf("hash file %s is not valid, so it is left untouched: %w", path, err)
	}
	return data, creds, nil
}

// AppendHash adds hash as the last hash line of the credential file at path,
// in place, so the old and the new hash are both valid until RetireOld. The
// file keeps its comments, its username line and its mode.
func AppendHash(path, hash string) (Credentials, error) {
	if _, perr := checkHash(1, hash); perr != nil {
		return Credentials{}, fmt.Errorf("refusing to append to %s: the new hash is not valid: %w", path, perr)
	}
	data, creds, err := readForRewrite(path)
	if err != nil {
		return Credentials{}, err
	}
	for _, h := range creds.Hashes {
		if h == hash {
			return Credentials{}, fmt.Errorf("hash file %s already holds this hash (fingerprint %s): nothing to append", path, Fingerprint(hash))
		}
	}
	out := make([]byte, 0, len(data)+len(hash)+1)
	out = append(out, data...)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	out = append(out, hash...)
	out = append(out, '\n')
	next, err := Parse(out)
	if err != nil {
		return Credentials{}, fmt.Errorf("hash file %s would not be valid after appending, so it is left untouched: %w", path, err)
	}
	if err := WriteInPlace(path, out); err != nil {
		return Credentials{}, err
	}
	return next, nil
}

// RetireOld removes every hash line of the credential file at path except
// the last one (the newest, since AppendHash appends), in place. Comments,
// blank lines and the username line stay. It returns the fingerprints of the
// removed hashes; none when the file holds a single hash.
func RetireOld(path string) (removed []string, kept string, err error) {
	data, creds, err := readForRewrite(path)
	if err != nil {
		return nil, "", err
	}
	newest := creds.Hashes[len(creds.Hashes)-1]
	if len(creds.Hashes) == 1 {
		return nil, Fingerprint(newest), nil
	}
	lines := strings.SplitAfter(string(data), "\n")
	var b strings.Builder
	for _, raw := range lines {
		line := strings.TrimSpace(strings.TrimPrefix(raw, "\ufeff"))
		if line != "" && !strings.HasPrefix(line, "#") && hashCandidate(line) && line != newest {
			removed = append(removed, Fingerprint(line))
			continue
		}
		b.WriteString(raw)
	}
	out := []byte(b.String())
	next, err := Parse(out)
	if err != nil || len(next.Hashes) != 1 || next.Hashes[0] != newest {
		return nil, "", fmt.Errorf("hash file %s would not keep exactly its newest hash after retiring, so it is left untouched; edit it by hand (keep the last hash line)", path)
	}
	if err := WriteInPlace(path, out); err != nil {
		return nil, "", err
	}
	return removed, Fingerprint(newest), nil
}
