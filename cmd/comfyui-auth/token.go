package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/comfyui-auth/comfyui-auth/hashstore"
	"golang.org/x/crypto/bcrypt"
)

const tokenUsage = `Usage:
  comfyui-auth token generate [--out-dir .secrets] [--name qwen-api-user] [--cost 12] [--force] [--compose-env]
  comfyui-auth token rotate   [--hash-file F] [--keep-old DURATION | --retire-old]
  comfyui-auth token check    [--hash-file F] [--token T]

Named users (one credential file, a client token file per user):
  comfyui-auth token generate --user NAME | --users-from FILE [--hash-file F] [--tokens-dir D] [--force]
  comfyui-auth token rotate   --user NAME [--hash-file F] [--tokens-dir D] [--keep-old DURATION | --retire-old]
  comfyui-auth token revoke   --user NAME [--hash-file F] [--tokens-dir D]
  comfyui-auth token users    [--hash-file F] [--tokens-dir D]     who has access (no secret printed)
`

// tokenAlphabet is RFC 3986's unreserved set minus `.` and `~`: nothing in it
// is special to sh, to a URL, or to a .env parser, so the token never needs
// quoting. 64 symbols make each character exactly 6 random bits.
const tokenAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// tokenLen is 32 characters: 192 bits, and the length the deployment's
// clients already expect.
const tokenLen = 32

// clientTokenVars are where `token check` and `probe` look for a token, in
// order: the client's raw token first, then the names the deployment uses.
var clientTokenVars = []string{"QWEN_API_USER_TOKEN", "COMFYUI_API_TOKEN", "COMFYUI_AUTH_TOKEN", "QWEN_API_TOKEN"}

func runToken(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, tokenUsage)
		return 2
	}
	switch args[0] {
	case "generate":
		return runTokenGenerate(args[1:], stdin, stdout, stderr)
	case "rotate":
		return runTokenRotate(context.Background(), args[1:], stdout, stderr)
	case "revoke":
		return runTokenRevoke(args[1:], stdout, stderr)
	case "users":
		return runTokenUsers(args[1:], stdout, stderr)
	case "check":
		return runTokenCheck(args[1:], stdin, os.LookupEnv, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, tokenUsage)
		return 0
	}
	fmt.Fprintf(stderr, "comfyui-auth token: unknown command %q\n\n%s", args[0], tokenUsage)
	return 2
}

// newToken returns tokenLen characters of tokenAlphabet from crypto/rand.
func newToken() (string, error) {
	b := make([]byte, tokenLen)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("reading the system's random source: %w", err)
	}
	for i := range b {
		b[i] = tokenAlphabet[b[i]&63] // 256 is a multiple of 64: no bias
	}
	return string(b), nil
}

// newTokenPair makes a fresh raw token and its bcrypt hash.
func newTokenPair(cost int) (token, hash string, err error) {
	if token, err = newToken(); err != nil {
		return "", "", err
	}
	h, err := bcrypt.GenerateFromPassword([]byte(token), cost)
	if err != nil {
		return "", "", fmt.Errorf("hashing the token: %w", err)
	}
	return token, string(h), nil
}

// envVarFor turns a credential name into the client variable that holds its
// raw token: qwen-api-user → QWEN_API_USER_TOKEN, the name the deployment's
// clients and notebooks read.
func envVarFor(name string) string {
	var b strings.Builder
	for _, c := range strings.ToUpper(name) {
		if c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String() + "_TOKEN"
}

// parseFlags parses fs and turns its outcome into an exit code: -1 to go on,
// 0 after --help, 2 on a usage error.
func parseFlags(fs *flag.FlagSet, args []string) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q (flags start with --)\n", fs.Name(), fs.Arg(0))
		return 2
	}
	return -1
}

// costFloor is the lowest --cost accepted; tests lower it so that bcrypt
// under the race detector stays cheap.
var costFloor = 10

