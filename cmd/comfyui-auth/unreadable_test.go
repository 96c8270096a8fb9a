package main

import (
	"io"
	"net"
	"net/http"
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

// TestUnreadableHashFileKeepsLastGoodCredentials removes the read
// permission from the hash file under a gateway that is not root (root reads
// any file, so the in-process server test cannot cover this as root). The
// last good credentials keep working, /readyz says it is degraded, the log
// says so once, and restoring the mode recovers without restart.
func TestUnreadableHashFileKeepsLastGoodCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start the gateway as another user; as a normal user server.TestCredentialFileFaultsKeepLastGoodCredentials covers it")
	}
	_, up := fakecomfy.Start(t, fakecomfy.Options{})
	dir, err := os.MkdirTemp("", "unreadable-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(dir, 0o755))
	bin := filepath.Join(dir, "comfyui-auth")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("unreadable-token"), bcrypt.MinCost)
	hashFile := filepath.Join(dir, "token")
	must(os.WriteFile(hashFile, hash, 0o644))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "serve", "--listen", addr, "--upstream", up.URL, "--hash-file", hashFile, "--poll-interval", "200ms")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	must(cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	get := func(path string, auth bool) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		if auth {
			req.Header.Set("Authorization", "Bearer unreadable-token")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor(t, "the gateway lets the token in", 10*time.Second, func() bool { c, _ := get("/queue", true); return c == 200 })

	must(os.Chmod(hashFile, 0))
	waitFor(t, "readiness reports the unreadable file", 5*time.Second, func() bool {
		_, body := get("/readyz", false)
		return strings.Contains(body, "degraded")
	})
	if c, body := get("/queue", true); c != 200 {
		t.Fatalf("last good token refused while the file is unreadable: %d %s", c, body)
	}
	// A second of polls passes; the problem is logged once.
	waitFor(t, "more polls", 5*time.Second, func() bool { return strings.Count(stderr.String(), "permission denied") >= 1 })
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if c, _ := get("/queue", true); c != 200 {
			t.Fatalf("token refused during polls: %d", c)
		}
	}
	if n := strings.Count(stderr.String(), "permission denied"); n != 1 {
		t.Fatalf("permission problem logged %d times, want once:\n%s", n, stderr)
	}

	must(os.Chmod(hashFile, 0o644))
	waitFor(t, "recovery", 5*time.Second, func() bool {
		c, body := get("/readyz", false)
		return c == 200 && !strings.Contains(body, "degraded")
	})
}
