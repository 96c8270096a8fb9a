package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/internal/logbuf"
)

// lockedBuffer collects child output written from several goroutines.
type lockedBuffer = logbuf.Buffer

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testConfig runs comfy as "ComfyUI" and gateway as "the gateway", both
// small shell scripts.
func testConfig(t *testing.T, comfy, gateway string) entrypointConfig {
	t.Helper()
	return entrypointConfig{
		ComfyDir:       t.TempDir(),
		InternalPort:   8189,
		ComfyCommand:   []string{"sh", "-c", comfy},
		ComfyEnv:       os.Environ(),
		GatewayCommand: []string{"sh", "-c", gateway},
		GatewayEnv:     os.Environ(),
		StopTimeout:    5 * time.Second,
	}
}

type supervised struct {
	out, errOut *lockedBuffer
	done        chan int
}

func startSupervisor(t *testing.T, cfg entrypointConfig) *supervised {
	t.Helper()
	s := &supervised{out: &lockedBuffer{}, errOut: &lockedBuffer{}, done: make(chan int, 1)}
	go func() { s.done <- superviseEntrypoint(cfg, s.out, s.errOut) }()
	return s
}

func (s *supervised) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case code := <-s.done:
		return code
	case <-time.After(d):
		t.Fatalf("entrypoint still running after %s; stderr:\n%s", d, s.errOut)
		return -1
	}
}

func TestComfyUIExitStatusBecomesTheEntrypointStatus(t *testing.T) {
	cfg := testConfig(t, "exit 3", "exec sleep 30")
	s := startSupervisor(t, cfg)
	if code := s.wait(t, 10*time.Second); code != 3 {
		t.Fatalf("exit code = %d, want ComfyUI's 3; stderr:\n%s", code, s.errOut)
	}
	if !strings.Contains(s.errOut.String(), "ComfyUI exited with status 3; stopping the gateway") {
		t.Errorf("stderr does not say why it stopped:\n%s", s.errOut)
	}
}

func TestComfyUIKilledBySignalExitsWith128PlusSignal(t *testing.T) {
	cfg := testConfig(t, "kill -KILL $$", "exec sleep 30")
	s := startSupervisor(t, cfg)
	if code := s.wait(t, 10*time.Second); code != 137 {
		t.Fatalf("exit code = %d, want 137; stderr:\n%s", code, s.errOut)
	}
	if !strings.Contains(s.errOut.String(), "ComfyUI was killed by SIGKILL") {
		t.Errorf("stderr does not name the signal:\n%s", s.errOut)
	}
}

func TestGatewayDeathStopsComfyUIAndExitsNonZero(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "comfy-ready")
	// The gateway dies only once ComfyUI's trap is in place.
	cfg := testConfig(t,
		"trap 'echo comfy-stopped; exit 0' TERM; touch "+ready+"; while :; do sleep 0.05; done",
		"while [ ! -e "+ready+" ]; do sleep 0.01; done; exit 0")
	s := startSupervisor(t, cfg)
	if code := s.wait(t, 10*time.Second); code != 1 {
		t.Fatalf("exit code = %d, want 1; stderr:\n%s", code, s.errOut)
	}
	if !strings.Contains(s.out.String(), "comfy-stopped") {
		t.Errorf("ComfyUI was not sent SIGTERM; stdout:\n%s", s.out)
	}
}

func TestGatewayExitStatusIsKeptWhenNonZero(t *testing.T) {
	cfg := testConfig(t, "exec sleep 30", "exit 4")
	s := startSupervisor(t, cfg)
	if code := s.wait(t, 10*time.Second); code != 4 {
		t.Fatalf("exit code = %d, want 4; stderr:\n%s", code, s.errOut)
	}
}

func TestStopSignalsAreForwardedToBothChildren(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			loop := "while :; do sleep 0.05; done"
			cfg := testConfig(t,
				"trap 'echo comfy-got-signal; exit 0' TERM INT; echo comfy-ready; "+loop,
				"trap 'echo gateway-got-signal; exit 0' TERM INT; echo gateway-ready; "+loop)
			s := startSupervisor(t, cfg)
			waitFor(t, "both children to start", 10*time.Second, func() bool {
				out := s.out.String()
				return strings.Contains(out, "comfy-ready") && strings.Contains(out, "gateway-ready")
			})
			if err := syscall.Kill(os.Getpid(), sig); err != nil {
				t.Fatal(err)
			}
			if code := s.wait(t, 10*time.Second); code != 0 {
				t.Fatalf("exit code = %d, want 0 after a clean stop; stderr:\n%s", code, s.errOut)
			}
			out := s.out.String()
			if !strings.Contains(out, "comfy-got-signal") || !strings.Contains(out, "gateway-got-signal") {
				t.Fatalf("%s did not reach both children; stdout:\n%s", sig, out)
			}
		})
	}
}

