package main

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
	"golang.org/x/crypto/bcrypt"
)

// restartable is one deployment of the real binary: its hash file, state
// directory and environment stay while the process is killed and started
// again, as when a ComfyUI crash restarts the container.
type restartable struct {
	t        *testing.T
	bin      string
	upstream string
	hashFile string
	env      []string
	args     []string
	p        *gatewayProcess
}

// buildGateway builds ./cmd/comfyui-auth into a temporary directory.
func buildGateway(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "comfyui-auth")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// newDeployment writes a hash file for password in a fresh directory.
// env adds variables (SECRET_KEY=...); args adds flags (--state-dir ...).
func newDeployment(t *testing.T, bin, upstream, password string, env []string, args ...string) *restartable {
	t.Helper()
	d := &restartable{t: t, bin: bin, upstream: upstream, hashFile: filepath.Join(t.TempDir(), "token"),
		env: append([]string{"PATH=" + os.Getenv("PATH")}, env...), args: args}
	d.setPassword(password)
	return d
}

func (d *restartable) setPassword(password string) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		d.t.Fatal(err)
	}
	if err := os.WriteFile(d.hashFile, h, 0o644); err != nil {
		d.t.Fatal(err)
	}
}

// command returns the child for a start on addr.
func (d *restartable) command(addr string) (*exec.Cmd, *lockedBuffer) {
	args := append([]string{"serve", "--listen", addr, "--upstream", d.upstream, "--hash-file", d.hashFile,
		"--poll-interval", "200ms"}, d.args...)
	cmd := exec.Command(d.bin, args...)
	cmd.Env = d.env
	out := &lockedBuffer{}
	cmd.Stderr = out
	return cmd, out
}

