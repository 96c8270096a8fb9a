package server

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// FuzzUpstreamResponse feeds arbitrary bytes to the synchronous transport
// as ComfyUI's answer to a first request, then sends a second request that
// ComfyUI answers with a fresh nonce. Whatever the first answer held, the
// second request gets the nonce or an error: never bytes left over from
// the first (a desynchronised, reused connection), never a panic or hang.
func FuzzUpstreamResponse(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-A\r\n\r\n2\r\nok\r\n0\r\nX-A: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\nEVIL",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
		"garbage\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, first []byte) {
		dog := time.AfterFunc(15*time.Second, func() {
			buf := make([]byte, 1<<20)
			panic("hung: " + string(buf[:runtime.Stack(buf, true)]))
		})
		defer dog.Stop()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Skip(err)
		}
		defer ln.Close()
		var nb [8]byte
		_, _ = rand.Read(nb[:])
		nonce := hex.EncodeToString(nb[:])
		second := "HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n" + nonce
		go func() {
			for conns := 0; ; conns++ {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func(c net.Conn, fuzzed bool) {
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					br := bufio.NewReader(c)
					for n := 0; ; n++ {
						r, err := http.ReadRequest(br)
						if err != nil {
							return
						}
						_ = c.SetDeadline(time.Now().Add(5 * time.Second))
						_, _ = io.Copy(io.Discard, r.Body)
						if fuzzed && n == 0 {
							_, _ = c.Write(first)
							// A client that took the answer as complete asks
							// again at once; one still waiting for bytes the
							// answer promised gets the end of the connection,
							// which keeps each run short.
							_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
						} else {
							_, _ = io.WriteString(c, second)
						}
					}
				}(c, conns == 0)
			}
		}()
		tr := newSyncTransport(ln.Addr().String(), time.Second, &http.Transport{})
		defer tr.Close()
		url := "http://" + ln.Addr().String() + "/x"
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		if resp, err := tr.RoundTrip(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		cancel()
		ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel2()
		req2, _ := http.NewRequestWithContext(ctx2, "GET", url, nil)
		resp, err := tr.RoundTrip(req2)
		if err != nil {
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && (resp.StatusCode != 200 || !strings.Contains(string(body), nonce) || len(body) != len(nonce)) {
			t.Fatalf("after a first answer of %q, the second request got %d %q, want ComfyUI's %q", first, resp.StatusCode, body, nonce)
		}
	})
}
