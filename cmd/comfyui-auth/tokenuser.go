package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/comfyui-auth/comfyui-auth/hashstore"
)

// Named users: `token generate|rotate|revoke --user NAME` edit one user's
// `NAME:<hash>` lines of the credential file in place, and keep that user's
// client token, `NAME:<secret>`, in a file of its own, DIR/NAME.token, that
// a teacher hands to the user.

// reloadNote says when a running gateway enforces an edit of the file.
const reloadNote = "the running gateway enforces it without restart: at once when it sees file events, else within its --poll-interval (COMFYUI_AUTH_POLL_INTERVAL, 2s by default)"

// appendUserHash is what `token rotate --user` calls; tests make it fail to
// check that the token file is put back.
var appendUserHash = hashstore.AppendUserHash

// manyUsers is the count from which generate prints progress while hashing.
const manyUsers = 5

// userOpts are the flags the --user commands share.
type userOpts struct {
	cmd       string // the command's name, for messages
	hashFile  string
	tokensDir string // "" = defaultTokensDir(hashFile)
	cost      int
	force     bool
}

// defaultTokensDir is where client token files go without --tokens-dir:
// a tokens folder beside the credential file, out of ComfyUI's reach like it.
func defaultTokensDir(hashFile string) string {
	return filepath.Join(filepath.Dir(hashFile), "tokens")
}

func (o userOpts) tokenFile(name string) string {
	dir := o.tokensDir
	if dir == "" {
		dir = defaultTokensDir(o.hashFile)
	}
	return filepath.Join(dir, name+".token")
}

// userTokenLine is the content of a client token file: the one line a client
// sends, so that `$(cat alice.token)` is the whole credential.
func userTokenLine(name, secret string) []byte { return []byte(name + ":" + secret + "\n") }

// explicitFlags names the flags set on the command line.
func explicitFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// conflicting reports the first flag of names that is set, for a usage error.
func conflicting(set map[string]bool, names ...string) string {
	for _, n := range names {
		if set[n] {
			return "--" + n
		}
	}
	return ""
}

// mkdirPrivate creates dir (and its parents) readable by its owner only.
func mkdirPrivate(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", dir, err)
		}
		_ = os.Chmod(dir, 0o700) // MkdirAll's mode went through the umask
	}
	return nil
}

// readUsersFrom reads one user name per line; blank lines and `#` comments
// are skipped. "-" reads stdin.
func readUsersFrom(path string, stdin io.Reader) ([]string, error) {
	r := stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("reading the user list: %w", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, hashstore.MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading the user list %s: %w", path, err)
	}
	if len(data) > hashstore.MaxFileBytes {
		// The credential file has the same bound, and a line per user.
		return nil, fmt.Errorf("user list %s is over %d KiB, more users than one credential file can hold (about 800); split the class over several gateways", path, hashstore.MaxFileBytes>>10)
	}
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(strings.TrimPrefix(sc.Text(), "\ufeff"))
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := hashstore.ValidUserName(line); err != nil {
			return nil, fmt.Errorf("user list %s, line %d: %w", path, n, err)
		}
		names = append(names, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading the user list %s: %w", path, err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("user list %s names nobody: write one user name per line", path)
	}
	return names, nil
}

// savedFile is a file's content before a command wrote it, to put back if a
// later step fails.
type savedFile struct {
	path    string
	old     []byte
	existed bool
}

func (s savedFile) restore() error { return restoreEnvFile(s.path, s.old, s.existed) }

// saveForRollback reads a file about to be written. A file that exists but
// cannot be read is refused: it could not be put back.
func saveForRollback(path string) (savedFile, error) {
	old, err := os.ReadFile(path)
	switch {
	case err == nil:
		return savedFile{path, old, true}, nil
	case errors.Is(err, fs.ErrNotExist):
		return savedFile{path: path}, nil
	}
	return savedFile{}, fmt.Errorf("cannot keep a copy of %s to put back if the command fails (%v); nothing was changed: make it readable, or choose another folder with --tokens-dir", path, err)
}

