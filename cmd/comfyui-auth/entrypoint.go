package main

// The entrypoint subcommand is the container's PID 1. It runs ComfyUI on a
// loopback-only internal port and the gateway on the public port, forwards
// stop signals to both, reaps orphaned processes, and exits when either child
// dies so that Docker's restart policy applies to the pair.
//
// It is written in Go rather than shell so that it works unchanged on any base
// image (python:3.11 ships neither tini nor dumb-init) and so that signal
// forwarding and zombie reaping are done by one loop that can be tested.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults match the comfyui-qwen deployment the image drops into.
const (
	defaultComfyDir     = "/workspace/ComfyUI"
	defaultInternalPort = 8189
	defaultStopTimeout  = 8 * time.Second
	// containerSecretsDir is where the image expects the host's .secrets
	// directory: under /etc/comfyui-auth, which the image makes root's and
	// 0700, so ComfyUI's user cannot even look inside, whatever the modes of
	// the host's files are.
	containerSecretsDir = "/etc/comfyui-auth/secrets"
	// defaultComfyCommand is the deployment's command without --listen and
	// --port: confineToLoopback appends "--listen 127.0.0.1 --port <internal
	// port>" to every main.py command.
	defaultComfyCommand = "venv/bin/python3 main.py --preview-method auto --use-split-cross-attention"
)

// comfySecretEnv lists variables that only the gateway needs. They are removed
// from ComfyUI's environment: custom nodes run arbitrary Python and have no
// business reading the API token or the session key.
var comfySecretEnv = []string{
	"COMFYUI_AUTH_TOKEN",
	"QWEN_API_TOKEN",
	"COMFYUI_PASSWORD",
	"SECRET_KEY",
}

// entrypointConfig is everything the supervisor needs; entrypointConfigFrom
// fills it from the environment and the command line.
type entrypointConfig struct {
	// ComfyDir is ComfyUI's working directory (COMFYUI_DIR).
	ComfyDir string
	// InternalPort is the loopback port ComfyUI listens on
	// (COMFYUI_INTERNAL_PORT).
	InternalPort int
	// ComfyCommand is ComfyUI's argv: the entrypoint's arguments, else
	// COMFYUI_COMMAND, else the deployment's command.
	ComfyCommand []string
	// ComfyEnv is ComfyUI's environment (the entrypoint's, minus secrets).
	ComfyEnv []string
	// GatewayCommand is the gateway's argv; Path is argv[0] unless GatewayPath
	// is set.
	GatewayCommand []string
	// GatewayPath is the executable to run for the gateway: this binary.
	GatewayPath string
	// GatewayEnv is the gateway's environment (the entrypoint's, with the
	// upstream pointed at ComfyUI's internal port).
	GatewayEnv []string
	// StopTimeout bounds how long children get between SIGTERM and SIGKILL
	// (COMFYUI_STOP_TIMEOUT).
	StopTimeout time.Duration
	// RunAs is ComfyUI's user (COMFYUI_UID, COMFYUI_GID); nil runs ComfyUI
	// as the entrypoint's own user.
	RunAs *comfyUser
	// MultiUser starts ComfyUI with --multi-user, which the gateway's
	// --comfy-multi-user needs (COMFYUI_AUTH_MULTI_USER).
	MultiUser bool
	// ReapAll makes the supervisor reap every child process, not just its
	// own two. Only PID 1 inherits orphans, so only PID 1 needs it; doing it
	// elsewhere would steal exit statuses from the rest of the process.
	ReapAll bool
}

func entrypointUsage(w io.Writer) {
	fmt.Fprintf(w, `usage: comfyui-auth entrypoint [--] [COMFYUI COMMAND...]

Runs ComfyUI on 127.0.0.1:$COMFYUI_INTERNAL_PORT (default %d) and the gateway
("comfyui-auth serve") in front of it, as the container's PID 1.

ComfyUI's command is, in order: the arguments after "entrypoint", then
$COMFYUI_COMMAND, then
  %s
It runs in $COMFYUI_DIR (default %s). "--listen 127.0.0.1 --port <internal
port>" is appended after ComfyUI's own arguments; argparse keeps the last
value, so no earlier --listen or --port, however spelled, can publish it.
With COMFYUI_AUTH_MULTI_USER on, "--multi-user" is appended too.

SIGTERM and SIGINT are forwarded to both; after $COMFYUI_STOP_TIMEOUT
(default %s) the rest is killed. If ComfyUI exits, the entrypoint exits with
its status; if the gateway exits, ComfyUI is stopped and the exit is non-zero.
`, defaultInternalPort, defaultComfyCommand, defaultComfyDir, defaultStopTimeout)
}

