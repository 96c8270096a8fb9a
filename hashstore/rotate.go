package hashstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
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

// RetireOld removes every bare hash line of the credential file at path
// except the last one (the newest, since AppendHash appends), in place.
// Named lines, comments, blank lines and the username line stay. It returns
// the fingerprints of the removed hashes; none when the file holds a single
// bare hash.
func RetireOld(path string) (removed []string, kept string, err error) {
	return RetireUserOld(path, "")
}

// UserHash is one named credential line, `Name:Hash`.
type UserHash struct{ Name, Hash string }

// NewFileHeader opens a credential file that AddUsers creates, so that a
// person who opens it knows what it is and that it is edited by a tool.
const NewFileHeader = "# comfyui-auth credentials: one `name:<bcrypt hash>` line per token; a name may have several lines.\n" +
	"# Edited in place by `comfyui-auth token generate|rotate|revoke --user NAME`.\n"

// newFileMode is the mode of a credential file AddUsers creates: the hashes
// are secrets to brute-force, so only their owner reads them.
const newFileMode = 0o600

// hashLineOwner classifies one physical line of a credential file: a named
// hash line gives its name and true, a bare hash line "" and true, anything
// else (blank, comment, username line) false. It is the editing tools' view
// of the file; every edit is checked against Parse's view afterwards, so a
// disagreement refuses the edit instead of damaging the file.
func hashLineOwner(raw string) (name string, isHash bool) {
	line := strings.TrimSpace(strings.TrimPrefix(raw, "\ufeff"))
	if line == "" || strings.HasPrefix(line, "#") {
		return "", false
	}
	if hashCandidate(line) {
		return "", true
	}
	if n, rest, ok := strings.Cut(line, ":"); ok && hashCandidate(strings.TrimSpace(rest)) {
		if n = strings.TrimSpace(n); ValidUserName(n) == nil {
			return n, true
		}
	}
	return "", false
}

// ownedPair is a credential line's owner and hash, as Parse sees it.
type ownedPair struct{ user, hash string }

// pairsExcept lists the credential lines of c whose user is not in skip, in
// file order.
func pairsExcept(c Credentials, skip ...string) []ownedPair {
	var out []ownedPair
	for i, h := range c.Hashes {
		if u := userAt(c, i); !slices.Contains(skip, u) {
			out = append(out, ownedPair{u, h})
		}
	}
	return out
}

// hashesOf lists the hashes of user's lines in file order ("" = bare lines).
func hashesOf(c Credentials, user string) []string {
	var out []string
	for i, h := range c.Hashes {
		if userAt(c, i) == user {
			out = append(out, h)
		}
	}
	return out
}

func userAt(c Credentials, i int) string {
	if i < len(c.Users) {
		return c.Users[i]
	}
	return ""
}

// caseTwin returns the user of c whose name differs from name in letter
// case only, "" if none.
func caseTwin(c Credentials, name string) string {
	for _, u := range c.Users {
		if u != name && strings.EqualFold(u, name) {
			return u
		}
	}
	return ""
}

// UserList names a file's users for a sentence ("its users: alice, bob"):
// all of them up to 10, then how many more.
func UserList(c Credentials) string {
	var names []string
	for i := range c.Hashes {
		if u := userAt(c, i); u != "" && !slices.Contains(names, u) {
			names = append(names, u)
		}
	}
	switch {
	case len(names) == 0:
		return "it has no named users"
	case len(names) > 10:
		return fmt.Sprintf("its users: %s and %d more", strings.Join(names[:10], ", "), len(names)-10)
	}
	return "its users: " + strings.Join(names, ", ")
}

// edit is a planned change of a credential file: its new bytes, and what
// each touched user's lines must be afterwards.
type edit struct {
	out  []byte
	want map[string][]string
}

// verify parses the edited bytes and proves the edit touched only the
// lines of the users in e.want: every other line (bare or named) is still
// there, in order, the username line too, and each touched user now has
// exactly want[user].
func (e edit) verify(path string, before Credentials) (Credentials, error) {
	touched := make([]string, 0, len(e.want))
	for u := range e.want {
		touched = append(touched, u)
	}
	after, err := Parse(e.out)
	if err != nil {
		return Credentials{}, fmt.Errorf("credential file %s would not be valid after the edit, so it is left untouched: %w", path, err)
	}
	ok := slices.Equal(pairsExcept(before, touched...), pairsExcept(after, touched...)) && after.Username == before.Username
	for u, w := range e.want {
		ok = ok && slices.Equal(hashesOf(after, u), w)
	}
	if !ok {
		return Credentials{}, fmt.Errorf("credential file %s would not read back as intended after the edit (a line the tool cannot classify?), so it is left untouched; edit it by hand and check it with `comfyui-auth token check`", path)
	}
	return after, nil
}

// apply verifies e, and only then rewrites the file in place.
func (e edit) apply(path string, before Credentials) (Credentials, error) {
	after, err := e.verify(path, before)
	if err != nil {
		return Credentials{}, err
	}
	if err := WriteInPlace(path, e.out); err != nil {
		return Credentials{}, err
	}
	return after, nil
}