// rollback puts token files back after the credential file refused the
// edit, and tells which ones could not be.
func rollback(cmd string, saved []savedFile, stderr io.Writer) {
	for _, s := range saved {
		if err := s.restore(); err != nil {
			fmt.Fprintf(stderr, "%s: putting %s back failed too: %v; it holds a NEW token that the credential file does not accept: do not hand it out; %s\n",
				cmd, s.path, err, envFixHint(s.path, s.existed))
		}
	}
	if len(saved) > 0 {
		fmt.Fprintf(stderr, "%s: the client token files were put back as they were\n", cmd)
	}
}

// runUserGenerate makes each named user a token: it writes the client token
// files first, then adds every user's line to the credential file in one
// in-place write (one reload, however many users), and puts the token files
// back if that write is refused.
func runUserGenerate(names []string, o userOpts, stdout, stderr io.Writer) int {
	for i, n := range names {
		if err := hashstore.ValidUserName(n); err != nil {
			fmt.Fprintf(stderr, "%s: user %q: %v\n", o.cmd, n, err)
			return 2
		}
		if slices.Contains(names[:i], n) {
			fmt.Fprintf(stderr, "%s: user %s is named twice; nothing was changed\n", o.cmd, n)
			return 2
		}
	}
	if err := mkdirPrivate(filepath.Dir(o.hashFile)); err != nil {
		fmt.Fprintf(stderr, "%s: %v; nothing was changed\n", o.cmd, err)
		return 1
	}
	unlock, err := lockCredentialDir(o.hashFile, stderr, o.cmd)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v; nothing was changed\n", o.cmd, err)
		return 1
	}
	defer unlock()
	_, statErr := os.Stat(o.hashFile)
	created := errors.Is(statErr, fs.ErrNotExist)
	if !created {
		creds, err := hashstore.ReadFile(o.hashFile)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v; nothing was changed\n", o.cmd, err)
			return 1
		}
		var existing []string
		for _, n := range names {
			if slices.Contains(creds.Users, n) {
				existing = append(existing, n)
			}
		}
		if len(existing) > 0 && !o.force {
			fmt.Fprintf(stderr, "%s: %v\n", o.cmd, &hashstore.UserExistsError{Path: o.hashFile, Names: existing})
			return 1
		}
	}
	var saved []savedFile
	for _, n := range names {
		p := o.tokenFile(n)
		s, err := saveForRollback(p)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", o.cmd, err)
			return 1
		}
		if s.existed && !o.force {
			fmt.Fprintf(stderr, "%s: %s already exists although user %s has no line in %s (left from an edit by hand?); nothing was changed: delete it, or pass --force to replace it\n", o.cmd, p, n, o.hashFile)
			return 1
		}
		saved = append(saved, s)
	}
	if err := mkdirPrivate(filepath.Dir(o.tokenFile("x"))); err != nil {
		fmt.Fprintf(stderr, "%s: %v; nothing was changed\n", o.cmd, err)
		return 1
	}

	adds := make([]hashstore.UserHash, 0, len(names))
	secrets := make([]string, 0, len(names))
	for i, n := range names {
		secret, hash, err := newTokenPair(o.cost)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v; nothing was changed\n", o.cmd, err)
			return 1
		}
		adds = append(adds, hashstore.UserHash{Name: n, Hash: hash})
		secrets = append(secrets, secret)
		if len(names) > manyUsers && ((i+1)%10 == 0 || i+1 == len(names)) {
			fmt.Fprintf(stderr, "%s: hashed %d of %d tokens\n", o.cmd, i+1, len(names))
		}
	}
	for i, a := range adds {
		if err := hashstore.WriteFileSynced(saved[i].path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600, userTokenLine(a.Name, secrets[i])); err != nil {
			fmt.Fprintf(stderr, "%s: writing the client token file: %v\n", o.cmd, err)
			rollback(o.cmd, saved[:i+1], stderr)
			return 1
		}
	}
	if _, err := hashstore.AddUsers(o.hashFile, adds, o.force); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", o.cmd, err)
		rollback(o.cmd, saved, stderr)
		return 1
	}

	m := fileMode(o.hashFile)
	switch a := adds[0]; {
	case created && len(adds) == 1:
		fmt.Fprintf(stdout, "user %s: created %s (mode %04o) with %s's line (fingerprint %s)\n", a.Name, o.hashFile, m, a.Name, hashstore.Fingerprint(a.Hash))
	case created:
		fmt.Fprintf(stdout, "%d users: created %s (mode %04o) with a line each\n", len(adds), o.hashFile, m)
	case len(adds) == 1:
		fmt.Fprintf(stdout, "user %s: added to %s (mode %04o, line fingerprint %s) in place; %s\n", a.Name, o.hashFile, m, hashstore.Fingerprint(a.Hash), reloadNote)
	default:
		fmt.Fprintf(stdout, "%d users: added to %s (mode %04o) in one in-place write; %s\n", len(adds), o.hashFile, m, reloadNote)
	}
	if m&0o077 != 0 {
		fmt.Fprintf(stdout, "  note: its mode %04o lets other users of this machine read the hashes: chmod 600 %s unless another user must read it\n", m, shellQuote(o.hashFile))
	}
	if created {
		fmt.Fprintf(stdout, "  point the gateway at it: --hash-file %s (COMFYUI_AUTH_TOKEN_FILE)\n", shellQuote(o.hashFile))
	}
	fmt.Fprintf(stdout, "client tokens (mode 0600, one line `NAME:<secret>` each; hand each to its user, keep them out of git):\n")
	for i, a := range adds {
		fmt.Fprintf(stdout, "  %-16s %s (fingerprint %s)\n", a.Name, saved[i].path, hashstore.Fingerprint(a.Hash))
	}
	first := adds[0].Name
	fmt.Fprintf(stdout, "a client sends it as `Authorization: Bearer %s:<secret>`, as HTTP Basic (user %s), as `?token=%s:<secret>`, or logs in with username %s and the secret as password\n", first, first, first, first)
	fmt.Fprintf(stdout, "try it:\n  curl -H \"Authorization: Bearer $(cat %s)\" http://localhost:8188/system_stats\n", shellQuote(saved[0].path))
	return 0
}