// runEntrypoint is the "entrypoint" subcommand.
func runEntrypoint(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
		entrypointUsage(stdout)
		return 0
	}
	cfg, err := entrypointConfigFrom(args, os.Environ())
	if err != nil {
		fmt.Fprintf(stderr, "entrypoint: %v\n", err)
		return 2
	}
	cfg.ReapAll = os.Getpid() == 1
	return superviseEntrypoint(cfg, stdout, stderr)
}

// entrypointConfigFrom reads the configuration from args and environ.
func entrypointConfigFrom(args []string, environ []string) (entrypointConfig, error) {
	env := envMap(environ)
	cfg := entrypointConfig{
		ComfyDir:     defaultComfyDir,
		InternalPort: defaultInternalPort,
		StopTimeout:  defaultStopTimeout,
		GatewayPath:  "/proc/self/exe",
	}
	// The resolved path gives the gateway a readable process name
	// ("comfyui-auth", not "exe") in ps and /proc.
	if exe, err := os.Executable(); err == nil {
		cfg.GatewayPath = exe
	}
	if v := env["COMFYUI_DIR"]; v != "" {
		cfg.ComfyDir = v
	}
	if v := env["COMFYUI_INTERNAL_PORT"]; v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			return cfg, fmt.Errorf("COMFYUI_INTERNAL_PORT=%q is not a port number between 1 and 65535", v)
		}
		cfg.InternalPort = p
	}
	if v := env["COMFYUI_STOP_TIMEOUT"]; v != "" {
		d, err := parseStopTimeout(v)
		if err != nil {
			return cfg, err
		}
		cfg.StopTimeout = d
	}

	if v := env["COMFYUI_AUTH_MULTI_USER"]; v != "" {
		on, err := parseBool(v)
		if err != nil {
			return cfg, fmt.Errorf("COMFYUI_AUTH_MULTI_USER=%q: %v", v, err)
		}
		cfg.MultiUser = on
	}

	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	switch {
	case len(args) > 0:
		cfg.ComfyCommand = append([]string(nil), args...)
	case strings.TrimSpace(env["COMFYUI_COMMAND"]) != "":
		argv, err := splitCommandLine(env["COMFYUI_COMMAND"])
		if err != nil {
			return cfg, fmt.Errorf("COMFYUI_COMMAND: %w", err)
		}
		cfg.ComfyCommand = argv
	default:
		cfg.ComfyCommand, _ = splitCommandLine(defaultComfyCommand)
	}

	cfg.ComfyEnv = withoutEnv(environ, comfySecretEnv...)
	cfg.GatewayCommand = []string{"comfyui-auth", "serve"}
	cfg.GatewayEnv = withEnv(environ, "COMFYUI_AUTH_UPSTREAM", fmt.Sprintf("http://127.0.0.1:%d", cfg.InternalPort))
	if env["COMFYUI_AUTH_TOKEN_FILE"] == "" {
		cfg.GatewayEnv = withEnv(cfg.GatewayEnv, "COMFYUI_AUTH_TOKEN_FILE", defaultContainerHashFile(filepath.Join(containerSecretsDir, "qwen-api-user.token"), defaultConfig().HashFile))
	}
	u, err := comfyUserFrom(env, cfg.GatewayEnv)
	if err != nil {
		return cfg, err
	}
	cfg.RunAs = u
	if _, ok := env["COMFYUI_AUTH_SHUTDOWN_TIMEOUT"]; !ok {
		// The gateway drains connections on SIGTERM; it must finish
		// before the entrypoint's SIGKILL, which comes before Docker's.
		cfg.GatewayEnv = withEnv(cfg.GatewayEnv, "COMFYUI_AUTH_SHUTDOWN_TIMEOUT", gatewayDrainTime(cfg.StopTimeout).String())
	}
	return cfg, nil
}

