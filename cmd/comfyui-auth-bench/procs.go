package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a child process the benchmark started and must stop.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func startProc(name, logPath string, argv ...string) (*proc, error) {
	return startProcEnv(name, logPath, nil, argv...)
}

// startProcEnv is startProc with the environment env (nil: this one's).
func startProcEnv(name, logPath string, env []string, argv ...string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM to this one process and waits, then SIGKILL.
func (p *proc) stop() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitHTTP polls url until it answers want (any status when want is 0).
func waitHTTP(url string, want int, within time.Duration) error {
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: time.Second}
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		code, err := getStatus(context.Background(), client, url, "")
		if err == nil && (want == 0 || code == want) {
			return nil
		}
		last = fmt.Sprint(code, err)
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("%s did not answer %d within %s (last: %s)", url, want, within, last)
}

// cpuSeconds is the user+system CPU time of pid, from /proc/<pid>/stat.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name, which may hold spaces.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ is 100 on Linux
}

// rssBytes is VmRSS of pid, from /proc/<pid>/status.
func rssBytes(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// metric reads one unlabelled sample from a Prometheus text page.
func metric(url, name string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return -1
}

// gatewayProc is a running comfyui-auth serve.
type gatewayProc struct {
	*proc
	url, metricsURL string
	startup         time.Duration
}

// startGateway execs the gateway and waits for /readyz 200; the start-up
// time is from just before exec to that answer.
func (b *bench) startGateway(name, upstream, hashFile string, extra ...string) (*gatewayProc, error) {
	port, mport := freePort(), freePort()
	argv := append([]string{b.gatewayBin, "serve",
		"--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--upstream", upstream,
		"--hash-file", hashFile,
		"--metrics-listen", fmt.Sprintf("127.0.0.1:%d", mport),
	}, extra...)
	t0 := time.Now()
	p, err := startProc(name, filepath.Join(b.dir, name+".log"), argv...)
	if err != nil {
		return nil, err
	}
	g := &gatewayProc{proc: p, url: fmt.Sprintf("http://127.0.0.1:%d", port),
		metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)}
	if err := waitHTTP(g.url+"/readyz", 200, 10*time.Second); err != nil {
		p.stop()
		return nil, fmt.Errorf("gateway %s: %w (log: %s)", name, err, filepath.Join(b.dir, name+".log"))
	}
	g.startup = time.Since(t0)
	return g, nil
}

// startUpstream execs fakecomfyd on a free loopback port.
func (b *bench) startUpstream(name string, extra ...string) (*proc, string, error) {
	port := freePort()
	argv := append([]string{b.fakeBin, "--listen", "127.0.0.1", "--port", strconv.Itoa(port)}, extra...)
	p, err := startProc(name, filepath.Join(b.dir, name+".log"), argv...)
	if err != nil {
		return nil, "", err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := waitHTTP(url+"/system_stats", 200, 10*time.Second); err != nil {
		p.stop()
		return nil, "", err
	}
	return p, url, nil
}

// nginxConf is Debian's nginx as a plain reverse proxy in its best
// configuration for this job: a worker per CPU, upstream keep-alive, no
// buffering (like the gateway, which streams) and no access log.
const nginxConf = `worker_processes auto;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    upstream comfy { server 127.0.0.1:%[2]d; keepalive 128; }
    server {
        listen 127.0.0.1:%[3]d;
        location / {
            proxy_pass http://comfy;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
`

// findNginx returns Debian's nginx, installing nginx-light when missing and
// running as root; "" when it cannot be had.
func findNginx(logf func(string, ...any)) string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	if os.Geteuid() != 0 {
		logf("nginx is not installed and this is not root: the nginx column is skipped (apt-get install -y nginx-light)")
		return ""
	}
	logf("installing nginx-light with apt-get")
	cmd := exec.Command("sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk")
	if out, err := cmd.CombinedOutput(); err != nil {
		logf("apt-get failed, nginx column skipped: %v: %s", err, out)
		return ""
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	return ""
}

func (b *bench) startNginx(upstreamPort int) (*proc, string, error) {
	dir := filepath.Join(b.dir, "nginx")
	for _, d := range []string{dir, filepath.Join(dir, "client_body"), filepath.Join(dir, "proxy")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, "", err
		}
	}
	port := freePort()
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, dir, upstreamPort, port)), 0o644); err != nil {
		return nil, "", err
	}
	p, err := startProc("nginx", filepath.Join(b.dir, "nginx.log"), b.nginxBin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "nginx-error.log"))
	if err != nil {
		return nil, "", err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := waitHTTP(url+"/system_stats", 200, 10*time.Second); err != nil {
		p.stop()
		return nil, "", fmt.Errorf("nginx: %w (see %s)", err, filepath.Join(dir, "nginx-error.log"))
	}
	return p, url, nil
}
