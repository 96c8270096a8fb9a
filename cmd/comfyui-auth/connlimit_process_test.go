package main

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
	"golang.org/x/crypto/bcrypt"
)

// TestReloadWorksWhenTheConnectionBoundIsReached runs the real binary with
// 512 descriptors, opens 600 connections that never finish their request,
// then rotates the hash file: the reload must still open it. Without a
// connection bound below the descriptor limit, the connections take every
// descriptor and the reload fails with "too many open files". Run once with
// file events only (a one-hour poll) and once with fast polling too.
func TestReloadWorksWhenTheConnectionBoundIsReached(t *testing.T) {
	const fileLimit, flood = 512, 600
	if lim := raiseFileLimit(t, flood+512); lim < flood+256 {
		t.Skipf("descriptor limit %d is too low to open %d connections", lim, flood)
	}
	for _, poll := range []string{"1h", "200ms"} {
		t.Run("poll "+poll, func(t *testing.T) {
			_, up := fakecomfy.Start(t, fakecomfy.Options{})
			p := startGatewayProcessLimited(t, up.URL, fileLimit, "--poll-interval", poll, "--read-header-timeout", "2m")
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for i := 0; i < flood; i++ {
				c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
				if err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
				_, _ = io.WriteString(c, "GET /queue HTTP/1.1\r\nHost: x\r\n")
				conns = append(conns, c)
			}
			// The flood has arrived once the gateway refuses connections,
			// or (without a bound) has used up its descriptors.
			fds := filepath.Join("/proc", strconv.Itoa(p.cmd.Process.Pid), "fd")
			waitFor(t, "the gateway reaches its connection bound or its descriptor limit", 20*time.Second, func() bool {
				if strings.Contains(p.stderr.String(), "connection limit reached") {
					return true
				}
				ents, err := os.ReadDir(fds)
				return err == nil && len(ents) >= fileLimit-4
			})

			h, err := bcrypt.GenerateFromPassword([]byte("rotated-under-load"), bcrypt.MinCost)
			if err != nil {
				t.Fatal(err)
			}
			tmp := filepath.Join(filepath.Dir(p.hashFile), "token.new")
			if err := os.WriteFile(tmp, h, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, p.hashFile); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the rotated hash file is reloaded", 20*time.Second, func() bool {
				return strings.Contains(p.stderr.String(), "credentials reloaded")
			})
			if s := p.stderr.String(); strings.Contains(s, "too many open files") {
				t.Fatalf("the gateway ran out of descriptors:\n%s", tail(s, 2000))
			}
		})
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