// gatewayDrainTime leaves the gateway three quarters of the stop timeout to
// drain, and the rest as margin for the exit itself.
func gatewayDrainTime(stop time.Duration) time.Duration {
	return (stop * 3 / 4).Round(time.Millisecond)
}

// parseStopTimeout reads COMFYUI_STOP_TIMEOUT with the same parser as every
// other duration: Go syntax ("8s", "1m") or bare seconds ("8").
func parseStopTimeout(v string) (time.Duration, error) {
	d, err := parseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("COMFYUI_STOP_TIMEOUT=%q %v", v, err)
	}
	if d <= 0 {
		return 0, fmt.Errorf("COMFYUI_STOP_TIMEOUT=%q must be positive", v)
	}
	return d, nil
}

// isLoopbackListen reports whether a ComfyUI --listen value binds loopback
// only. ComfyUI accepts a comma-separated list.
func isLoopbackListen(v string) bool {
	if v == "" {
		return false // a bare --listen means 0.0.0.0,::
	}
	for _, h := range strings.Split(v, ",") {
		switch strings.TrimSpace(h) {
		case "127.0.0.1", "localhost", "::1", "[::1]":
		default:
			return false
		}
	}
	return true
}

// listenOpt and portOpt recognise ComfyUI's --listen and --port the way its
// argparse parser does: the full name or any unambiguous abbreviation of it
// ("--li" is the shortest that names --listen only, "--po" for --port), with
// the value in the next argument or after "=".
func listenOpt(a string) (value string, hasValue, ok bool) { return argparseOpt(a, "--listen", "--li") }
func portOpt(a string) (value string, hasValue, ok bool)   { return argparseOpt(a, "--port", "--po") }

func argparseOpt(a, full, shortest string) (value string, hasValue, ok bool) {
	name, value, hasValue := strings.Cut(a, "=")
	if len(name) < len(shortest) || !strings.HasPrefix(full, name) {
		return "", false, false
	}
	return value, hasValue, true
}

// embeddedListen finds --listen, or an abbreviation of it, inside a single
// argument such as a "sh -c '...'" script, which cannot be confined safely.
var embeddedListen = regexp.MustCompile(`--li(?:s|st|ste|sten)?(?:(?:=|\s+)([^\s'"]*)|\s*$)`)

// confineToLoopback makes ComfyUI listen on 127.0.0.1:port only. Publishing
// ComfyUI itself would bypass the gateway.
//
// For a command that runs main.py, or that passes --listen or --port through
// to ComfyUI, it appends "--listen 127.0.0.1 --port <port>" after the user's
// arguments rather than rewriting them: ComfyUI's argparse keeps the last
// value of an option, so the appended pair wins over any earlier --listen,
// --liste=, --li or --po, spelled in any form argparse accepts. The user's
// arguments are only read to explain, in the returned notes, which of their
// values are overridden.
//
// A shell script passed as one argument cannot be appended to; one that
// starts ComfyUI with a non-loopback --listen is refused.
func confineToLoopback(argv []string, port int) ([]string, []string, error) {
	var notes []string
	portStr := strconv.Itoa(port)
	forwards := false // the command takes ComfyUI's flags
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		if filepath.Base(a) == "main.py" {
			forwards = true
			continue
		}
		if v, has, ok := listenOpt(a); ok {
			forwards = true
			if !has && i+1 < len(argv) && !strings.HasPrefix(argv[i+1], "-") {
				v, has = argv[i+1], true
				i++
			}
			if !has {
				v = "(all interfaces)" // a bare --listen is 0.0.0.0,::
			}
			if !has || !isLoopbackListen(v) {
				notes = append(notes, fmt.Sprintf("ComfyUI's %s %s is overridden by --listen 127.0.0.1, appended after it: only the gateway may be reachable from outside the container", strings.SplitN(a, "=", 2)[0], v))
			}
			continue
		}
		if v, has, ok := portOpt(a); ok {
			forwards = true
			if !has && i+1 < len(argv) {
				v = argv[i+1]
				i++
			}
			if v != portStr {
				notes = append(notes, fmt.Sprintf("ComfyUI's %s %s is overridden by --port %d, appended after it: the internal port the gateway forwards to (COMFYUI_INTERNAL_PORT)", strings.SplitN(a, "=", 2)[0], v, port))
			}
			continue
		}
		if strings.ContainsAny(a, " \t\n") {
			for _, m := range embeddedListen.FindAllStringSubmatch(a, -1) {
				if !isLoopbackListen(m[1]) {
					return nil, nil, fmt.Errorf("ComfyUI's command %q starts ComfyUI with %s inside a script, which would publish it beside the gateway; change it to --listen 127.0.0.1 --port %d", a, strings.TrimSpace(m[0]), port)
				}
			}
		}
	}
	if !forwards {
		return append([]string(nil), argv...), notes, nil
	}
	out := make([]string, 0, len(argv)+4)
	out = append(out, argv...)
	return append(out, "--listen", "127.0.0.1", "--port", portStr), notes, nil
}