// start runs the gateway on a free port and waits until it answers.
func (d *restartable) start() {
	t := d.t
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd, out := d.command(addr)
	p := &gatewayProcess{cmd: cmd, addr: addr, stderr: out, done: make(chan error, 1)}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	waitFor(t, "the gateway answers /healthz", 15*time.Second, func() bool {
		select {
		case <-p.done:
			t.Fatalf("the gateway exited at start: %s", out)
		default:
		}
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	d.p = p
}

// crash kills the gateway without a chance to clean up (SIGKILL): whatever
// it promised before answering must already be on disk.
func (d *restartable) crash() {
	d.t.Helper()
	if err := d.p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		d.t.Fatal(err)
	}
	<-d.p.done
}

func (d *restartable) restart() { d.crash(); d.start() }

var noFollow = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// login posts password from the gateway's own origin and returns the
// session cookie's value, "" when none was set.
func (d *restartable) login(password string) string {
	d.t.Helper()
	req, _ := http.NewRequest("POST", "http://"+d.p.addr+"/login", strings.NewReader(url.Values{"password": {password}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://"+d.p.addr)
	resp, err := noFollow.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == "comfyui_auth_session" && c.Value != "" {
			return c.Value
		}
	}
	return ""
}

// status is the answer to an API call carrying cookie.
func (d *restartable) status(path, cookie string) int {
	d.t.Helper()
	req, _ := http.NewRequest("GET", "http://"+d.p.addr+path, nil)
	req.Header.Set("Cookie", "comfyui_auth_session="+cookie)
	resp, err := noFollow.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// expect checks each named cookie's answer on /api/system_stats.
func (d *restartable) expect(when string, want map[string]int, cookies map[string]string) {
	d.t.Helper()
	for name, code := range want {
		if got := d.status("/api/system_stats", cookies[name]); got != code {
			d.t.Errorf("%s: session %s = %d, want %d", when, name, got, code)
		}
	}
}

// waitLog waits for the running gateway's log (written asynchronously) to
// hold every one of parts.
func (d *restartable) waitLog(what string, parts ...string) {
	d.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		log := d.p.stderr.String()
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(log, p)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s: not in the log within 10 s:\n%s", what, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *restartable) logout(cookie string) {
	d.t.Helper()
	if code := d.status("/logout", cookie); code != http.StatusFound {
		d.t.Fatalf("logout = %d", code)
	}
}

const restartKey = "SECRET_KEY=restart-test-key-0123456789abcdef"

// TestLogoutsAndCredentialChangesHoldAcrossRestarts is the whole life of a
// deployment with SECRET_KEY and --state-dir, restarted by SIGKILL (a crash)
// each time: a logout survives the restart, and so does the session that
// was not logged out; after the password changes, the old sessions stay
// refused across a restart, and a session issued after the change survives
// one.
func TestLogoutsAndCredentialChangesHoldAcrossRestarts(t *testing.T) {
	_, up := fakecomfy.Start(t, fakecomfy.Options{})
	state := filepath.Join(t.TempDir(), "state")
	d := newDeployment(t, buildGateway(t), up.URL, "first password", []string{restartKey}, "--state-dir", state)
	d.start()
	c := map[string]string{"out": d.login("first password"), "kept": d.login("first password")}
	if c["out"] == "" || c["kept"] == "" {
		t.Fatalf("login failed: %s", d.p.stderr)
	}
	d.logout(c["out"])
	d.expect("before any restart", map[string]int{"out": 401, "kept": 200}, c)

	d.restart()
	d.expect("after a restart", map[string]int{"out": 401, "kept": 200}, c)

	d.setPassword("second password")
	waitFor(t, "the password change is loaded", 10*time.Second, func() bool { return d.status("/api/system_stats", c["kept"]) == 401 })
	c["new"] = d.login("second password")
	d.expect("after the password change", map[string]int{"out": 401, "kept": 401, "new": 200}, c)

	d.restart()
	d.expect("after the password change and a restart", map[string]int{"out": 401, "kept": 401, "new": 200}, c)

	for p, want := range map[string]os.FileMode{state: 0o700, filepath.Join(state, "sessions.json"): 0o600} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v, mode %v; want %v", p, err, fi.Mode().Perm(), want)
		}
	}
	if _, err := os.Stat(filepath.Join(state, "session.key")); err == nil {
		t.Error("a session key was generated although SECRET_KEY is set")
	}
}

// TestTwoDeploymentsSharingAKeyRefuseEachOthersCookies runs two gateways
// with the same SECRET_KEY and different passwords at once; the second even
// starts from a copy of the first one's state directory, so only the
// binding to the credential tells their cookies apart.
func TestTwoDeploymentsSharingAKeyRefuseEachOthersCookies(t *testing.T) {
	_, up := fakecomfy.Start(t, fakecomfy.Options{})
	bin := buildGateway(t)
	stateA, stateB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	a := newDeployment(t, bin, up.URL, "password A", []string{restartKey}, "--state-dir", stateA)
	a.start()
	fromA := a.login("password A")
	must(t, os.MkdirAll(stateB, 0o700))
	data, err := os.ReadFile(filepath.Join(stateA, "sessions.json"))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(stateB, "sessions.json"), data, 0o600))

	b := newDeployment(t, bin, up.URL, "password B", []string{restartKey}, "--state-dir", stateB)
	b.start()
	fromB := b.login("password B")
	if fromA == "" || fromB == "" {
		t.Fatal("login failed")
	}
	if code := a.status("/api/system_stats", fromA); code != 200 {
		t.Fatalf("control: A's cookie at A = %d", code)
	}
	if code := b.status("/api/system_stats", fromA); code != 401 {
		t.Errorf("A's cookie at B (same key, another credential) = %d, want 401", code)
	}
	if code := a.status("/api/system_stats", fromB); code != 401 {
		t.Errorf("B's cookie at A (same key, another credential) = %d, want 401", code)
	}
}