func TestChildrenIgnoringSIGTERMAreKilledAfterTheStopTimeout(t *testing.T) {
	cfg := testConfig(t,
		"trap '' TERM; echo comfy-ready; while :; do sleep 0.05; done",
		"trap '' TERM; echo gateway-ready; while :; do sleep 0.05; done")
	cfg.StopTimeout = 300 * time.Millisecond
	s := startSupervisor(t, cfg)
	waitFor(t, "both children to start", 10*time.Second, func() bool {
		out := s.out.String()
		return strings.Contains(out, "comfy-ready") && strings.Contains(out, "gateway-ready")
	})
	began := time.Now()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := s.wait(t, 10*time.Second); code != 137 {
		t.Fatalf("exit code = %d, want 137 after SIGKILL; stderr:\n%s", code, s.errOut)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("stopping took %s with a 300ms stop timeout", took)
	}
	if !strings.Contains(s.errOut.String(), "did not stop within 300ms") {
		t.Errorf("stderr does not explain the kill:\n%s", s.errOut)
	}
}

func TestComfyUILoginIsReportedAsDoubleAuthentication(t *testing.T) {
	cfg := testConfig(t, "exit 0", "exec sleep 30")
	login := filepath.Join(cfg.ComfyDir, "custom_nodes", "ComfyUI-Login")
	if err := os.MkdirAll(login, 0o755); err != nil {
		t.Fatal(err)
	}
	s := startSupervisor(t, cfg)
	s.wait(t, 10*time.Second)
	msg := s.errOut.String()
	if !strings.Contains(msg, "entrypoint: WARNING: "+login+" is installed") || !strings.Contains(msg, "login/PASSWORD") {
		t.Fatalf("no double-authentication warning naming %s; stderr:\n%s", login, msg)
	}
}