// addMultiUser appends ComfyUI's --multi-user to a command that takes
// ComfyUI's flags (forwards) and lacks it, and says what it did: the
// gateway's --comfy-multi-user registers users in a registry that only
// exists in that mode.
func addMultiUser(argv []string, forwards bool) ([]string, string) {
	for _, a := range argv {
		if a == "--multi-user" {
			return argv, "ComfyUI runs with --multi-user, as COMFYUI_AUTH_MULTI_USER needs"
		}
	}
	if !forwards {
		return argv, "COMFYUI_AUTH_MULTI_USER is on but ComfyUI's command does not take ComfyUI's flags, so --multi-user cannot be added: start ComfyUI with --multi-user yourself, or every request gets 502 user_registry"
	}
	return append(argv, "--multi-user"), "ComfyUI gets --multi-user, appended because COMFYUI_AUTH_MULTI_USER is on"
}

// childState is one supervised process.
type childState struct {
	name   string
	proc   *os.Process
	exited bool
	status syscall.WaitStatus
}

// exitCode maps a wait status the way shells do: the exit code, or 128+signal.
func exitCode(ws syscall.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	default:
		return 1
	}
}

// signalName names a signal the way people write it: SIGKILL, not "killed".
func signalName(sig syscall.Signal) string {
	if n := unix.SignalName(sig); n != "" {
		return n
	}
	return fmt.Sprintf("signal %d", int(sig))
}

func describeStatus(ws syscall.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exited with status %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Sprintf("was killed by %s", signalName(ws.Signal()))
	default:
		return fmt.Sprintf("stopped (wait status %#x)", uint32(ws))
	}
}

// supervisor owns the two children and the reaping loop. All of its state is
// touched by the goroutine running superviseEntrypoint only.
type supervisor struct {
	cfg      entrypointConfig
	stderr   io.Writer
	children []*childState
	copies   sync.WaitGroup
}

func (s *supervisor) logf(format string, args ...any) {
	fmt.Fprintf(s.stderr, "entrypoint: "+format+"\n", args...)
}

// outputFile returns a file a child can write to that ends up in w. Files are
// passed through; other writers (tests) get a pipe and a copying goroutine.
// The returned function closes the parent's copy of the write end.
func (s *supervisor) outputFile(w io.Writer) (*os.File, func(), error) {
	if f, ok := w.(*os.File); ok {
		return f, func() {}, nil
	}
	r, wr, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	s.copies.Add(1)
	go func() {
		defer s.copies.Done()
		_, _ = io.Copy(w, r)
		r.Close()
	}()
	return wr, func() { wr.Close() }, nil
}

func (s *supervisor) start(name, path string, argv []string, dir string, env []string, cred *syscall.Credential, stdout, stderr io.Writer) (*childState, error) {
	outF, closeOut, err := s.outputFile(stdout)
	if err != nil {
		return nil, err
	}
	defer closeOut()
	errF, closeErr, err := s.outputFile(stderr)
	if err != nil {
		return nil, err
	}
	defer closeErr()

	if path == "" {
		path = argv[0]
		if !strings.Contains(path, "/") {
			lp, err := exec.LookPath(path)
			if err != nil {
				return nil, err
			}
			path = lp
		} else if dir != "" && !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
	}
	attr := &os.ProcAttr{
		Dir:   dir,
		Env:   env,
		Files: []*os.File{os.Stdin, outF, errF},
		// Its own process group, so that a signal reaches the helpers a
		// child starts (ComfyUI's custom nodes spawn some) as well.
		Sys: &syscall.SysProcAttr{Setpgid: true, Credential: cred},
	}
	var proc *os.Process
	if cred != nil {
		proc, err = startWithoutPrivilegeGain(path, argv, attr)
	} else {
		proc, err = os.StartProcess(path, argv, attr)
	}
	if err != nil {
		return nil, err
	}
	c := &childState{name: name, proc: proc}
	s.children = append(s.children, c)
	return c, nil
}