func checkCost(cost int, stderr io.Writer, cmd string) bool {
	if cost < costFloor || cost > 14 {
		fmt.Fprintf(stderr, "%s: --cost %d is outside 10..14: below, a leaked hash is cheap to brute-force; above, each check costs the server seconds of CPU\n", cmd, cost)
		return false
	}
	return true
}

// writeEnvFile writes the raw token for clients, readable by its owner only.
func writeEnvFile(path, varName, token, hashFP string, exclusive bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if exclusive {
		flags |= os.O_EXCL
	}
	content := fmt.Sprintf("# raw token for clients (comfyui-auth, %s); server hash fingerprint %s. Never commit this file.\n%s=%s\n",
		time.Now().UTC().Format(time.RFC3339), hashFP, varName, token)
	if err := hashstore.WriteFileSynced(path, flags, 0o600, []byte(content)); err != nil {
		return fmt.Errorf("writing the token file: %w", err)
	}
	return nil
}

// shellQuote quotes a path for a copy-pasted command line only when needed.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, tokenAlphabet+"./") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// curlLine is a command that reads the token from the file at use time, so
// the token never appears on screen or in shell history.
func curlLine(envFile, varName string) string {
	return fmt.Sprintf(`curl -H "Authorization: Bearer $(sed -n 's/^%s=//p' %s)" http://localhost:8188/system_stats`, varName, shellQuote(envFile))
}