// TestStateDirAloneKeepsAGeneratedKeyAndSessions: with --state-dir and no
// SECRET_KEY, the gateway generates its key there (0600) and a session
// survives a restart.
func TestStateDirAloneKeepsAGeneratedKeyAndSessions(t *testing.T) {
	_, up := fakecomfy.Start(t, fakecomfy.Options{})
	state := filepath.Join(t.TempDir(), "state")
	d := newDeployment(t, buildGateway(t), up.URL, "pw", nil, "--state-dir", state)
	d.start()
	c := map[string]string{"s": d.login("pw")}
	d.restart()
	d.expect("after a restart", map[string]int{"s": 200}, c)
	fi, err := os.Stat(filepath.Join(state, "session.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("generated key: %v %v", err, fi)
	}
}

// TestWithoutStateDirARestartEndsEverySession: with SECRET_KEY but no
// --state-dir, logouts cannot be kept, so every session ends at a restart
// rather than a logged-out one coming back; the start-up log says so.
func TestWithoutStateDirARestartEndsEverySession(t *testing.T) {
	_, up := fakecomfy.Start(t, fakecomfy.Options{})
	d := newDeployment(t, buildGateway(t), up.URL, "pw", []string{restartKey})
	d.start()
	c := map[string]string{"out": d.login("pw"), "kept": d.login("pw")}
	d.logout(c["out"])
	d.expect("before the restart", map[string]int{"out": 401, "kept": 200}, c)
	d.restart()
	d.expect("after the restart", map[string]int{"out": 401, "kept": 401}, c)
	d.waitLog("the start-up log says what a restart does", "no --state-dir", "every browser session ends when the gateway restarts")
	c["new"] = d.login("pw")
	d.expect("a new login", map[string]int{"new": 200}, c)
}

// TestDamagedStateEndsOlderSessionsAndUnreadableStateStopsTheStart: a
// sessions.json that is not valid cannot say which sessions were logged
// out, so every session issued before is ended, the error is logged and the
// file is written afresh; a state that cannot be read at all, or a state
// directory that is not one, stops the gateway with a sentence saying what
// to do.
func TestDamagedStateEndsOlderSessionsAndUnreadableStateStopsTheStart(t *testing.T) {
	_, up := fakecomfy.Start(t, fakecomfy.Options{})
	state := filepath.Join(t.TempDir(), "state")
	file := filepath.Join(state, "sessions.json")
	d := newDeployment(t, buildGateway(t), up.URL, "pw", []string{restartKey}, "--state-dir", state)
	d.start()
	c := map[string]string{"before": d.login("pw")}
	d.crash()
	must(t, os.WriteFile(file, []byte(`{"format":1,"epoch":"00`), 0o600)) // cut short
	d.start()
	d.expect("after the damage", map[string]int{"before": 401}, c)
	d.waitLog("the damaged state is reported", "is not valid", "every user session issued before this start is ended")
	var f map[string]any
	data, err := os.ReadFile(file)
	must(t, err)
	if err := json.Unmarshal(data, &f); err != nil {
		t.Errorf("the state file was not written afresh: %v: %q", err, data)
	}
	c["after"] = d.login("pw")
	d.restart()
	d.expect("a session from after the repair, after a restart", map[string]int{"after": 200}, c)
	d.crash()

	for _, tc := range []struct {
		name  string
		setup func()
	}{
		{"the state file is a directory", func() { must(t, os.Remove(file)); must(t, os.Mkdir(file, 0o700)) }},
		{"the state dir is a file", func() { must(t, os.RemoveAll(state)); must(t, os.WriteFile(state, nil, 0o600)) }},
	} {
		name := tc.name
		tc.setup()
		cmd, out := d.command("127.0.0.1:0")
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("%s: the gateway started (%v)", name, err)
		}
		if !strings.Contains(out.String(), state) || !(strings.Contains(out.String(), "cannot be read") || strings.Contains(out.String(), "is not a directory")) {
			t.Errorf("%s: the message does not say what is wrong:\n%s", name, out)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