// lines splits data into physical lines, each with its newline (the last
// one may lack it).
func lines(data []byte) []string {
	ls := strings.SplitAfter(string(data), "\n")
	if ls[len(ls)-1] == "" {
		ls = ls[:len(ls)-1]
	}
	return ls
}

// endLine ends s with a newline, so that a line can follow it.
func endLine(s string) string {
	if s == "" || strings.HasSuffix(s, "\n") {
		return s
	}
	return s + "\n"
}

// AddUsers gives each named user of add one credential line, `name:hash`,
// in the credential file at path, in place (see WriteInPlace). A user who
// already has lines is refused, naming `token rotate`, unless replace is
// set: then the user's lines are replaced by the new one, at the place of
// the first. New users go at the end of the file. Every other line stays
// byte for byte. A file that does not exist is created, mode 0600, with
// NewFileHeader.
func AddUsers(path string, add []UserHash, replace bool) (Credentials, error) {
	if len(add) == 0 {
		return Credentials{}, errors.New("no user to add")
	}
	want := make(map[string][]string, len(add))
	for _, a := range add {
		if err := ValidUserName(a.Name); err != nil {
			return Credentials{}, err
		}
		if _, perr := checkHash(1, a.Hash); perr != nil {
			return Credentials{}, fmt.Errorf("refusing to add user %s to %s: the new hash is not valid: %w", a.Name, path, perr)
		}
		for n := range want {
			if strings.EqualFold(n, a.Name) {
				return Credentials{}, fmt.Errorf("users %s and %s are named twice, or differ only in letter case, which ComfyUI and people would take for one user; nothing was changed", n, a.Name)
			}
		}
		want[a.Name] = []string{a.Hash}
	}
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		var b strings.Builder
		b.WriteString(NewFileHeader)
		for _, a := range add {
			b.WriteString(a.Name + ":" + a.Hash + "\n")
		}
		out := []byte(b.String())
		creds, err := Parse(out)
		if err != nil {
			return Credentials{}, fmt.Errorf("the new credential file %s would not be valid, so it was not written: %w", path, err)
		}
		if err := WriteFileSynced(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, newFileMode, out); err != nil {
			return Credentials{}, fmt.Errorf("creating the credential file: %w", err)
		}
		return creds, nil
	}
	data, before, err := readForRewrite(path)
	if err != nil {
		return Credentials{}, err
	}
	var existing []string
	for _, a := range add {
		if len(hashesOf(before, a.Name)) > 0 {
			existing = append(existing, a.Name)
		}
		if u := caseTwin(before, a.Name); u != "" {
			return Credentials{}, fmt.Errorf("user %s differs from user %s of %s only in letter case, which ComfyUI and people would take for one user; nothing was changed: pick another name, or use %s", a.Name, u, path, u)
		}
	}
	if len(existing) > 0 && !replace {
		return Credentials{}, &UserExistsError{Path: path, Names: existing}
	}
	return planAdd(data, add, want).apply(path, before)
}

// planAdd gives each user of add the one line want[name]: at the place of
// the user's first line (the others dropped), or at the end of the file.
func planAdd(data []byte, add []UserHash, want map[string][]string) edit {
	placed := map[string]bool{}
	var b strings.Builder
	for _, raw := range lines(data) {
		if name, isHash := hashLineOwner(raw); isHash && name != "" {
			if w, ok := want[name]; ok {
				if !placed[name] {
					b.WriteString(name + ":" + w[0] + "\n")
					placed[name] = true
				}
				continue
			}
		}
		b.WriteString(raw)
	}
	out := b.String()
	for _, a := range add {
		if !placed[a.Name] {
			out = endLine(out) + a.Name + ":" + a.Hash + "\n"
		}
	}
	return edit{[]byte(out), want}
}

// UserExistsError is AddUsers refusing users who already have lines.
type UserExistsError struct {
	Path  string
	Names []string
}

func (e *UserExistsError) Error() string {
	if len(e.Names) == 1 {
		n := e.Names[0]
		return fmt.Sprintf("user %s already has a token in %s; nothing was changed: give %s a new one with `comfyui-auth token rotate --user %s` (the old token keeps working until --retire-old), or pass --force to replace %s's lines now (the old token stops working at once)", n, e.Path, n, n, n)
	}
	return fmt.Sprintf("users %s already have tokens in %s; nothing was changed: rotate them with `comfyui-auth token rotate --user NAME`, leave them out, or pass --force to replace their lines now (their old tokens stop working at once)", strings.Join(e.Names, ", "), e.Path)
}

// AppendUserHash adds `name:hash` right after the last line of user name in
// the credential file at path, in place, so that the user's old and new
// tokens are both valid until RetireUserOld. The user must exist: a new
// user is made with AddUsers. Every other line stays byte for byte.
func AppendUserHash(path, name, hash string) (Credentials, error) {
	if err := ValidUserName(name); err != nil {
		return Credentials{}, err
	}
	if _, perr := checkHash(1, hash); perr != nil {
		return Credentials{}, fmt.Errorf("refusing to append to %s: the new hash is not valid: %w", path, perr)
	}
	data, before, err := readForRewrite(path)
	if err != nil {
		return Credentials{}, err
	}
	old := hashesOf(before, name)
	if len(old) == 0 {
		return Credentials{}, fmt.Errorf("credential file %s has no user %s (%s); nothing was changed: make the user with `comfyui-auth token generate --user %s`", path, name, UserList(before), name)
	}
	if slices.Contains(before.Hashes, hash) {
		return Credentials{}, fmt.Errorf("credential file %s already holds this hash (fingerprint %s): nothing to append", path, Fingerprint(hash))
	}
	return planAppend(data, name, hash, old).apply(path, before)
}

