package server

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
	"github.com/comfyui-auth/comfyui-auth/middleware"
	"github.com/gorilla/websocket"
)

func TestUpstreamNeverSeesOurCredentials(t *testing.T) {
	g := startGateway(t, gatewayOpts{fake: fakecomfy.Options{DisableOriginCheck: true}})
	resp := g.do(t, "GET", "/history?max_items=5&token="+url.QueryEscape(seedHash)+"&b=%2F&token=again", nil,
		"Authorization: Bearer "+seedHash,
		"Cookie: comfyui_auth_session=secretcookievalue; theme=dark",
		"Comfy-User: admin",
		"Origin: "+g.URL)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	rec, ok := g.Fake.LastRequest("/history")
	if !ok {
		t.Fatal("request did not reach ComfyUI")
	}
	if v := rec.Header.Get("Authorization"); v != "" {
		t.Errorf("upstream saw Authorization %q", v)
	}
	if rec.RawQuery != "max_items=5&b=%2F" {
		t.Errorf("upstream query = %q, want the other parameters unchanged", rec.RawQuery)
	}
	if c := rec.Header.Get("Cookie"); c != "theme=dark" {
		t.Errorf("upstream Cookie = %q, want only theme=dark", c)
	}
	if v := rec.Header.Get("Comfy-User"); v != "" {
		t.Errorf("upstream saw Comfy-User %q", v)
	}
	upHost := strings.TrimPrefix(g.Upstream.URL, "http://")
	if rec.Host != upHost {
		t.Errorf("upstream Host = %q, want %q", rec.Host, upHost)
	}
	if o := rec.Header.Get("Origin"); o != g.Upstream.URL {
		t.Errorf("upstream Origin = %q, want it rewritten to %q", o, g.Upstream.URL)
	}
	if rec.Header.Get("X-Forwarded-For") != "127.0.0.1" || rec.Header.Get("X-Forwarded-Proto") != "http" ||
		rec.Header.Get("X-Forwarded-Host") != strings.TrimPrefix(g.URL, "http://") {
		t.Errorf("X-Forwarded-* = %q %q %q", rec.Header.Get("X-Forwarded-For"), rec.Header.Get("X-Forwarded-Proto"), rec.Header.Get("X-Forwarded-Host"))
	}
}

func TestAcceptedRequestsPassComfyUIsOriginCheck(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	body := []byte(`{"prompt":{"1":{"class_type":"KSampler","inputs":{}}},"client_id":"c1"}`)
	resp := g.do(t, "POST", "/api/prompt", body, "Authorization: Bearer "+seedHash, "Origin: "+g.URL, "Content-Type: application/json")
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("same-origin POST through the gateway = %d (%s), want 200", resp.StatusCode, b)
	}
	// A foreign Origin is not laundered: ComfyUI refuses it as it would
	// without the gateway.
	resp = g.do(t, "POST", "/api/prompt", body, "Authorization: Bearer "+seedHash, "Origin: https://evil.example", "Content-Type: application/json")
	if resp.StatusCode != 403 {
		t.Fatalf("cross-origin POST = %d, want ComfyUI's 403", resp.StatusCode)
	}
}

func TestEscapedSlashInUserdataIsForwardedRaw(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	auth := "Authorization: Bearer " + seedHash
	resp := g.do(t, "POST", "/api/userdata/workflows%2Fa.json?overwrite=true", []byte(`{"nodes":[]}`), auth, "Content-Type: application/json")
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("saving a workflow = %d (%s), want 200", resp.StatusCode, b)
	}
	rec, _ := g.Fake.LastRequest("/api/userdata/")
	if rec.Path != "/api/userdata/workflows%2Fa.json" {
		t.Fatalf("upstream path = %q", rec.Path)
	}
	resp = g.do(t, "GET", "/api/userdata/workflows%2Fa.json", nil, auth)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != `{"nodes":[]}` {
		t.Fatalf("reading it back = %d %q", resp.StatusCode, b)
	}
}

func TestRangeRequestsPassThrough(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	resp := g.do(t, "GET", "/view?filename=size-1048576.bin&type=output", nil, "Authorization: Bearer "+seedHash, "Range: bytes=100-199")
	if resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("status %d, want 206", resp.StatusCode)
	}
	b, _ := io.ReadAll(resp.Body)
	if len(b) != 100 || !strings.HasPrefix(resp.Header.Get("Content-Range"), "bytes 100-199/") {
		t.Fatalf("got %d bytes, Content-Range %q", len(b), resp.Header.Get("Content-Range"))
	}
}

func dialWS(t *testing.T, g *gateway, path string, header http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, Proxy: nil}
	return d.Dial("ws"+strings.TrimPrefix(g.URL, "http")+path, header)
}

