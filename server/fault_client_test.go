package server

import (
	"bufio"
	"errors"
	"fmt"
	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestSlowlorisHeadersAreCutByReadHeaderTimeout(t *testing.T) {
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.ReadHeaderTimeout = 500 * time.Millisecond }})
	conn, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
	must(t, err)
	defer conn.Close()
	start := time.Now()
	// Trickle a header line every 100 ms, forever: each byte arrives well
	// within any per-read timeout, so only a whole-header deadline stops it.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		fmt.Fprintf(conn, "GET /queue HTTP/1.1\r\nHost: x\r\n")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := fmt.Fprintf(conn, "X-Slow-%d: y\r\n", i); err != nil {
					return
				}
			}
		}
	}()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.Copy(io.Discard, conn) // ends when the server closes
	if errors.Is(err, syscall.ECONNRESET) {
		err = nil // closed while we were still trickling: a reset, not a FIN
	}
	if d := time.Since(start); err != nil || d > 3*time.Second {
		t.Fatalf("connection not closed by the server: err %v after %s", err, d)
	}
}

func TestOneMegabyteHeaderIsRefused(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	resp, err := rawRequestWithHeader(g, "X-Big: "+strings.Repeat("a", 1<<20))
	if err != nil {
		// Closing the connection on the client is an acceptable refusal too.
		t.Logf("connection closed: %v", err)
	} else if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("1 MB header = %d, want 431", resp.StatusCode)
	}
	if n := len(g.Fake.Requests()); n != 0 {
		t.Fatalf("a 1 MB header reached ComfyUI")
	}
	if s := status(t, g, seedHash); s != 200 {
		t.Fatalf("gateway after the big header = %d", s)
	}
}

func rawRequestWithHeader(g *gateway, header string) (*http.Response, error) {
	conn, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	go fmt.Fprintf(conn, "GET /queue HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s\r\n\r\n", seedHash, header)
	return http.ReadResponse(bufio.NewReader(conn), nil)
}

// slowUploadMiB is the size of the paced upload: 20 MiB at 1 MiB/s by
// default (20 s), the full 100 MiB (100 s) with COMFYUI_AUTH_TEST_FULL=1.
func slowUploadMiB() int {
	if os.Getenv("COMFYUI_AUTH_TEST_FULL") == "1" {
		return 100
	}
	return 20
}

// TestSlowUploadIsNotCutOff uploads at 1 MiB/s: no server timeout may cut
// a slow but steady client (ComfyUI's own limit is 100 MiB).
func TestSlowUploadIsNotCutOff(t *testing.T) {
	if testing.Short() {
		t.Skip("paced upload takes 20 s")
	}
	t.Parallel()
	size := slowUploadMiB() << 20
	// ComfyUI refuses bodies over --max-upload-size (100 MiB by default)
	// with 413; 100 MiB of file plus the multipart framing is just over, so
	// this "ComfyUI" runs with a limit one MiB higher.
	g := startGateway(t, gatewayOpts{
		configure: func(c *Config) { c.ReadHeaderTimeout = time.Second },
		fake:      fakecomfy.Options{MaxUploadSize: int64(size) + 1<<20},
	})
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		part, err := mw.CreateFormFile("image", "slow.png")
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		chunk := make([]byte, 64<<10)
		tick := time.NewTicker(time.Second / 16) // 16 × 64 KiB = 1 MiB/s
		defer tick.Stop()
		for sent := 0; sent < size; sent += len(chunk) {
			<-tick.C
			if _, err := part.Write(chunk); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		_ = mw.WriteField("overwrite", "true")
		pw.CloseWithError(mw.Close())
	}()
	req, _ := http.NewRequest("POST", g.URL+"/upload/image", pr)
	req.Header.Set("Authorization", "Bearer "+seedHash)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	start := time.Now()
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatalf("slow upload cut after %s: %v", time.Since(start), err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("slow upload = %d %s", resp.StatusCode, body)
	}
	rec, _ := g.Fake.LastRequest("/upload/image")
	if rec.BodyBytes < int64(size) {
		t.Fatalf("ComfyUI read %d bytes, want at least %d", rec.BodyBytes, size)
	}
	t.Logf("%d MiB in %s", size>>20, time.Since(start).Round(time.Millisecond))
}

// TestClientThatNeverReadsIsNotBuffered: an upstream that writes without
// end to a client that never reads is held back by TCP flow control; the
// gateway does not buffer the difference.
func TestClientThatNeverReadsIsNotBuffered(t *testing.T) {
	var written atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 64<<10)
		for {
			n, err := w.Write(buf)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	t.Cleanup(up.Close)
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Upstream = up.URL }})
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heapBefore := ms.HeapInuse

	conn, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
	must(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "GET /view?filename=huge.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", seedHash)
	// Read only the status line, then never again.
	line, err := bufio.NewReaderSize(conn, 64).ReadString('\n')
	if err != nil || !strings.Contains(line, "200") {
		t.Fatalf("status line %q, %v", line, err)
	}
	// Wait until the upstream is blocked: no progress for 300 ms.
	last, lastChange := int64(-1), time.Now()
	eventually(t, 20*time.Second, "the upstream blocks on flow control", func() bool {
		if n := written.Load(); n != last {
			last, lastChange = n, time.Now()
			return false
		}
		return time.Since(lastChange) > 300*time.Millisecond
	})
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if last > 64<<20 {
		t.Fatalf("%d MiB left the upstream for a client that reads nothing", last>>20)
	}
	if grown := int64(ms.HeapInuse) - int64(heapBefore); grown > 16<<20 {
		t.Fatalf("heap grew by %d MiB", grown>>20)
	}
	t.Logf("upstream stopped after %s bytes", strconv.FormatInt(last, 10))
}