// planAppend puts `name:hash` right after the last line of name, whose
// lines are old.
func planAppend(data []byte, name, hash string, old []string) edit {
	ls := lines(data)
	last := len(ls) - 1 // if the tool cannot find the user's lines, verify refuses
	for i, raw := range ls {
		if n, isHash := hashLineOwner(raw); isHash && n == name {
			last = i
		}
	}
	out := endLine(strings.Join(ls[:last+1], "")) + name + ":" + hash + "\n" + strings.Join(ls[last+1:], "")
	return edit{[]byte(out), map[string][]string{name: append(slices.Clone(old), hash)}}
}

// RetireUserOld removes every line of user name in the credential file at
// path except the last one (the newest, since AppendUserHash appends after
// the user's last line), in place; name "" means the bare lines. Every other
// line stays byte for byte. It returns the fingerprints of the removed
// hashes (none when the user has a single line) and of the one kept.
func RetireUserOld(path, name string) (removed []string, kept string, err error) {
	if name != "" {
		if err := ValidUserName(name); err != nil {
			return nil, "", err
		}
	}
	data, before, err := readForRewrite(path)
	if err != nil {
		return nil, "", err
	}
	old := hashesOf(before, name)
	switch {
	case len(old) == 0 && name == "":
		return nil, "", fmt.Errorf("credential file %s has no bare hash line to retire (%s): name the user whose old token to retire with --user NAME", path, UserList(before))
	case len(old) == 0:
		return nil, "", fmt.Errorf("credential file %s has no user %s (%s); nothing was changed", path, name, UserList(before))
	case len(old) == 1:
		return nil, Fingerprint(old[0]), nil
	}
	newest := old[len(old)-1]
	for _, h := range old[:len(old)-1] {
		removed = append(removed, Fingerprint(h))
	}
	if _, err := planRetire(data, name, newest).apply(path, before); err != nil {
		what := "the last bare hash line"
		if name != "" {
			what = "the last line of " + name
		}
		return nil, "", fmt.Errorf("%w (keep %s)", err, what)
	}
	return removed, Fingerprint(newest), nil
}

// planRetire drops every line of name (bare lines for "") but the last
// one, which holds newest. By position, not by value: a hash pasted twice
// leaves one line.
func planRetire(data []byte, name, newest string) edit {
	ls := lines(data)
	last := -1
	for i, raw := range ls {
		if n, isHash := hashLineOwner(raw); isHash && n == name {
			last = i
		}
	}
	var b strings.Builder
	for i, raw := range ls {
		if n, isHash := hashLineOwner(raw); isHash && n == name && i != last {
			continue
		}
		b.WriteString(raw)
	}
	return edit{[]byte(b.String()), map[string][]string{name: {newest}}}
}

// ErrLastCredential is RemoveUser refusing to remove every credential of the
// file. An empty credential file is not valid, and the gateway keeps the
// last good credentials when the file turns invalid: the removed user would
// stay in until a restart, and then nobody would get in at all.
var ErrLastCredential = errors.New("it would leave no credential in the file")

// RemoveUser removes every line of user name from the credential file at
// path, in place, and returns the fingerprints of the removed hashes. Every
// other line stays byte for byte. It refuses (ErrLastCredential) when those
// lines are the file's last credentials.
func RemoveUser(path, name string) (removed []string, err error) {
	if err := ValidUserName(name); err != nil {
		return nil, err
	}
	data, before, err := readForRewrite(path)
	if err != nil {
		return nil, err
	}
	old := hashesOf(before, name)
	if len(old) == 0 {
		return nil, fmt.Errorf("credential file %s has no user %s (%s); nothing was changed", path, name, UserList(before))
	}
	if len(old) == len(before.Hashes) {
		return nil, fmt.Errorf("refusing to remove user %s from %s: %w. The gateway keeps the last good credentials when the file has none, so %s would stay in until a restart, and after it nobody would get in; add another user first (`comfyui-auth token generate --user NAME`), or stop the gateway",
			name, path, ErrLastCredential, name)
	}
	for _, h := range old {
		removed = append(removed, Fingerprint(h))
	}
	if _, err := planRemove(data, name).apply(path, before); err != nil {
		return nil, err
	}
	return removed, nil
}

// planRemove drops every line of name.
func planRemove(data []byte, name string) edit {
	var b strings.Builder
	for _, raw := range lines(data) {
		if n, isHash := hashLineOwner(raw); isHash && n == name {
			continue
		}
		b.WriteString(raw)
	}
	return edit{[]byte(b.String()), map[string][]string{name: nil}}
}
