package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// needRoot skips tests that change users: only root can.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run ComfyUI as another user (CI runs the suite as root)")
	}
}

// openDir is a temp dir that other users can enter (t.TempDir's are 0700
// under a 0700 parent).
func openDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "comfyuser-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestComfyUIRunsUnprivilegedWithoutPrivilegeGain: ComfyUI gets the
// configured uid and gid, no supplementary groups, no capabilities and
// no_new_privs, while the gateway stays root; ComfyUI's exit status still
// becomes the entrypoint's.
func TestComfyUIRunsUnprivilegedWithoutPrivilegeGain(t *testing.T) {
	needRoot(t)
	status := `grep -E '^(Uid|Gid|Groups|NoNewPrivs|CapEff):' /proc/self/status | sed "s/^/$0 /"`
	dir := openDir(t)
	ready := filepath.Join(dir, "gateway-ready")
	cfg := testConfig(t, "", "")
	// ComfyUI exits only once the gateway has printed its own status.
	cfg.ComfyCommand = []string{"sh", "-c", status + "; while [ ! -e " + ready + " ]; do sleep 0.01; done; exit 3", "comfy"}
	cfg.GatewayCommand = []string{"sh", "-c", status + "; touch " + ready + "; exec sleep 30", "gateway"}
	cfg.ComfyDir = dir
	cfg.RunAs = &comfyUser{UID: 65534, GID: 65533, Home: filepath.Join(cfg.ComfyDir, "home")}
	s := startSupervisor(t, cfg)
	if code := s.wait(t, 10*time.Second); code != 3 {
		t.Fatalf("exit code = %d, want ComfyUI's 3; stderr:\n%s", code, s.errOut)
	}
	out := s.out.String()
	for _, want := range []string{
		`(?m)^comfy Uid:\s+65534\s+65534\s+65534\s+65534$`,
		`(?m)^comfy Gid:\s+65533\s+65533\s+65533\s+65533$`,
		`(?m)^comfy Groups:\s*$`,
		`(?m)^comfy NoNewPrivs:\s+1$`,
		`(?m)^comfy CapEff:\s+0+$`,
		`(?m)^gateway Uid:\s+0\s`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("no line matching %s in:\n%s", want, out)
		}
	}
}

// TestStopSignalsReachUnprivilegedComfyUI: dropping ComfyUI's privileges
// does not stop SIGTERM from reaching it, nor its exit from being reaped.
func TestStopSignalsReachUnprivilegedComfyUI(t *testing.T) {
	needRoot(t)
	loop := "while :; do sleep 0.05; done"
	cfg := testConfig(t,
		"trap 'echo comfy-got-signal; exit 0' TERM; echo comfy-ready; "+loop,
		"trap 'echo gateway-got-signal; exit 0' TERM; echo gateway-ready; "+loop)
	cfg.ComfyDir = openDir(t)
	cfg.RunAs = &comfyUser{UID: 65534, GID: 65534, Home: filepath.Join(cfg.ComfyDir, "home")}
	s := startSupervisor(t, cfg)
	waitFor(t, "both children to start", 10*time.Second, func() bool {
		out := s.out.String()
		return strings.Contains(out, "comfy-ready") && strings.Contains(out, "gateway-ready")
	})
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := s.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code = %d, want 0; stderr:\n%s", code, s.errOut)
	}
	if out := s.out.String(); !strings.Contains(out, "comfy-got-signal") || !strings.Contains(out, "gateway-got-signal") {
		t.Fatalf("SIGTERM did not reach both; stdout:\n%s", out)
	}
}

// secretLayout builds the container's layout in a temp dir: a workspace
// written by root (as an image running ComfyUI as root leaves it), the secrets mounted under a
// 0700 root directory with host modes that ComfyUI's uid would otherwise
// pass (owned by that uid, 0600, and a world-readable file), and a state
// directory.
type secretLayout struct {
	root, comfyDir, secretsRoot, hashFile, envFile, stateDir, stateFile string
}