// fileMode is path's permission bits, 0 when it cannot be read.
func fileMode(path string) os.FileMode {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Mode().Perm()
}

// runUserRotate is `token rotate --user NAME`: today's rotation for one user.
// The new token goes to the user's token file first (its old content kept),
// then the new line is added right after the user's last one; if that is
// refused, the token file is put back.
func runUserRotate(ctx context.Context, name string, o userOpts, keepOld bool, keepFor keepOldWait, stdout, stderr io.Writer) int {
	if err := hashstore.ValidUserName(name); err != nil {
		fmt.Fprintf(stderr, "%s: --user %q: %v\n", o.cmd, name, err)
		return 2
	}
	if code := rotateUser(name, o, keepOld, stdout, stderr); code != 0 || !keepOld {
		return code
	}
	retireCmd := fmt.Sprintf("comfyui-auth token rotate --retire-old --user %s --hash-file %s", name, shellQuote(o.hashFile))
	return keepFor(ctx, retireCmd, func() int { return retireUser(name, o, stdout, stderr) })
}

// rotateUser is the first step of runUserRotate, under the edit lock.
func rotateUser(name string, o userOpts, keepOld bool, stdout, stderr io.Writer) int {
	unlock, err := lockCredentialDir(o.hashFile, stderr, o.cmd)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v; nothing was changed\n", o.cmd, err)
		return 1
	}
	defer unlock()
	tokenFile := o.tokenFile(name)
	saved, err := saveForRollback(tokenFile)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", o.cmd, err)
		return 1
	}
	// A user the file lacks is refused before a token file is written.
	if creds, err := hashstore.ReadFile(o.hashFile); err != nil {
		fmt.Fprintf(stderr, "%s: %v; nothing was changed\n", o.cmd, err)
		return 1
	} else if !slices.Contains(creds.Users, name) {
		fmt.Fprintf(stderr, "%s: %s has no user %s; nothing was changed: make the user with `comfyui-auth token generate --user %s --hash-file %s`\n", o.cmd, o.hashFile, name, name, shellQuote(o.hashFile))
		return 1
	}
	if err := mkdirPrivate(filepath.Dir(tokenFile)); err != nil {
		fmt.Fprintf(stderr, "%s: %v; nothing was changed\n", o.cmd, err)
		return 1
	}
	secret, hash, err := newTokenPair(o.cost)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v; nothing was changed\n", o.cmd, err)
		return 1
	}
	if err := hashstore.WriteFileSynced(tokenFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600, userTokenLine(name, secret)); err != nil {
		fmt.Fprintf(stderr, "%s: writing the client token file: %v\n", o.cmd, err)
		rollback(o.cmd, []savedFile{saved}, stderr)
		return 1
	}
	creds, err := appendUserHash(o.hashFile, name, hash)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", o.cmd, err)
		rollback(o.cmd, []savedFile{saved}, stderr)
		return 1
	}
	n := 0
	for _, u := range creds.Users {
		if u == name {
			n++
		}
	}
	retireCmd := fmt.Sprintf("comfyui-auth token rotate --retire-old --user %s --hash-file %s", name, shellQuote(o.hashFile))
	fmt.Fprintf(stdout, "user %s: added line %d of %d (fingerprint %s) to %s in place; the old token stays valid; %s\n", name, n, n, hashstore.Fingerprint(hash), o.hashFile, reloadNote)
	fmt.Fprintf(stdout, "new client token: %s (mode 0600, `%s:<secret>`); hand it to %s:\n  curl -H \"Authorization: Bearer $(cat %s)\" http://localhost:8188/system_stats\n", tokenFile, name, name, shellQuote(tokenFile))
	if !keepOld {
		fmt.Fprintf(stdout, "once %s uses the new token, remove the old one: %s\n", name, retireCmd)
	}
	return 0
}

