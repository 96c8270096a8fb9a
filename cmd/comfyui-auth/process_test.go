package main

import (
	"bufio"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
	"github.com/gorilla/websocket"
)

const processTestHash = "$2b$12$UDceblhZeEySDwVMC0ccN.IaQmMBfKdTY.aAE3poXcq1zsOP6coni"

// gatewayProcess is the real binary, built for the test and run as a child.
type gatewayProcess struct {
	cmd      *exec.Cmd
	addr     string
	hashFile string
	stderr   *lockedBuffer
	done     chan error
}

// startGatewayProcess builds ./cmd/comfyui-auth and serves upstream with the
// seed hash. The child inherits this process's file-descriptor limit.
func startGatewayProcess(t *testing.T, upstream string, extra ...string) *gatewayProcess {
	t.Helper()
	return startGatewayProcessLimited(t, upstream, 0, extra...)
}

// startGatewayProcessLimited is startGatewayProcess with the child's
// descriptor limit, soft and hard, set to fileLimit (0: inherited).
func startGatewayProcessLimited(t *testing.T, upstream string, fileLimit int, extra ...string) *gatewayProcess {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "comfyui-auth")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	hashFile := filepath.Join(dir, "token")
	if err := os.WriteFile(hashFile, []byte(processTestHash), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	args := append([]string{"serve", "--listen", addr, "--upstream", upstream, "--hash-file", hashFile}, extra...)
	cmd := exec.Command(bin, args...)
	if fileLimit > 0 {
		cmd = exec.Command("/bin/sh", append([]string{"-c", "ulimit -n " + strconv.Itoa(fileLimit) + ` && exec "$0" "$@"`, bin}, args...)...)
	}
	p := &gatewayProcess{cmd: cmd, addr: addr, hashFile: hashFile, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	waitFor(t, "the gateway answers /healthz", 10*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return p
}

// exitCode waits for the child and returns its exit code.
func (p *gatewayProcess) exitCode(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("gateway still running %s after SIGTERM; stderr:\n%s", within, p.stderr)
		return -1
	}
}

// TestSIGTERMDrainsAnUploadAndWebsocketsThenExitsZero: SIGTERM while an
// upload streams and 100 websockets are open. The upload completes, every
// websocket is closed promptly, and the process exits 0 within the bound.
func TestSIGTERMDrainsAnUploadAndWebsocketsThenExitsZero(t *testing.T) {
	fake, up := fakecomfy.Start(t, fakecomfy.Options{})
	p := startGatewayProcess(t, up.URL, "--shutdown-timeout", "10s")
	token := url.QueryEscape(processTestHash)

	const nWS = 100
	conns := make([]*websocket.Conn, nWS)
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	for i := range conns {
		c, resp, err := d.Dial(fmt.Sprintf("ws://%s/ws?clientId=c%d&token=%s", p.addr, i, token), http.Header{"Origin": {"http://" + p.addr}})
		if err != nil {
			t.Fatalf("websocket %d: %v (%v)", i, err, resp)
		}
		defer c.Close()
		if _, _, err := c.ReadMessage(); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}

	// A 3 MiB upload at 1 MiB/s: SIGTERM arrives in its middle.
	const size = 3 << 20
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	halfway := make(chan struct{})
	go func() {
		part, _ := mw.CreateFormFile("image", "drain.png")
		chunk := make([]byte, 64<<10)
		tick := time.NewTicker(time.Second / 16)
		defer tick.Stop()
		for sent := 0; sent < size; sent += len(chunk) {
			<-tick.C
			if _, err := part.Write(chunk); err != nil {
				pw.CloseWithError(err)
				return
			}
			if sent == size/2 {
				close(halfway)
			}
		}
		pw.CloseWithError(mw.Close())
	}()
	uploadDone := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest("POST", "http://"+p.addr+"/upload/image", pr)
		req.Header.Set("Authorization", "Bearer "+processTestHash)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			uploadDone <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			uploadDone <- fmt.Sprintf("%d %s", resp.StatusCode, body)
			return
		}
		uploadDone <- ""
	}()
	<-halfway
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func(i int, c *websocket.Conn) {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						t.Errorf("websocket %d still open 5 s after SIGTERM", i)
					}
					return
				}
			}
		}(i, c)
	}
	wg.Wait()
	if msg := <-uploadDone; msg != "" {
		t.Fatalf("upload in flight at SIGTERM failed: %s\nstderr:\n%s", msg, p.stderr)
	}
	if code := p.exitCode(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0; stderr:\n%s", code, p.stderr)
	}
	rec, _ := fake.LastRequest("/upload/image")
	if rec.BodyBytes < size {
		t.Fatalf("ComfyUI received %d bytes of %d", rec.BodyBytes, size)
	}
	t.Logf("drained and exited %s after SIGTERM", time.Since(sent).Round(time.Millisecond))
}