// signal sends sig to every live child's process group.
func (s *supervisor) signal(sig syscall.Signal) {
	for _, c := range s.children {
		if c.exited {
			continue
		}
		// The group leader is not reaped yet (exited is false), so its
		// pid is still its group's id and cannot have been reused.
		if err := syscall.Kill(-c.proc.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			s.logf("could not send %s to %s (pid %d): %v", signalName(sig), c.name, c.proc.Pid, err)
		}
	}
}

// reap collects every exited process without blocking. With ReapAll (PID 1)
// it waits for any pid, so that orphans re-parented to us do not pile up as
// zombies; the exit status of our own children is recorded on the way, which
// is why there is exactly one reaper.
func (s *supervisor) reap() {
	if s.cfg.ReapAll {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if err != nil || pid <= 0 {
				return
			}
			s.record(pid, ws)
		}
	}
	for _, c := range s.children {
		if c.exited {
			continue
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(c.proc.Pid, &ws, syscall.WNOHANG, nil)
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if err == nil && pid == c.proc.Pid {
				s.record(pid, ws)
			}
			break
		}
	}
}

func (s *supervisor) record(pid int, ws syscall.WaitStatus) {
	for _, c := range s.children {
		if c.proc.Pid == pid && !c.exited {
			c.exited, c.status = true, ws
			c.proc.Release()
			return
		}
	}
}

