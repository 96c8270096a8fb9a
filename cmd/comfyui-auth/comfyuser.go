package main

// ComfyUI runs custom nodes, which are arbitrary Python from the internet, so
// the entrypoint runs it as an unprivileged user that cannot reach the
// gateway's secrets: the hash file and .env.generated (mounted under
// /etc/comfyui-auth, a root-only directory), the state directory (session key,
// revocations), and the gateway's environment (/proc/<pid>/environ of a root
// process is closed to other users). The gateway stays root: it must read the
// host's secret files whatever their owner.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// defaultComfyUID is ComfyUI's user and group by default: the first
	// user of most Linux hosts, so that the files ComfyUI writes into the
	// bind-mounted workspace belong to that user on the host.
	defaultComfyUID = 1000
	// defaultComfyHome is ComfyUI's HOME when the inherited one (/root) is
	// not its own: pip, Hugging Face and torch write caches there.
	defaultComfyHome = "/home/comfyui"
	// secretsRoot holds containerSecretsDir. The entrypoint keeps it root's
	// and 0700: that, not the modes of the host's files (often owned by the
	// host user, uid 1000 like ComfyUI), is what keeps ComfyUI out.
	secretsRoot = "/etc/comfyui-auth"
)

// comfyUser is the identity ComfyUI runs under.
type comfyUser struct {
	UID, GID int
	// Chown gives the root-owned entries of the workspace to UID:GID at
	// start (COMFYUI_CHOWN, default true).
	Chown bool
	// Home is the HOME given to ComfyUI when the inherited one is root's.
	Home string
	// SecretsRoot is made root's and 0700 at start when it exists.
	SecretsRoot string
	// Secrets are the paths ComfyUI must not read: the hash file, the
	// session key file, the state directory, the TLS key, and the hash
	// file's directory, where `token generate` puts .env.generated.
	Secrets []string
	// StateDir is the gateway's writable state directory, created 0700.
	StateDir string
}

// comfyUserFrom reads COMFYUI_UID, COMFYUI_GID and COMFYUI_CHOWN, and lists
// the gateway's secrets from its environment.
func comfyUserFrom(env map[string]string, gatewayEnv []string) (*comfyUser, error) {
	u := &comfyUser{UID: defaultComfyUID, GID: -1, Chown: true, Home: defaultComfyHome, SecretsRoot: secretsRoot}
	for _, v := range []struct {
		name string
		dst  *int
	}{{"COMFYUI_UID", &u.UID}, {"COMFYUI_GID", &u.GID}} {
		s := strings.TrimSpace(env[v.name])
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 1<<31-2 {
			return nil, fmt.Errorf("%s=%q is not a numeric id (for example 1000); names are not looked up, because the image has no entry for the host's users", v.name, env[v.name])
		}
		*v.dst = n
	}
	if u.GID < 0 {
		u.GID = u.UID
	}
	if s := strings.TrimSpace(env["COMFYUI_CHOWN"]); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, fmt.Errorf("COMFYUI_CHOWN=%q is not true or false", env["COMFYUI_CHOWN"])
		}
		u.Chown = b
	}
	g := envMap(gatewayEnv)
	if p := g["COMFYUI_AUTH_TOKEN_FILE"]; p != "" {
		u.Secrets = append(u.Secrets, filepath.Dir(filepath.Clean(p)))
	}
	for _, k := range []string{"COMFYUI_AUTH_TOKEN_FILE", "COMFYUI_AUTH_SECRET_KEY_FILE", "COMFYUI_AUTH_STATE_DIR", "COMFYUI_AUTH_TLS_KEY"} {
		if p := g[k]; p != "" {
			u.Secrets = append(u.Secrets, filepath.Clean(p))
		}
	}
	u.StateDir = g["COMFYUI_AUTH_STATE_DIR"]
	return u, nil
}

// defaultContainerHashFile picks the gateway's hash file when COMFYUI_AUTH_TOKEN_FILE
// is unset: the image's location, unless only the old one (inside ComfyUI's
// folder, where older compose files mounted .secrets) exists.
func defaultContainerHashFile(current, legacy string) string {
	if _, err := os.Stat(current); err != nil {
		if _, err := os.Stat(legacy); err == nil {
			return legacy
		}
	}
	return current
}

// credential is the process credential for ComfyUI: its uid and gid and
// no supplementary groups (root's would let it read group-root files).
func (u *comfyUser) credential() *syscall.Credential {
	return &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID), Groups: []uint32{}}
}