// idleConnCount is how many keep-alive connections the idle test opens:
// 10,000, or COMFYUI_AUTH_TEST_IDLE_CONNS.
func idleConnCount() int {
	if n, err := strconv.Atoi(os.Getenv("COMFYUI_AUTH_TEST_IDLE_CONNS")); err == nil && n > 0 {
		return n
	}
	return 10_000
}

// raiseFileLimit lifts RLIMIT_NOFILE to hold want descriptors if the hard
// limit allows, and returns the soft limit now in force.
func raiseFileLimit(t *testing.T, want uint64) uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < want {
		old := lim
		lim.Cur = min(want, lim.Max)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatalf("raising the descriptor limit to %d: %v", lim.Cur, err)
		}
		t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
	}
	return lim.Cur
}

// rssKiB reads a process's resident memory from /proc.
func rssKiB(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestTenThousandIdleKeepAliveConnectionsStayBounded opens 10,000 keep-alive
// connections to the real binary, makes one request on each and leaves them
// idle: the gateway's memory stays bounded per connection and it keeps
// answering.
func TestTenThousandIdleKeepAliveConnectionsStayBounded(t *testing.T) {
	n := idleConnCount()
	if lim := raiseFileLimit(t, uint64(n)+1024); lim < uint64(n)+256 {
		t.Logf("descriptor limit %d: opening %d connections instead of %d", lim, lim-256, n)
		n = int(lim - 256)
	}
	_, up := fakecomfy.Start(t, fakecomfy.Options{})
	// One address holds them all: lift the per-client and overall bounds.
	bound := strconv.Itoa(n + 64)
	p := startGatewayProcess(t, up.URL, "--max-conns", bound, "--max-conns-per-client", bound)
	pid := p.cmd.Process.Pid
	before := rssKiB(t, pid)

	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	next := make(chan int)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := net.DialTimeout("tcp", p.addr, 10*time.Second)
				if err == nil {
					_ = c.SetDeadline(time.Now().Add(20 * time.Second))
					_, err = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
				}
				if err == nil {
					var resp *http.Response
					resp, err = http.ReadResponse(bufio.NewReader(c), nil)
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("connection %d: %w", i, err)
					}
					mu.Unlock()
					if c != nil {
						c.Close()
					}
					continue
				}
				conns[i] = c
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("opening %d keep-alive connections: %v", n, firstErr)
	}
	after := rssKiB(t, pid)
	perConn := float64(after-before) * 1024 / float64(n)
	t.Logf("%d idle connections: RSS %d → %d KiB (%.1f KiB per connection)", n, before, after, perConn/1024)
	if perConn > 64<<10 {
		t.Fatalf("%.1f KiB of gateway memory per idle connection, want under 64 KiB", perConn/1024)
	}
	start := time.Now()
	resp, err := http.Get("http://" + p.addr + "/healthz")
	if err != nil || resp.StatusCode != 200 || time.Since(start) > 2*time.Second {
		t.Fatalf("gateway with %d idle connections: %v %v after %s", n, err, resp, time.Since(start))
	}
	resp.Body.Close()
}