// superviseEntrypoint starts ComfyUI and the gateway and runs until both
// have exited. It returns the process exit code.
func superviseEntrypoint(cfg entrypointConfig, stdout, stderr io.Writer) int {
	s := &supervisor{cfg: cfg, stderr: stderr}
	defer s.copies.Wait()

	if fi, err := os.Stat(filepath.Join(cfg.ComfyDir, "custom_nodes", "ComfyUI-Login")); err == nil && fi.IsDir() {
		s.logf("WARNING: %s is installed. The gateway already authenticates every request, so ComfyUI-Login would ask for a second login and reject the API clients the gateway lets through. Remove that folder (or rename it to ComfyUI-Login.disabled), and drop the login/PASSWORD handling from the old entrypoint script.",
			filepath.Join(cfg.ComfyDir, "custom_nodes", "ComfyUI-Login"))
	}

	comfyEnv := cfg.ComfyEnv
	var comfyCred *syscall.Credential
	if u := cfg.RunAs; u != nil {
		switch euid := os.Geteuid(); {
		case euid == 0:
			comfyEnv = u.prepare(s, cfg.ComfyDir, comfyEnv)
			if u.UID != 0 {
				comfyCred = u.credential()
			}
		case u.UID != euid:
			s.logf("WARNING: the entrypoint runs as uid %d, not root, so it cannot run ComfyUI as %d:%d: ComfyUI runs as the gateway's user and can read its secrets. Start the container as root (no user: setting); the entrypoint drops ComfyUI's privileges itself.", euid, u.UID, u.GID)
		}
	}

	argv, notes, err := confineToLoopback(cfg.ComfyCommand, cfg.InternalPort)
	if err != nil {
		s.logf("%v", err)
		return 2
	}
	if cfg.MultiUser {
		var note string
		argv, note = addMultiUser(argv, len(argv) > len(cfg.ComfyCommand))
		notes = append(notes, note)
	}
	for _, n := range notes {
		s.logf("%s.", n)
	}
	if len(argv) == 0 {
		s.logf("ComfyUI's command is empty; set COMFYUI_COMMAND or pass the command after \"entrypoint\"")
		return 2
	}

	// Subscribe before starting anything: a child that dies at once must
	// still wake the loop.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	s.logf("starting ComfyUI in %s on 127.0.0.1:%d: %s", cfg.ComfyDir, cfg.InternalPort, strings.Join(argv, " "))
	comfy, err := s.start("ComfyUI", "", argv, cfg.ComfyDir, comfyEnv, comfyCred, stdout, stderr)
	if err != nil {
		s.logf("cannot start ComfyUI with %q in %s: %v. Is ComfyUI installed there (the old entrypoint installed it into venv/ on first start)? Set COMFYUI_DIR, or COMFYUI_COMMAND, or pass the command after \"entrypoint\".", argv[0], cfg.ComfyDir, err)
		return 127
	}
	s.logf("starting the gateway: %s", strings.Join(cfg.GatewayCommand, " "))
	gateway, err := s.start("the gateway", cfg.GatewayPath, cfg.GatewayCommand, "", cfg.GatewayEnv, nil, stdout, stderr)
	if err != nil {
		s.logf("cannot start the gateway (%s): %v; stopping ComfyUI.", strings.Join(cfg.GatewayCommand, " "), err)
		gateway = &childState{name: "the gateway", exited: true, status: syscall.WaitStatus(1 << 8)}
	}

	var (
		stopping bool
		code     int
		deadline <-chan time.Time
		killed   bool
	)
	stop := func(sig syscall.Signal) {
		stopping = true
		s.signal(sig)
		deadline = time.After(cfg.StopTimeout)
	}

	for {
		s.reap()
		if !stopping {
			switch {
			case comfy.exited:
				code = exitCode(comfy.status)
				s.logf("ComfyUI %s; stopping the gateway and exiting with status %d so that the restart policy applies.", describeStatus(comfy.status), code)
				stop(syscall.SIGTERM)
			case gateway.exited:
				code = exitCode(gateway.status)
				if code == 0 {
					code = 1
				}
				s.logf("the gateway %s; stopping ComfyUI and exiting with status %d.", describeStatus(gateway.status), code)
				stop(syscall.SIGTERM)
			}
		}
		if comfy.exited && gateway.exited {
			if killed && code == 0 {
				code = 128 + int(syscall.SIGKILL)
			}
			s.logf("all stopped; exiting with status %d.", code)
			return code
		}
		select {
		case sig := <-sigs:
			if sig == syscall.SIGCHLD {
				continue
			}
			ss := sig.(syscall.Signal)
			if stopping {
				s.logf("received %s again; killing what is left.", signalName(ss))
				s.signal(syscall.SIGKILL)
				killed = true
				continue
			}
			s.logf("received %s; passing it on to ComfyUI and the gateway (they have %s to stop).", signalName(ss), cfg.StopTimeout)
			stop(ss)
		case <-deadline:
			deadline = nil
			var left []string
			for _, c := range s.children {
				if !c.exited {
					left = append(left, c.name)
				}
			}
			s.logf("%s did not stop within %s (COMFYUI_STOP_TIMEOUT); killing.", strings.Join(left, " and "), cfg.StopTimeout)
			s.signal(syscall.SIGKILL)
			killed = true
		}
	}
}

// splitCommandLine splits a command the way a POSIX shell splits words, with
// single quotes, double quotes and backslashes, but without expansion of any
// kind. COMFYUI_COMMAND is an argv, not a script; wrap it in sh -c for that.
func splitCommandLine(s string) ([]string, error) {
	var (
		args    []string
		cur     strings.Builder
		inWord  bool
		quote   rune
		escaped bool
	)
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case quote == '\'':
			if r == '\'' {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case quote == '"':
			switch r {
			case '"':
				quote = 0
			case '\\':
				escaped = true
			default:
				cur.WriteRune(r)
			}
		case r == '\\':
			escaped, inWord = true, true
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote in %q", quote, s)
	}
	if escaped {
		return nil, fmt.Errorf("trailing backslash in %q", s)
	}
	if inWord {
		args = append(args, cur.String())
	}
	return args, nil
}

func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

func withoutEnv(environ []string, keys ...string) []string {
	out := make([]string, 0, len(environ))
next:
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		for _, drop := range keys {
			if k == drop {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

func withEnv(environ []string, key, value string) []string {
	return append(withoutEnv(environ, key), key+"="+value)
}