func TestComfyUIRunsInComfyDirWithoutSecrets(t *testing.T) {
	t.Setenv("QWEN_API_TOKEN", "raw-token-must-not-leak")
	t.Setenv("SECRET_KEY", "session-key-must-not-leak")
	t.Setenv("COMFYUI_COMMAND", "sh -c 'pwd; env; exit 0'")
	t.Setenv("COMFYUI_UID", strconv.Itoa(os.Geteuid())) // the temp dir is this user's only
	dir := t.TempDir()
	t.Setenv("COMFYUI_DIR", dir)
	cfg, err := entrypointConfigFrom(nil, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	cfg.GatewayPath = ""
	cfg.GatewayCommand = []string{"sh", "-c", "exec sleep 30"}
	s := startSupervisor(t, cfg)
	s.wait(t, 10*time.Second)
	out := s.out.String()
	if !strings.HasPrefix(out, dir+"\n") {
		t.Errorf("ComfyUI did not run in %s; stdout:\n%s", dir, out)
	}
	if strings.Contains(out, "must-not-leak") {
		t.Errorf("ComfyUI's environment holds a secret; stdout:\n%s", out)
	}
}

func TestMissingComfyUIExplainsWhatToSet(t *testing.T) {
	cfg := testConfig(t, "", "exec sleep 30")
	cfg.ComfyCommand = []string{"venv/bin/python3", "main.py"}
	s := startSupervisor(t, cfg)
	if code := s.wait(t, 10*time.Second); code != 127 {
		t.Fatalf("exit code = %d, want 127", code)
	}
	if msg := s.errOut.String(); !strings.Contains(msg, "cannot start ComfyUI") || !strings.Contains(msg, "COMFYUI_COMMAND") {
		t.Fatalf("stderr does not say what to do:\n%s", msg)
	}
}

func TestScriptThatPublishesComfyUIIsRefused(t *testing.T) {
	stderr := &lockedBuffer{}
	code := runEntrypoint([]string{"--", "sh", "-c", "cd /x && python main.py --listen 0.0.0.0 --port 8188"}, &lockedBuffer{}, stderr)
	if code != 2 {
		t.Fatalf("exit code = %d, want 2; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr.String(), "--listen 127.0.0.1 --port 8189") {
		t.Errorf("stderr does not say what to write instead:\n%s", stderr)
	}
}

func TestEntrypointConfigPrecedence(t *testing.T) {
	base := []string{"PATH=/usr/bin", "COMFYUI_AUTH_UPSTREAM=http://elsewhere:1", "COMFYUI_AUTH_TOKEN=raw"}
	tests := []struct {
		name    string
		args    []string
		env     []string
		wantCmd []string
	}{
		{"default command is the deployment's, without --listen and --port", nil, []string{"COMFYUI_INTERNAL_PORT=9000"},
			strings.Fields("venv/bin/python3 main.py --preview-method auto --use-split-cross-attention")},
		{"COMFYUI_COMMAND is split like a shell", nil, []string{`COMFYUI_COMMAND=bash -c 'exec python3 main.py' "a b"`},
			[]string{"bash", "-c", "exec python3 main.py", "a b"}},
		{"arguments win over COMFYUI_COMMAND", []string{"--", "python3", "main.py"}, []string{"COMFYUI_COMMAND=ignored"},
			[]string{"python3", "main.py"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := entrypointConfigFrom(tt.args, append(append([]string(nil), base...), tt.env...))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg.ComfyCommand, tt.wantCmd) {
				t.Errorf("command %q, want %q", cfg.ComfyCommand, tt.wantCmd)
			}
			gw := envMap(cfg.GatewayEnv)
			if want := "http://127.0.0.1:" + strconv.Itoa(cfg.InternalPort); gw["COMFYUI_AUTH_UPSTREAM"] != want {
				t.Errorf("gateway upstream %q, want %q", gw["COMFYUI_AUTH_UPSTREAM"], want)
			}
			if gw["COMFYUI_AUTH_SHUTDOWN_TIMEOUT"] != "6s" {
				t.Errorf("gateway drain time %q, want 6s (within the 8s stop timeout)", gw["COMFYUI_AUTH_SHUTDOWN_TIMEOUT"])
			}
			if gw["COMFYUI_AUTH_TOKEN"] != "raw" {
				t.Errorf("the gateway lost COMFYUI_AUTH_TOKEN")
			}
			if _, ok := envMap(cfg.ComfyEnv)["COMFYUI_AUTH_TOKEN"]; ok {
				t.Errorf("ComfyUI's environment holds COMFYUI_AUTH_TOKEN")
			}
		})
	}
	for _, bad := range []string{"COMFYUI_INTERNAL_PORT=0", "COMFYUI_INTERNAL_PORT=http", "COMFYUI_STOP_TIMEOUT=soon", "COMFYUI_COMMAND=python 'main.py"} {
		if _, err := entrypointConfigFrom(nil, []string{bad}); err == nil {
			t.Errorf("%s was accepted", bad)
		}
	}
	for in, want := range map[string]time.Duration{"8": 8 * time.Second, "1500ms": 1500 * time.Millisecond} {
		if got, err := parseStopTimeout(in); err != nil || got != want {
			t.Errorf("parseStopTimeout(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
}

// TestOrphansAreReapedWhenPID1 runs the supervisor in a child process that
// is a subreaper, which is how PID 1 sees orphans. Reaping every pid in this
// test process itself would steal other tests' children.
func TestOrphansAreReapedWhenPID1(t *testing.T) {
	if os.Getenv("ENTRYPOINT_REAPER_HELPER") == "1" {
		reaperHelper()
		return
	}
	pidFile := filepath.Join(t.TempDir(), "orphan.pid")
	cmd := exec.Command(os.Args[0], "-test.run=^TestOrphansAreReapedWhenPID1$")
	cmd.Env = append(os.Environ(), "ENTRYPOINT_REAPER_HELPER=1", "ORPHAN_PID_FILE="+pidFile)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd.WaitDelay = 5 * time.Second
	defer func() {
		// SIGTERM, not SIGKILL: the helper then stops its own children,
		// which hold the output pipe open.
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()

	var orphan int
	waitFor(t, "the orphan's pid", 10*time.Second, func() bool {
		b, err := os.ReadFile(pidFile)
		if err != nil || !strings.HasSuffix(string(b), "\n") {
			return false
		}
		orphan, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	// The orphan exits after 200ms. Unreaped, it would stay a zombie ("Z")
	// forever under the helper.
	waitFor(t, fmt.Sprintf("orphan %d to be reaped; helper output:\n%s", orphan, out.String()), 10*time.Second, func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/%d", orphan))
		return os.IsNotExist(err)
	})
}

func reaperHelper() {
	if err := setChildSubreaper(); err != nil {
		fmt.Println("prctl:", err)
		os.Exit(3)
	}
	cfg := entrypointConfig{
		ComfyDir: os.TempDir(),
		// The subshell starts a background job and exits, so the job is
		// re-parented to the nearest subreaper: the supervisor.
		ComfyCommand:   []string{"sh", "-c", `(sh -c 'echo $$ > "$ORPHAN_PID_FILE"; exec sleep 0.2' &); exec sleep 30`},
		ComfyEnv:       os.Environ(),
		GatewayCommand: []string{"sleep", "30"},
		GatewayEnv:     os.Environ(),
		StopTimeout:    time.Second,
		ReapAll:        true,
	}
	os.Exit(superviseEntrypoint(cfg, os.Stdout, os.Stderr))
}

func setChildSubreaper() error {
	const prSetChildSubreaper = 36
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return errno
	}
	return nil
}