// isSecret reports whether path is, or lies under, one of the secrets, or is
// a ".secrets" folder: the walk of comfyDir never gives those to ComfyUI. A
// secret directory that contains all of comfyDir (a hash file put straight
// into ComfyUI's folder) protects only its files, not the whole walk.
func (u *comfyUser) isSecret(path, comfyDir string) bool {
	if filepath.Base(path) == ".secrets" {
		return true
	}
	for _, s := range u.Secrets {
		if s == "/" || s == comfyDir || strings.HasPrefix(comfyDir, s+"/") {
			continue
		}
		if path == s || strings.HasPrefix(path, s+"/") {
			return true
		}
	}
	return false
}

// prepare readies the container for ComfyUI's user before ComfyUI starts and
// logs what it changed and what is still wrong. It returns ComfyUI's
// environment with HOME, USER and LOGNAME set for that user.
func (u *comfyUser) prepare(s *supervisor, comfyDir string, env []string) []string {
	if u.UID == 0 {
		s.logf("WARNING: ComfyUI runs as root (COMFYUI_UID=0). Custom nodes and workflows can then read the hash file, .env.generated, the session key and the gateway's environment: this gives up the protection of the credentials against ComfyUI. Unset COMFYUI_UID to run it as %d.", defaultComfyUID)
		return env
	}
	if u.SecretsRoot != "" {
		lockDown(s, u.SecretsRoot, "the secrets' parent directory")
	}
	if u.StateDir != "" {
		if err := os.MkdirAll(u.StateDir, 0o700); err != nil {
			s.logf("cannot create the gateway's state directory %s (COMFYUI_AUTH_STATE_DIR): %v", u.StateDir, err)
		} else {
			lockDown(s, u.StateDir, "the gateway's state directory")
		}
	}
	if u.Chown {
		u.chownWorkspace(s, comfyDir)
	}
	var unwritable []string
	for _, sub := range []string{"", "output", "input", "temp", "user", "custom_nodes", "models", "venv"} {
		p := filepath.Join(comfyDir, sub)
		fi, err := os.Stat(p)
		if err != nil || !fi.IsDir() {
			continue
		}
		if ok, _ := accessibleBy(p, u.UID, u.GID, 3); !ok {
			unwritable = append(unwritable, fmt.Sprintf("%s (owner %s)", p, ownerOf(fi)))
		}
	}
	if len(unwritable) > 0 {
		s.logf("WARNING: ComfyUI's user %d:%d cannot write %s. Set COMFYUI_UID and COMFYUI_GID to the owner of these folders on the host, or chown them to %d:%d there.",
			u.UID, u.GID, strings.Join(unwritable, ", "), u.UID, u.GID)
	}
	for _, p := range u.readableSecrets() {
		where := ""
		if strings.HasPrefix(p, filepath.Clean(comfyDir)+"/") {
			where = fmt.Sprintf(" It lies inside ComfyUI's folder %s, where older compose files mounted .secrets: mount the host's .secrets directory at %s instead and set COMFYUI_AUTH_TOKEN_FILE=%s/qwen-api-user.token (see README, Docker).", comfyDir, containerSecretsDir, containerSecretsDir)
		}
		s.logf("WARNING: %s is readable by ComfyUI's user %d:%d, so custom nodes can read it.%s", p, u.UID, u.GID, where)
	}
	env = u.homeEnv(s, env)
	s.logf("ComfyUI runs as %d:%d, without supplementary groups or privilege gain; the gateway keeps the secrets.", u.UID, u.GID)
	return env
}