func newSecretLayout(t *testing.T, uid int) secretLayout {
	t.Helper()
	root := openDir(t)
	l := secretLayout{
		root:        root,
		comfyDir:    filepath.Join(root, "workspace"),
		secretsRoot: filepath.Join(root, "etc-comfyui-auth"),
		stateDir:    filepath.Join(root, "state"),
	}
	secrets := filepath.Join(l.secretsRoot, "secrets")
	l.hashFile = filepath.Join(secrets, "qwen-api-user.token")
	l.envFile = filepath.Join(secrets, ".env.generated")
	l.stateFile = filepath.Join(l.stateDir, "session.key")
	for _, d := range []string{filepath.Join(l.comfyDir, "output"), filepath.Join(l.comfyDir, "venv", "bin"), secrets, l.stateDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string, mode os.FileMode) {
		if err := os.WriteFile(p, []byte("secret "+filepath.Base(p)+"\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	write(l.hashFile, 0o600)
	write(l.envFile, 0o600)
	write(l.stateFile, 0o644)
	write(filepath.Join(l.comfyDir, "output", "old.png"), 0o644)
	// The host user who made .secrets has ComfyUI's uid.
	for _, p := range []string{secrets, l.hashFile, l.envFile} {
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// TestComfyUICannotReadTheGatewaysSecrets runs the entrypoint's own
// configuration as root with ComfyUI as an unprivileged uid whose "ComfyUI"
// tries to read every secret and the gateway's environment, and to write its
// output folder, which root wrote before. Reads must all fail, the write must
// succeed, and the secrets keep their owner.
func TestComfyUICannotReadTheGatewaysSecrets(t *testing.T) {
	needRoot(t)
	const uid = 65534
	l := newSecretLayout(t, uid)
	try := fmt.Sprintf(`for f in %s %s %s %s /proc/$PPID/environ; do cat "$f" >/dev/null 2>&1 && echo "LEAK $f"; done
ls %s >/dev/null 2>&1 && echo "LEAK listing"
echo new > output/new.png && echo >> output/old.png && echo WROTE
touch "$HOME/cache" && echo HOME-OK
exit 0`, l.hashFile, l.envFile, l.stateFile, l.stateDir, filepath.Dir(l.hashFile))
	t.Setenv("COMFYUI_DIR", l.comfyDir)
	t.Setenv("COMFYUI_UID", fmt.Sprint(uid))
	t.Setenv("COMFYUI_AUTH_TOKEN_FILE", l.hashFile)
	t.Setenv("COMFYUI_AUTH_STATE_DIR", l.stateDir)
	t.Setenv("SECRET_KEY", "session-key-must-not-leak")
	cfg, err := entrypointConfigFrom([]string{"--", "sh", "-c", try}, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	cfg.RunAs.SecretsRoot = l.secretsRoot
	cfg.RunAs.Home = filepath.Join(l.root, "home")
	cfg.GatewayPath = ""
	cfg.GatewayCommand = []string{"sh", "-c", "exec sleep 30"}
	s := startSupervisor(t, cfg)
	if code := s.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s\nstdout:\n%s", code, s.errOut, s.out)
	}
	out := s.out.String()
	if strings.Contains(out, "LEAK") {
		t.Errorf("ComfyUI's user read a secret:\n%s", out)
	}
	if !strings.Contains(out, "WROTE") || !strings.Contains(out, "HOME-OK") {
		t.Errorf("ComfyUI could not write its output folder or its home:\n%s\nstderr:\n%s", out, s.errOut)
	}
	for p, want := range map[string]int{l.hashFile: uid, filepath.Join(l.comfyDir, "output", "old.png"): uid} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := int(fi.Sys().(*syscall.Stat_t).Uid); got != want {
			t.Errorf("%s is owned by %d, want %d", p, got, want)
		}
	}
	fi, _ := os.Stat(l.secretsRoot)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("%s has mode %04o, want 0700", l.secretsRoot, fi.Mode().Perm())
	}
	if msg := s.errOut.String(); !strings.Contains(msg, "made "+l.secretsRoot) || !strings.Contains(msg, "gave ") || strings.Contains(msg, "WARNING") {
		t.Errorf("stderr should report the lock-down and the chown, and warn of nothing:\n%s", msg)
	}
}

// TestSecretsInsideComfyUIAreReportedAsReadable: with the old layout, the
// .secrets folder inside ComfyUI's folder, the gateway still starts, the
// walk leaves .secrets alone, and a warning names each readable secret and
// where to move it.
func TestSecretsInsideComfyUIAreReportedAsReadable(t *testing.T) {
	needRoot(t)
	root := openDir(t)
	comfyDir := filepath.Join(root, "ComfyUI")
	secrets := filepath.Join(comfyDir, ".secrets")
	if err := os.MkdirAll(secrets, 0o755); err != nil {
		t.Fatal(err)
	}
	hashFile := filepath.Join(secrets, "qwen-api-user.token")
	if err := os.WriteFile(hashFile, []byte("hash\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secrets, ".env.generated"), []byte("T=x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COMFYUI_DIR", comfyDir)
	t.Setenv("COMFYUI_UID", "65534")
	t.Setenv("COMFYUI_AUTH_TOKEN_FILE", hashFile)
	cfg, err := entrypointConfigFrom([]string{"--", "sh", "-c", "cat " + hashFile + " && echo LEAK"}, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	cfg.RunAs.SecretsRoot = ""
	cfg.RunAs.Home = filepath.Join(root, "home")
	cfg.GatewayPath = ""
	cfg.GatewayCommand = []string{"sh", "-c", "exec sleep 30"}
	s := startSupervisor(t, cfg)
	s.wait(t, 10*time.Second)
	msg := s.errOut.String()
	if !strings.Contains(msg, "WARNING: "+hashFile+" is readable by ComfyUI's user 65534:65534") || !strings.Contains(msg, "mount the host's .secrets directory at /etc/comfyui-auth/secrets") {
		t.Errorf("no warning naming %s and the fix:\n%s", hashFile, msg)
	}
	if strings.Contains(msg, ".env.generated is readable") {
		t.Errorf("a 0600 root file was reported readable:\n%s", msg)
	}
	for _, p := range []string{secrets, hashFile} {
		fi, _ := os.Stat(p)
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 0 {
			t.Errorf("the workspace walk gave %s to %d", p, uid)
		}
	}
	if !strings.Contains(s.out.String(), "LEAK") {
		t.Errorf("the test's premise failed: the 0644 file was not readable, so the warning proves nothing")
	}
}

func TestComfyUserSettings(t *testing.T) {
	for _, tt := range []struct {
		env      []string
		uid, gid int
		chown    bool
		bad      bool
	}{
		{nil, 1000, 1000, true, false},
		{[]string{"COMFYUI_UID=1001"}, 1001, 1001, true, false},
		{[]string{"COMFYUI_UID=1001", "COMFYUI_GID=100", "COMFYUI_CHOWN=false"}, 1001, 100, false, false},
		{[]string{"COMFYUI_UID=0"}, 0, 0, true, false},
		{[]string{"COMFYUI_UID=comfy"}, 0, 0, false, true},
		{[]string{"COMFYUI_GID=-1"}, 0, 0, false, true},
		{[]string{"COMFYUI_CHOWN=maybe"}, 0, 0, false, true},
	} {
		cfg, err := entrypointConfigFrom(nil, append([]string{"COMFYUI_AUTH_TOKEN_FILE=/s/token"}, tt.env...))
		if tt.bad {
			if err == nil {
				t.Errorf("%v was accepted", tt.env)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", tt.env, err)
		}
		if u := cfg.RunAs; u.UID != tt.uid || u.GID != tt.gid || u.Chown != tt.chown {
			t.Errorf("%v: got %d:%d chown=%v, want %d:%d chown=%v", tt.env, u.UID, u.GID, u.Chown, tt.uid, tt.gid, tt.chown)
		}
	}
}

// TestUnsetTokenFileFindsTheOldMount: without COMFYUI_AUTH_TOKEN_FILE the
// image's location is used, unless only the old one inside ComfyUI's folder
// exists, so a container started with the old mount keeps authenticating.
func TestUnsetTokenFileFindsTheOldMount(t *testing.T) {
	dir := t.TempDir()
	current, legacy := filepath.Join(dir, "etc", "token"), filepath.Join(dir, "ComfyUI", ".secrets", "token")
	if got := defaultContainerHashFile(current, legacy); got != current {
		t.Errorf("with neither file: %s, want %s", got, current)
	}
	os.MkdirAll(filepath.Dir(legacy), 0o700)
	os.WriteFile(legacy, []byte("h"), 0o600)
	if got := defaultContainerHashFile(current, legacy); got != legacy {
		t.Errorf("with the old file only: %s, want %s", got, legacy)
	}
	os.MkdirAll(filepath.Dir(current), 0o700)
	os.WriteFile(current, []byte("h"), 0o600)
	if got := defaultContainerHashFile(current, legacy); got != current {
		t.Errorf("with both: %s, want %s", got, current)
	}
}