// retireUser removes every line of the user but the newest.
func retireUser(name string, o userOpts, stdout, stderr io.Writer) int {
	if err := hashstore.ValidUserName(name); err != nil {
		fmt.Fprintf(stderr, "%s: --user %q: %v\n", o.cmd, name, err)
		return 2
	}
	unlock, err := lockCredentialDir(o.hashFile, stderr, o.cmd)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v; nothing was changed\n", o.cmd, err)
		return 1
	}
	defer unlock()
	removed, kept, err := hashstore.RetireUserOld(o.hashFile, name)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", o.cmd, err)
		return 1
	}
	if len(removed) == 0 {
		fmt.Fprintf(stdout, "user %s has a single line in %s (fingerprint %s): nothing to retire\n", name, o.hashFile, kept)
		return 0
	}
	fmt.Fprintf(stdout, "user %s: retired %d old line(s) (fingerprints %s) from %s in place; only the line with fingerprint %s is valid now, and %s's old token gets 401: %s\n",
		name, len(removed), strings.Join(removed, ", "), o.hashFile, kept, name, reloadNote)
	return 0
}

func runTokenRevoke(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("comfyui-auth token revoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("user", "", "the user `NAME` whose lines to remove")
	hashFile := fs.String("hash-file", defaultHashFile(os.LookupEnv), "credential `file` to edit in place (COMFYUI_AUTH_TOKEN_FILE)")
	tokensDir := fs.String("tokens-dir", "", "`folder` of the client token files (default: tokens/ beside the credential file)")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if *user == "" {
		fmt.Fprintf(stderr, "%s: name the user: --user NAME (the bare, unnamed lines are replaced with `token rotate`)\n", fs.Name())
		return 2
	}
	if err := hashstore.ValidUserName(*user); err != nil {
		fmt.Fprintf(stderr, "%s: --user %q: %v\n", fs.Name(), *user, err)
		return 2
	}
	o := userOpts{cmd: fs.Name(), hashFile: *hashFile, tokensDir: *tokensDir}
	unlock, err := lockCredentialDir(*hashFile, stderr, fs.Name())
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v; nothing was changed\n", fs.Name(), err)
		return 1
	}
	defer unlock()
	removed, err := hashstore.RemoveUser(*hashFile, *user)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 1
	}
	fmt.Fprintf(stdout, "user %s: removed %d line(s) (fingerprints %s) from %s in place; %s, and from then on %s's tokens and login sessions get 401; nobody else's are touched\n",
		*user, len(removed), strings.Join(removed, ", "), *hashFile, reloadNote, *user)
	tf := o.tokenFile(*user)
	switch err := os.Remove(tf); {
	case err == nil:
		fmt.Fprintf(stdout, "deleted the client token file %s\n", tf)
	case errors.Is(err, os.ErrNotExist):
	default:
		fmt.Fprintf(stderr, "%s: the client token file %s could not be deleted (%v); its token no longer works, delete it by hand\n", fs.Name(), tf, err)
	}
	return 0
}