func TestWebsocketFramesFlowBothWays(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	h := http.Header{"Origin": {g.URL}}
	conn, resp, err := dialWS(t, g, "/ws?clientId=c1&token="+url.QueryEscape(seedToken), h)
	if err != nil {
		t.Fatalf("dial: %v (response %v)", err, resp)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var frame struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if err := conn.ReadJSON(&frame); err != nil || frame.Type != "status" {
		t.Fatalf("first frame %q, err %v; want status", frame.Type, err)
	}
	if err := conn.WriteMessage(websocket.TextMessage, []byte("ping-from-client")); err != nil {
		t.Fatal(err)
	}
	for {
		if err := conn.ReadJSON(&frame); err != nil {
			t.Fatalf("reading echo: %v", err)
		}
		if frame.Type == "echo" {
			break
		}
	}
	if !strings.Contains(string(frame.Data), "ping-from-client") {
		t.Fatalf("echo data %s", frame.Data)
	}
	rec, _ := g.Fake.LastRequest("/ws")
	if strings.Contains(rec.RawQuery, "token") {
		t.Fatalf("websocket query reached ComfyUI with the token: %q", rec.RawQuery)
	}
	// Execution progress reaches the client through the gateway.
	body := []byte(`{"prompt":{"1":{"class_type":"SaveImage","inputs":{}}},"client_id":"c1"}`)
	if r := g.do(t, "POST", "/prompt", body, "Authorization: Bearer "+seedHash); r.StatusCode != 200 {
		t.Fatalf("queueing: %d", r.StatusCode)
	}
	for {
		kind, msg, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for executing(null): %v", err)
		}
		if kind != websocket.TextMessage {
			continue // preview images are binary frames
		}
		if err := json.Unmarshal(msg, &frame); err != nil {
			t.Fatalf("text frame is not JSON: %v", err)
		}
		if frame.Type == "executing" && strings.Contains(string(frame.Data), `"node":null`) {
			break
		}
	}
}

func TestLargeUploadStreamsWithBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("100 MiB upload")
	}
	g := startGateway(t, gatewayOpts{})
	const size = 100 << 20
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		part, _ := mw.CreateFormFile("image", "big.bin")
		buf := make([]byte, 1<<20)
		_, _ = rand.Read(buf)
		for written := 0; written < size-(1<<20); written += len(buf) {
			if _, err := part.Write(buf); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		_ = mw.WriteField("type", "input")
		pw.CloseWithError(mw.Close())
	}()

	var peak atomic.Uint64
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peak.Load() {
					peak.Store(m.HeapInuse)
				}
			}
		}
	}()
	req, _ := http.NewRequest("POST", g.URL+"/upload/image", pr)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+seedHash)
	resp, err := noRedirect.Do(req)
	close(stop)
	<-sampled
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("upload = %d %s", resp.StatusCode, b)
	}
	rec, _ := g.Fake.LastRequest("/upload/image")
	if rec.BodyBytes < size-(2<<20) {
		t.Fatalf("ComfyUI read %d bytes, want about %d", rec.BodyBytes, size)
	}
	// Test process and gateway share a heap; the fake keeps no file this
	// large. Streaming keeps growth to buffers, far below the upload size.
	if grow := int64(peak.Load()) - int64(base); grow > 32<<20 {
		t.Fatalf("heap grew by %d MiB during a 100 MiB upload: the body is being buffered", grow>>20)
	}
}

func TestUpstreamDownAnswers502(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.Upstream = "http://" + dead }})
	resp := g.do(t, "GET", "/system_stats", nil, "Authorization: Bearer "+seedHash)
	if resp.StatusCode != http.StatusBadGateway || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("API client: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var body map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if body["code"] != string(middleware.CodeUpstreamDown) || body["error"] == "" {
		t.Fatalf("error %q code %q, want code %s", body["error"], body["code"], middleware.CodeUpstreamDown)
	}
	resp = g.do(t, "GET", "/", nil, "Authorization: Bearer "+seedHash, "Accept: text/html")
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), "may still be starting") {
		t.Fatalf("browser: %d %s", resp.StatusCode, b)
	}
	if r := g.do(t, "GET", "/readyz", nil); r.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz with ComfyUI down = %d", r.StatusCode)
	}
	if r := g.do(t, "GET", "/healthz", nil); r.StatusCode != 200 {
		t.Fatalf("healthz = %d", r.StatusCode)
	}
}

func TestSlowUpstreamGets504AfterTheBound(t *testing.T) {
	g := startGateway(t, gatewayOpts{
		configure: func(c *Config) { c.UpstreamTimeout = 300 * time.Millisecond },
		fake: fakecomfy.Options{Delay: func(r *http.Request) time.Duration {
			if strings.HasPrefix(r.URL.Path, "/object_info") {
				return time.Minute
			}
			return 0
		}},
	})
	resp := g.do(t, "GET", "/object_info", nil, "Authorization: Bearer "+seedHash)
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", resp.StatusCode)
	}
	if r := g.do(t, "GET", "/queue", nil, "Authorization: Bearer "+seedHash); r.StatusCode != 200 {
		t.Fatalf("other requests still served: %d", r.StatusCode)
	}
}

func TestReadyzNeedsCredentialsAndUpstream(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	resp := g.do(t, "GET", "/readyz", nil)
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("readyz = %d %s", resp.StatusCode, b)
	}
}

func TestShutdownClosesWebsocketsAndReturns(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	var conns []*websocket.Conn
	for i := 0; i < 5; i++ {
		c, _, err := dialWS(t, g, fmt.Sprintf("/ws?clientId=s%d&token=%s", i, url.QueryEscape(seedHash)), nil)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	eventually(t, 5*time.Second, "websockets counted", func() bool { return g.Server.OpenWebsockets() == 5 })
	start := time.Now()
	g.Stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("shutdown took %s", d)
	}
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				break // closed, as wanted
			}
		}
		c.Close()
	}
	if n := g.Server.OpenWebsockets(); n != 0 {
		t.Fatalf("%d websockets still open", n)
	}
}