func runTokenGenerate(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("comfyui-auth token generate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	outDir := fs.String("out-dir", ".secrets", "`directory` for .env.generated (raw token) and <name>.token (hash)")
	name := fs.String("name", "qwen-api-user", "credential `name`: the hash goes to <name>.token, the token to <NAME>_TOKEN")
	cost := fs.Int("cost", 12, "bcrypt `cost` (10..14)")
	force := boolFlag(fs, "force", "overwrite existing files (clients holding the old token get 401; see `token rotate` to avoid that); with --user, replace the user's lines")
	composeEnv := boolFlag(fs, "compose-env", "also print the hash escaped for a Compose .env (each `$` doubled)")
	user := fs.String("user", "", "make a named user `NAME`: add NAME:<hash> to the credential file and write NAME:<secret> to <tokens-dir>/NAME.token")
	usersFrom := fs.String("users-from", "", "make every user named in `FILE` (one name per line, # comments; - reads stdin) in one write")
	userHashFile := fs.String("hash-file", defaultHashFile(os.LookupEnv), "with --user: the credential `file` to edit in place, created if missing (COMFYUI_AUTH_TOKEN_FILE)")
	tokensDir := fs.String("tokens-dir", "", "with --user: `folder` for the client token files (default: tokens/ beside the credential file)")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if !checkCost(*cost, stderr, fs.Name()) {
		return 2
	}
	set := explicitFlags(fs)
	if *user != "" || *usersFrom != "" {
		if c := conflicting(set, "out-dir", "name", "compose-env"); c != "" {
			fmt.Fprintf(stderr, "%s: %s is for the single unnamed token; with --user the credential file is --hash-file and the client tokens go to --tokens-dir\n", fs.Name(), c)
			return 2
		}
		if *user != "" && *usersFrom != "" {
			fmt.Fprintf(stderr, "%s: --user and --users-from exclude each other: put every name in the file\n", fs.Name())
			return 2
		}
		names := []string{*user}
		if *usersFrom != "" {
			var err error
			if names, err = readUsersFrom(*usersFrom, stdin); err != nil {
				fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
				return 2
			}
		}
		return runUserGenerate(names, userOpts{cmd: fs.Name(), hashFile: *userHashFile, tokensDir: *tokensDir, cost: *cost, force: *force}, stdout, stderr)
	}
	if c := conflicting(set, "hash-file", "tokens-dir"); c != "" {
		fmt.Fprintf(stderr, "%s: %s goes with --user NAME; without it, generate writes <out-dir>/<name>.token and <out-dir>/.env.generated\n", fs.Name(), c)
		return 2
	}
	if *name == "" || strings.ContainsAny(*name, `/\`) {
		fmt.Fprintf(stderr, "%s: --name %q must be a plain file name such as qwen-api-user\n", fs.Name(), *name)
		return 2
	}
	envFile := filepath.Join(*outDir, ".env.generated")
	hashFile := filepath.Join(*outDir, *name+".token")
	varName := envVarFor(*name)

	if *force {
		// The pair replaces the whole hash file: named users in it would
		// lose their access without a word.
		if creds, err := hashstore.ReadFile(hashFile); err == nil && hasNamedLines(creds) {
			fmt.Fprintf(stderr, "%s: %s holds named users' lines (%s), which --force would remove; nothing was written: use `comfyui-auth token rotate --hash-file %s` for the unnamed token, `token generate --user NAME` for a user\n",
				fs.Name(), hashFile, hashstore.UserList(creds), shellQuote(hashFile))
			return 1
		}
	} else {
		for _, p := range []string{envFile, hashFile} {
			if _, err := os.Lstat(p); err == nil {
				fmt.Fprintf(stderr, "%s: %s already exists; nothing was written. Pass --force to replace the pair (clients holding the old token then get 401), or use `comfyui-auth token rotate --hash-file %s` to change it without downtime\n",
					fs.Name(), p, shellQuote(hashFile))
				return 1
			}
		}
	}
	if _, err := os.Stat(*outDir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(*outDir, 0o700); err != nil {
			fmt.Fprintf(stderr, "%s: creating %s: %v\n", fs.Name(), *outDir, err)
			return 1
		}
		_ = os.Chmod(*outDir, 0o700) // MkdirAll's mode went through the umask
	}

	token, hash, err := newTokenPair(*cost)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 1
	}
	fp := hashstore.Fingerprint(hash)

	mode, err := writeHashFile(hashFile, hash+"\n")
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 1
	}
	if err := writeEnvFile(envFile, varName, token, fp, !*force); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 1
	}
	fmt.Fprintf(stdout, "server: %s (mode %04o, bcrypt hash, fingerprint %s)\n", hashFile, mode, fp)
	if mode&0o077 != 0 {
		fmt.Fprintf(stdout, "  note: its mode %04o was kept; other users of this machine can read it, and while hash tokens are accepted the hash logs in like the token: chmod 600 %s unless another user must read it\n", mode, shellQuote(hashFile))
	}
	fmt.Fprintf(stdout, "  the container mounts the %s directory read-only at %s (COMFYUI_AUTH_TOKEN_FILE=%s/%s.token), out of ComfyUI's reach\n", *outDir, containerSecretsDir, containerSecretsDir, *name)
	fmt.Fprintf(stdout, "clients: %s (mode 0600, %s=<the raw token>)\n", envFile, varName)
	fmt.Fprintf(stdout, "  clients send the raw token as `Authorization: Bearer <token>`; keep this file out of git\n")
	fmt.Fprintf(stdout, "try it:\n  %s\n", curlLine(envFile, varName))
	if *composeEnv {
		fmt.Fprintf(stdout, "for a Compose .env, the hash with each `$` doubled (for clients that send the hash, e.g. the idle-monitor sidecar):\n  COMFYUI_BEARER_TOKEN=%s\n",
			strings.ReplaceAll(hash, "$", "$$"))
	}
	return 0
}

// hashFileMode is the mode of a new hash file. The hash is a bearer secret
// while hash tokens are accepted (ComfyUI-Login's clients send it), so only
// its owner reads it; the gateway in the container runs as root and needs no
// more.
const hashFileMode = 0o600

// writeHashFile writes the hash file and returns its mode. An existing file is
// rewritten in place, because a single-file bind mount would never see a new
// inode, and keeps its mode and owner: replacing the hash must never widen
// who can read it. A new file gets hashFileMode.
func writeHashFile(path, content string) (os.FileMode, error) {
	if fi, err := os.Stat(path); err == nil {
		if err := hashstore.WriteInPlace(path, []byte(content)); err != nil {
			return 0, err
		}
		return fi.Mode().Perm(), nil
	}
	if err := hashstore.WriteFileSynced(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, hashFileMode, []byte(content)); err != nil {
		return 0, fmt.Errorf("writing the hash file: %w", err)
	}
	return hashFileMode, nil
}

// defaultHashFile is the hash file the commands act on without --hash-file:
// the server's variable when set (the same file the gateway reads), else the
// path `token generate` writes by default.
func defaultHashFile(getenv env) string {
	if v, ok := getenv("COMFYUI_AUTH_TOKEN_FILE"); ok && v != "" {
		return v
	}
	return filepath.Join(".secrets", "qwen-api-user.token")
}

func runTokenRotate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("comfyui-auth token rotate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hashFile := fs.String("hash-file", defaultHashFile(os.LookupEnv), "credential `file` to rotate in place (COMFYUI_AUTH_TOKEN_FILE)")
	envFile := fs.String("env-file", "", "where the new raw token goes (default: .env.generated beside the hash file)")
	keepOld := durationFlag(fs, "keep-old", 0, "after adding the new hash, wait this `long`, then remove the old hashes (Ctrl-C keeps both)")
	retireOld := boolFlag(fs, "retire-old", "only remove every hash but the newest; run it once every client uses the new token")
	cost := fs.Int("cost", 12, "bcrypt `cost` for the new hash (10..14)")
	user := fs.String("user", "", "rotate named user `NAME`'s token: its new NAME:<secret> goes to <tokens-dir>/NAME.token")
	tokensDir := fs.String("tokens-dir", "", "with --user: `folder` of the client token files (default: tokens/ beside the credential file)")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	set := explicitFlags(fs)
	if *user != "" && set["env-file"] {
		fmt.Fprintf(stderr, "%s: --env-file is for the unnamed token; a user's token goes to <tokens-dir>/%s.token (see --tokens-dir)\n", fs.Name(), *user)
		return 2
	}
	if *user == "" && set["tokens-dir"] {
		fmt.Fprintf(stderr, "%s: --tokens-dir goes with --user NAME\n", fs.Name())
		return 2
	}
	if *retireOld && *keepOld != 0 {
		fmt.Fprintf(stderr, "%s: --keep-old and --retire-old exclude each other: --keep-old adds a token and retires later, --retire-old only retires\n", fs.Name())
		return 2
	}
	if *keepOld < 0 {
		fmt.Fprintf(stderr, "%s: --keep-old must be positive, like 10m\n", fs.Name())
		return 2
	}
	if !checkCost(*cost, stderr, fs.Name()) {
		return 2
	}
	if *user != "" {
		o := userOpts{cmd: fs.Name(), hashFile: *hashFile, tokensDir: *tokensDir, cost: *cost}
		if *retireOld {
			return retireUser(*user, o, stdout, stderr)
		}
		return runUserRotate(ctx, *user, o, *keepOld != 0, keepOldFor(*keepOld, stdout), stdout, stderr)
	}
	if *retireOld {
		return retire(*hashFile, stdout, stderr)
	}
	// Rotating the unnamed token of a file without bare lines would add an
	// unnamed credential nobody asked for.
	if creds, err := hashstore.ReadFile(*hashFile); err == nil && hasNamedLines(creds) && !slices.Contains(creds.Users, "") {
		fmt.Fprintf(stderr, "%s: %s holds named users only (%s); nothing was changed: rotate a user's token with --user NAME\n", fs.Name(), *hashFile, hashstore.UserList(creds))
		return 1
	}

	if *envFile == "" {
		*envFile = filepath.Join(filepath.Dir(*hashFile), ".env.generated")
	}
	varName := envVarFor(strings.TrimSuffix(filepath.Base(*hashFile), ".token"))
	token, hash, err := newTokenPair(*cost)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 1
	}
	fp := hashstore.Fingerprint(hash)
	// The token file first, keeping its old content: if appending the hash
	// then fails, the old content is put back.
	oldEnv, oldEnvErr := os.ReadFile(*envFile)
	envExisted := oldEnvErr == nil
	if oldEnvErr != nil && !errors.Is(oldEnvErr, os.ErrNotExist) {
		fmt.Fprintf(stderr, "%s: cannot keep a copy of the token file %s to put back if the rotation fails (%v); nothing was changed: make it readable, or choose another file with --env-file\n", fs.Name(), *envFile, oldEnvErr)
		return 1
	}
	if err := writeEnvFile(*envFile, varName, token, fp, false); err != nil {
		fmt.Fprintf(stderr, "%s: %v; nothing was changed\n", fs.Name(), err)
		return 1
	}
	unlock, err := lockCredentialDir(*hashFile, stderr, fs.Name())
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		if rerr := restoreEnvFile(*envFile, oldEnv, envExisted); rerr != nil {
			fmt.Fprintf(stderr, "%s: putting the token file back failed too: %v; %s\n", fs.Name(), rerr, envFixHint(*envFile, envExisted))
		}
		return 1
	}
	creds, err := hashstore.AppendHash(*hashFile, hash)
	unlock()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		if rerr := restoreEnvFile(*envFile, oldEnv, envExisted); rerr != nil {
			fmt.Fprintf(stderr, "%s: putting the token file back failed too: %v\n"+
				"  %s now holds a NEW token (hash fingerprint %s) whose hash is NOT in %s: do not give it to clients, they would be refused.\n"+
				"  To fix: %s; then run `comfyui-auth token rotate` again once the error above is solved for %s.\n",
				fs.Name(), rerr, *envFile, fp, *hashFile, envFixHint(*envFile, envExisted), *hashFile)
		} else if envExisted {
			fmt.Fprintf(stderr, "%s: %s was put back as it was\n", fs.Name(), *envFile)
		} else {
			fmt.Fprintf(stderr, "%s: %s was removed again\n", fs.Name(), *envFile)
		}
		return 1
	}
	fmt.Fprintf(stdout, "added hash %d (fingerprint %s) to %s in place; the running gateway reloads it without restart, and the old token stays valid\n", len(creds.Hashes), fp, *hashFile)
	fmt.Fprintf(stdout, "new raw token: %s (mode 0600, %s); move clients to it:\n  %s\n", *envFile, varName, curlLine(*envFile, varName))
	retireCmd := "comfyui-auth token rotate --retire-old --hash-file " + shellQuote(*hashFile)
	if *keepOld == 0 {
		fmt.Fprintf(stdout, "once every client uses the new token, remove the old hash: %s\n", retireCmd)
		return 0
	}
	return keepOldFor(*keepOld, stdout)(ctx, retireCmd, func() int { return retire(*hashFile, stdout, stderr) })
}

// keepOldWait waits while the old and the new token are both valid, then
// calls retire; interrupted, it leaves both valid and prints retireCmd for
// later.
type keepOldWait func(ctx context.Context, retireCmd string, retire func() int) int

// keepOldFor is the --keep-old wait: d long, with about ten progress lines.
func keepOldFor(d time.Duration, stdout io.Writer) keepOldWait {
	return func(ctx context.Context, retireCmd string, retire func() int) int {
		ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		deadline := time.Now().Add(d)
		fmt.Fprintf(stdout, "both tokens are valid until %s; then the old hash is removed (Ctrl-C keeps both valid)\n", deadline.Format("15:04:05"))
		tick := time.NewTicker(progressEvery(d))
		defer tick.Stop()
		done := time.NewTimer(d)
		defer done.Stop()
		for {
			select {
			case <-ctx.Done():
				fmt.Fprintf(stdout, "interrupted: the old and the new token both stay valid; retire the old one later with: %s\n", retireCmd)
				return 1
			case <-tick.C:
				fmt.Fprintf(stdout, "  %s left before the old token is retired\n", time.Until(deadline).Round(time.Second))
			case <-done.C:
				return retire()
			}
		}
	}
}

// restoreEnvFile undoes writeEnvFile after a failed rotation: it puts the
// old content back (synced, mode 0600), or removes the file if there was
// none. An error here leaves a token file whose token the hash file does not
// accept, so the caller must tell the operator.
func restoreEnvFile(path string, old []byte, existed bool) error {
	if existed {
		return restoreFile(path, os.O_WRONLY|os.O_TRUNC, 0o600, old)
	}
	return removeFile(path)
}

// restoreFile and removeFile are what restoreEnvFile calls; tests make them
// fail to check that a failed rollback is reported.
var (
	restoreFile = hashstore.WriteFileSynced
	removeFile  = os.Remove
)

// envFixHint says how to undo the token file by hand.
func envFixHint(path string, existed bool) string {
	if existed {
		return fmt.Sprintf("put back your own copy of %s (its old token is the one clients use), or delete it", path)
	}
	return fmt.Sprintf("delete %s", path)
}

// progressEvery spaces progress lines so a long wait prints about ten.
func progressEvery(d time.Duration) time.Duration {
	return min(max(d/10, time.Second), time.Minute)
}

func retire(hashFile string, stdout, stderr io.Writer) int {
	unlock, err := lockCredentialDir(hashFile, stderr, "comfyui-auth token rotate")
	if err != nil {
		fmt.Fprintf(stderr, "comfyui-auth token rotate: %v\n", err)
		return 1
	}
	defer unlock()
	removed, kept, err := hashstore.RetireOld(hashFile)
	if err != nil {
		fmt.Fprintf(stderr, "comfyui-auth token rotate: %v\n", err)
		return 1
	}
	if len(removed) == 0 {
		fmt.Fprintf(stdout, "%s holds a single hash (fingerprint %s): nothing to retire\n", hashFile, kept)
		return 0
	}
	fmt.Fprintf(stdout, "retired %d old hash(es) (fingerprints %s) from %s in place; only hash %s is valid now, and clients still on the old token get 401\n",
		len(removed), strings.Join(removed, ", "), hashFile, kept)
	return 0
}

func runTokenCheck(args []string, stdin io.Reader, getenv env, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("comfyui-auth token check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hashFile := fs.String("hash-file", defaultHashFile(getenv), "credential `file` the server reads (COMFYUI_AUTH_TOKEN_FILE)")
	tokenFlag := fs.String("token", "", "the `value` to check; - reads it from stdin. Default: the first set of "+strings.Join(clientTokenVars, ", "))
	acceptHash, envErr := acceptHashFlag(fs, getenv)
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if envErr != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), envErr)
		return 2
	}
	value, source, err := pickToken(*tokenFlag, stdin, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 2
	}
	d := hashstore.DiagnoseFile(*hashFile, value, *acceptHash)
	fmt.Fprintf(stdout, "%s: %s\n", source, checkSentence(d, value))
	if d.OK() {
		return 0
	}
	return 1
}

// pickToken finds the value to check and names where it came from.
func pickToken(flagValue string, stdin io.Reader, getenv env) (value, source string, err error) {
	switch flagValue {
	case "-":
		b, err := io.ReadAll(io.LimitReader(stdin, 4096))
		if err != nil {
			return "", "", fmt.Errorf("reading the token from stdin: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), "token from stdin", nil
	case "":
	default:
		return flagValue, "--token", nil
	}
	for _, n := range clientTokenVars {
		if v, ok := getenv(n); ok && v != "" {
			return v, n, nil
		}
	}
	return "", "", fmt.Errorf("no token to check: pass --token (or --token - to read it from stdin), or set one of %s", strings.Join(clientTokenVars, ", "))
}