// checkSentence is `token check`'s answer: Diagnose's sentence, which reads
// `name:secret` as the gateway does, said from the point of view of whose
// token it is when the file has named users. A value that starts with a
// name the file lacks gets the reason first: the gateway then checks the
// whole value against the bare lines, so a revoked user's token is refused
// with that finding.
func checkSentence(d hashstore.Diagnosis, value string) string {
	s := d.Sentence()
	if len(d.UserNames) == 0 || d.Kind == hashstore.DiagFileProblem {
		return s
	}
	if d.User != "" {
		return s
	}
	if d.OK() {
		return "the token belongs to the default user (the bare lines; `default` in logs): " + s
	}
	if name, _, ok := strings.Cut(value, ":"); ok && hashstore.ValidUserName(name) == nil {
		return fmt.Sprintf("the token starts with `%s:`, but %s has no user %s (revoked, or never made with `token generate --user %s`), so it was checked whole against the bare lines: %s",
			name, d.Source, name, name, s)
	}
	return s
}

// hasNamedLines reports whether the file has a named user.
func hasNamedLines(c hashstore.Credentials) bool {
	return slices.ContainsFunc(c.Users, func(u string) bool { return u != "" })
}

// runTokenUsers is `token users`: who has access, from the credential file
// (names, line counts, fingerprints) and the token files beside it. It
// prints no secret.
func runTokenUsers(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("comfyui-auth token users", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hashFile := fs.String("hash-file", defaultHashFile(os.LookupEnv), "credential `file` to read (COMFYUI_AUTH_TOKEN_FILE)")
	tokensDir := fs.String("tokens-dir", "", "`folder` of the client token files (default: tokens/ beside the credential file)")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	creds, err := hashstore.ReadFile(*hashFile)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 1
	}
	o := userOpts{hashFile: *hashFile, tokensDir: *tokensDir}
	var names []string
	fps := map[string][]string{}
	for i, h := range creds.Hashes {
		u := ""
		if i < len(creds.Users) {
			u = creds.Users[i]
		}
		if _, seen := fps[u]; !seen && u != "" {
			names = append(names, u)
		}
		fps[u] = append(fps[u], hashstore.Fingerprint(h))
	}
	fmt.Fprintf(stdout, "%s: %d named user(s), %d bare line(s)\n", *hashFile, len(names), len(fps[""]))
	if b := fps[""]; len(b) > 0 {
		fmt.Fprintf(stdout, "  %-16s %d line(s) %s (the bare lines; `default` in logs)\n", "(default)", len(b), strings.Join(b, ","))
	}
	for _, n := range names {
		tf := o.tokenFile(n)
		where := "no token file at " + tf
		if _, err := os.Stat(tf); err == nil {
			where = "token file " + tf
		}
		fmt.Fprintf(stdout, "  %-16s %d line(s) %s  %s\n", n, len(fps[n]), strings.Join(fps[n], ","), where)
	}
	return 0
}