// lockDown makes dir root's and 0700 when it is not.
func lockDown(s *supervisor, dir, what string) {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() {
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid == 0 && st.Gid == 0 && fi.Mode().Perm() == 0o700 {
		return
	}
	err = os.Lchown(dir, 0, 0)
	if err == nil {
		err = os.Chmod(dir, 0o700)
	}
	if err != nil {
		s.logf("WARNING: cannot make %s (%s) root's and 0700: %v", dir, what, err)
		return
	}
	s.logf("made %s (%s) root's and 0700 (it was %s, mode %04o), so that ComfyUI's user cannot look inside.", dir, what, ownerOf(fi), fi.Mode().Perm())
}

// chownWorkspace gives the entries of comfyDir that root owns to ComfyUI's
// user. They were written by an image that ran ComfyUI as root, and ComfyUI
// must keep writing outputs, its user folder, custom nodes and its venv.
// Entries owned by anyone else were put there on purpose and are left alone,
// and so are the secrets, symbolic links' targets (Lchown changes the link)
// and root-owned files with several hard links (their other names may lie
// outside the workspace). It runs before ComfyUI starts, so no process of
// ComfyUI's user can swap a directory for a link during the walk.
func (u *comfyUser) chownWorkspace(s *supervisor, comfyDir string) {
	began := time.Now()
	var changed, hardlinked, failed int
	var firstErr error
	_ = filepath.WalkDir(comfyDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			return nil
		}
		if u.isSecret(path, filepath.Clean(comfyDir)) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || st.Uid != 0 {
			return nil
		}
		if fi.Mode().IsRegular() && st.Nlink > 1 {
			hardlinked++
			return nil
		}
		if err := os.Lchown(path, u.UID, u.GID); err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			if d.IsDir() && errors.Is(err, syscall.EROFS) {
				return fs.SkipDir // a read-only mount: nothing below can change
			}
			return nil
		}
		changed++
		return nil
	})
	if changed > 0 {
		s.logf("gave %d files and folders under %s to ComfyUI's user %d:%d in %s: they belonged to root, written by an image that ran ComfyUI as root. Their owner changes on the host too (COMFYUI_CHOWN=false turns this off).",
			changed, comfyDir, u.UID, u.GID, time.Since(began).Round(time.Millisecond))
	}
	if hardlinked > 0 {
		s.logf("left %d root-owned files with several hard links under %s to root: changing one would change its other names too, which may lie outside the workspace.", hardlinked, comfyDir)
	}
	if failed > 0 {
		s.logf("WARNING: could not give %d entries under %s to %d:%d (first: %v); ComfyUI may be unable to write them.", failed, comfyDir, u.UID, u.GID, firstErr)
	}
}

// readableSecrets lists the secret paths ComfyUI's user could read: each
// secret file, and each secret directory with its entries.
func (u *comfyUser) readableSecrets() []string {
	seen := map[string]bool{}
	var out []string
	check := func(p string, bits uint32) {
		if seen[p] {
			return
		}
		seen[p] = true
		if ok, _ := accessibleBy(p, u.UID, u.GID, bits); ok {
			out = append(out, p)
		}
	}
	for _, sec := range u.Secrets {
		if fi, err := os.Stat(sec); err != nil || !fi.IsDir() {
			check(sec, 4)
			continue
		}
		check(sec, 5) // listing it shows what is there
		entries, _ := os.ReadDir(sec)
		for _, e := range entries {
			check(filepath.Join(sec, e.Name()), 4)
		}
	}
	return out
}

// homeEnv gives ComfyUI a HOME of its own when the inherited one is root's
// (pip, Hugging Face and torch write caches there), and a USER and LOGNAME:
// the image has no passwd entry for the uid, and Python's getpass.getuser(),
// which torch calls, fails without them.
func (u *comfyUser) homeEnv(s *supervisor, env []string) []string {
	m := envMap(env)
	if h := m["HOME"]; h == "" || h == "/root" {
		if err := os.MkdirAll(u.Home, 0o700); err == nil {
			if err := os.Lchown(u.Home, u.UID, u.GID); err != nil {
				s.logf("cannot give %s to %d:%d: %v", u.Home, u.UID, u.GID, err)
			}
		} else {
			s.logf("cannot create ComfyUI's home %s: %v", u.Home, err)
		}
		env = withEnv(env, "HOME", u.Home)
	}
	for _, k := range []string{"USER", "LOGNAME"} {
		if v := m[k]; v == "" || v == "root" {
			env = withEnv(env, k, "comfyui")
		}
	}
	return env
}

// accessibleBy reports whether a process with uid and gid and no
// supplementary groups may access path with the permission bits (4 read,
// 2 write, 1 search), judging by mode bits: search on every directory on the
// way, then bits on path itself. ACLs and security modules can only narrow
// what the bits allow for such a process, so a "false" is reliable; the
// container end-to-end test checks the real thing.
func accessibleBy(path string, uid, gid int, bits uint32) (bool, error) {
	if uid == 0 {
		return true, nil
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return false, err
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return false, err
	}
	for dir := filepath.Dir(real); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil {
			return false, err
		}
		if !permits(fi, uid, gid, 1) {
			return false, nil
		}
		if dir == "/" {
			break
		}
	}
	fi, err := os.Stat(real)
	if err != nil {
		return false, err
	}
	return permits(fi, uid, gid, bits), nil
}

func permits(fi os.FileInfo, uid, gid int, bits uint32) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	m := uint32(fi.Mode().Perm())
	switch {
	case int(st.Uid) == uid:
		m >>= 6
	case int(st.Gid) == gid:
		m >>= 3
	}
	return m&bits == bits
}

func ownerOf(fi os.FileInfo) string {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
	}
	return "unknown"
}
