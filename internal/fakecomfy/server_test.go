package fakecomfy_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
)

// do sends one request and returns the status and body.
func do(t *testing.T, method, rawURL, host string, header http.Header, body io.Reader) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func TestOriginCheckRefusesMismatchOnlyForLoopbackHosts(t *testing.T) {
	_, ts := fakecomfy.Start(t, fakecomfy.Options{})
	_, open := fakecomfy.Start(t, fakecomfy.Options{DisableOriginCheck: true})

	tests := []struct {
		name   string
		host   string
		origin string // "" sends none
		method string
		path   string
		off    bool // against the server with DisableOriginCheck
		want   int
	}{
		{"same origin", "127.0.0.1:8188", "http://127.0.0.1:8188", "GET", "/system_stats", false, 200},
		{"proxy origin against loopback host", "127.0.0.1:8188", "https://comfy.example.com", "GET", "/system_stats", false, 403},
		{"prompt from foreign origin", "127.0.0.1:8188", "https://comfy.example.com", "POST", "/api/prompt", false, 403},
		{"upload from foreign origin", "localhost:8188", "https://comfy.example.com", "POST", "/api/upload/image", false, 403},
		{"other port", "127.0.0.1:8188", "http://127.0.0.1:9999", "GET", "/api/queue", false, 403},
		{"localhost vs 127.0.0.1", "localhost:8188", "http://127.0.0.1:8188", "GET", "/api/queue", false, 403},
		{"whole 127/8 is loopback", "127.5.5.5:1", "http://127.5.5.5:2", "GET", "/api/queue", false, 403},
		{"case-insensitive", "LOCALHOST:8188", "http://localhost:8188", "GET", "/api/queue", false, 200},
		{"ipv6 loopback", "[::1]:8188", "http://[::1]:8188", "GET", "/api/queue", false, 200},
		{"ipv6 loopback mismatch", "[::1]:8188", "http://example.com:8188", "GET", "/api/queue", false, 403},
		{"origin without port drops host port", "127.0.0.1:8188", "http://127.0.0.1", "GET", "/api/queue", false, 200},
		{"host without port drops origin port", "127.0.0.1", "http://127.0.0.1:8188", "GET", "/api/queue", false, 200},
		{"non-loopback host is not checked", "comfy.internal:8188", "https://evil.example", "POST", "/api/free", false, 200},
		{"no origin", "127.0.0.1:8188", "", "POST", "/api/free", false, 200},
		{"opaque origin null is skipped", "127.0.0.1:8188", "null", "POST", "/api/free", false, 200},
		{"unparsable origin port raises", "127.0.0.1:8188", "http://127.0.0.1:abc", "GET", "/api/queue", false, 500},
		{"options answered by the middleware", "127.0.0.1:8188", "http://127.0.0.1:8188", "OPTIONS", "/no/such/route", false, 200},
		{"check disabled", "127.0.0.1:8188", "https://comfy.example.com", "GET", "/system_stats", true, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := ts.URL
			if tt.off {
				base = open.URL
			}
			h := http.Header{}
			if tt.origin != "" {
				h.Set("Origin", tt.origin)
			}
			var body io.Reader
			if tt.path == "/api/free" {
				body = strings.NewReader(`{"free_memory":true}`)
			}
			got, _, b := do(t, tt.method, base+tt.path, tt.host, h, body)
			if got != tt.want {
				t.Fatalf("%s %s Host %q Origin %q: status %d, want %d (body %q)", tt.method, tt.path, tt.host, tt.origin, got, tt.want, b)
			}
			if got == 403 && len(b) != 0 {
				t.Errorf("403 body = %q, want the bare empty body ComfyUI sends", b)
			}
		})
	}
}

func TestOriginCheckCoversTheWebsocketUpgrade(t *testing.T) {
	_, ts := fakecomfy.Start(t, fakecomfy.Options{})
	wsURL := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws?clientId=x"
	hostPort := strings.TrimPrefix(ts.URL, "http://")

	tests := []struct {
		origin string
		want   int
	}{
		{"https://comfy.example.com", http.StatusForbidden},
		{"http://" + hostPort, http.StatusSwitchingProtocols},
	}
	for _, tt := range tests {
		t.Run(tt.origin, func(t *testing.T) {
			c, resp, err := websocket.DefaultDialer.Dial(wsURL, http.Header{"Origin": {tt.origin}})
			if c != nil {
				c.Close()
			}
			if resp == nil {
				t.Fatalf("dial: %v", err)
			}
			if resp.StatusCode != tt.want {
				t.Fatalf("handshake status %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

func TestUserdataFileSegmentIsMatchedOnTheRawPath(t *testing.T) {
	fake, ts := fakecomfy.Start(t, fakecomfy.Options{})
	workflow := `{"nodes":[]}`

	steps := []struct {
		method, path, body string
		want               int
		wantBody           string // "" skips the check
	}{
		{"POST", "/api/userdata/workflows%2Fa.json", workflow, 200, `"workflows/a.json"`},
		{"GET", "/api/userdata/workflows%2Fa.json", "", 200, workflow},
		{"GET", "/userdata/workflows%2Fa.json", "", 200, workflow},
		{"GET", "/api/userdata?dir=workflows", "", 200, `["a.json"]`},
		// A proxy that decodes %2F turns one segment into two: no route matches,
		// and the GET/HEAD catch-all makes it 405 for POST, 404 for GET.
		{"POST", "/api/userdata/workflows/a.json", workflow, 405, ""},
		{"DELETE", "/api/userdata/workflows/a.json", "", 405, ""},
		{"GET", "/api/userdata/workflows/a.json", "", 404, ""},
		// ComfyUI unquotes once more when a "%" survives: %252F also means "/".
		{"GET", "/api/userdata/workflows%252Fa.json", "", 200, workflow},
		{"POST", "/api/userdata/workflows%2Fa.json?overwrite=false", workflow, 409, ""},
		{"POST", "/api/userdata/..%2Fescape.json", workflow, 403, ""},
		{"POST", "/api/userdata/workflows%2Fa.json/move/workflows%2Fb.json", "", 200, `"workflows/b.json"`},
		{"DELETE", "/api/userdata/workflows%2Fb.json", "", 204, ""},
		{"GET", "/api/userdata/workflows%2Fb.json", "", 404, ""},
	}
	for _, st := range steps {
		got, _, b := do(t, st.method, ts.URL+st.path, "", nil, strings.NewReader(st.body))
		if got != st.want {
			t.Fatalf("%s %s: status %d, want %d (body %q)", st.method, st.path, got, st.want, b)
		}
		if st.wantBody != "" && string(b) != st.wantBody {
			t.Fatalf("%s %s: body %q, want %q", st.method, st.path, b, st.wantBody)
		}
	}

	rec, ok := fake.LastRequest("/api/userdata/workflows%2Fa.json")
	if !ok || rec.Path != "/api/userdata/workflows%2Fa.json/move/workflows%2Fb.json" {
		t.Fatalf("recorded path %q, want the escaped form kept", rec.Path)
	}
}

// syntheticBytes is what SyntheticByte promises for [from, to).
func syntheticBytes(from, to int64) []byte {
	b := make([]byte, 0, to-from)
	for i := from; i < to; i++ {
		b = append(b, fakecomfy.SyntheticByte(i))
	}
	return b
}

func TestViewHonoursRangeAndIfRange(t *testing.T) {
	_, ts := fakecomfy.Start(t, fakecomfy.Options{})
	const size = 1 << 20
	view := fmt.Sprintf("%s/api/view?filename=size-%d.bin&type=output&subfolder=", ts.URL, size)

	_, full, _ := do(t, "HEAD", view, "", nil, nil)
	etag := full.Get("Etag")
	if etag == "" || full.Get("Accept-Ranges") != "bytes" || full.Get("Content-Length") != fmt.Sprint(size) {
		t.Fatalf("HEAD headers %v: want Etag, Accept-Ranges: bytes and Content-Length %d", full, size)
	}

	tests := []struct {
		name      string
		header    http.Header
		want      int
		wantRange string
		from, to  int64
	}{
		{"range", http.Header{"Range": {"bytes=100-199"}}, 206, fmt.Sprintf("bytes 100-199/%d", size), 100, 200},
		{"suffix range", http.Header{"Range": {"bytes=-10"}}, 206, fmt.Sprintf("bytes %d-%d/%d", size-10, size-1, size), size - 10, size},
		{"if-range current etag", http.Header{"Range": {"bytes=0-9"}, "If-Range": {etag}}, 206, fmt.Sprintf("bytes 0-9/%d", size), 0, 10},
		{"if-range stale etag", http.Header{"Range": {"bytes=0-9"}, "If-Range": {`"stale"`}}, 200, "", 0, size},
		{"unsatisfiable", http.Header{"Range": {fmt.Sprintf("bytes=%d-", size+5)}}, 416, "", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, h, b := do(t, "GET", view, "", tt.header, nil)
			if got != tt.want || h.Get("Content-Range") != tt.wantRange && tt.wantRange != "" {
				t.Fatalf("status %d Content-Range %q, want %d %q", got, h.Get("Content-Range"), tt.want, tt.wantRange)
			}
			if tt.want != 416 && !bytes.Equal(b, syntheticBytes(tt.from, tt.to)) {
				t.Fatalf("body of %d bytes differs from synthetic bytes [%d,%d)", len(b), tt.from, tt.to)
			}
		})
	}

	if got, _, _ := do(t, "GET", ts.URL+"/view?filename=nothing.png", "", nil, nil); got != 404 {
		t.Errorf("missing file: status %d, want 404", got)
	}
	if got, _, _ := do(t, "GET", ts.URL+"/view?filename=../etc/passwd", "", nil, nil); got != 400 {
		t.Errorf("traversal: status %d, want 400", got)
	}
}

// countingWriter counts what the client really sent.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// upload streams a multipart body of size bytes through a pipe and returns
// the status, the decoded reply and how many body bytes the client sent.
func upload(t *testing.T, url, filename string, content io.Reader, fields map[string]string) (int, map[string]string, int64) {
	t.Helper()
	pr, pw := io.Pipe()
	cw := &countingWriter{w: pw}
	mw := multipart.NewWriter(cw)
	sent := make(chan int64, 1)
	go func() {
		defer func() { sent <- cw.n }()
		fw, err := mw.CreateFormFile("image", filename)
		if err == nil {
			_, err = io.Copy(fw, content)
		}
		for k, v := range fields {
			if err == nil {
				err = mw.WriteField(k, v)
			}
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequest("POST", url, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var reply map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&reply)
	resp.Body.Close() // the transport then closes the pipe, ending the writer
	return resp.StatusCode, reply, <-sent
}

func TestUploadIsStreamedCountedAndServedBack(t *testing.T) {
	fake, ts := fakecomfy.Start(t, fakecomfy.Options{MaxStoredFileSize: 64 << 10, MaxUploadSize: 1 << 20})

	small := []byte("\x89PNG fake image bytes")
	status, reply, _ := upload(t, ts.URL+"/api/upload/image", "cat.png", bytes.NewReader(small), map[string]string{"type": "input", "subfolder": "pets"})
	if status != 200 || reply["name"] != "cat.png" || reply["subfolder"] != "pets" || reply["type"] != "input" {
		t.Fatalf("small upload: %d %v", status, reply)
	}
	if got, _, b := do(t, "GET", ts.URL+"/api/view?filename=cat.png&type=input&subfolder=pets", "", nil, nil); got != 200 || !bytes.Equal(b, small) {
		t.Fatalf("view of the upload: %d %q", got, b)
	}
	// Same name, other content: ComfyUI renames instead of overwriting.
	if _, reply, _ := upload(t, ts.URL+"/upload/image", "cat.png", strings.NewReader("other"), map[string]string{"type": "input", "subfolder": "pets"}); reply["name"] != "cat (1).png" {
		t.Fatalf("second upload named %q, want %q", reply["name"], "cat (1).png")
	}

	const bigSize = 256 << 10 // over MaxStoredFileSize: counted and hashed, not kept
	big := io.LimitReader(&syntheticSource{}, bigSize)
	status, reply, sent := upload(t, ts.URL+"/api/upload/image", "big.bin", big, nil)
	if status != 200 || reply["name"] != "big.bin" {
		t.Fatalf("big upload: %d %v", status, reply)
	}
	rec, _ := fake.LastRequest("/api/upload/image")
	if rec.BodyBytes != sent {
		t.Errorf("recorded %d body bytes, client sent %d", rec.BodyBytes, sent)
	}
	h := sha256.New()
	_, _ = io.Copy(h, io.LimitReader(&syntheticSource{}, bigSize))
	var found bool
	for _, u := range fake.Uploads() {
		if u.Name == "big.bin" {
			found = true
			if u.Size != bigSize || u.SHA256 != hex.EncodeToString(h.Sum(nil)) || u.Stored {
				t.Errorf("big upload recorded as %+v, want size %d, matching hash, not stored", u, bigSize)
			}
		}
	}
	if !found {
		t.Fatal("big.bin missing from Uploads()")
	}

	status, _, _ = upload(t, ts.URL+"/api/upload/image", "huge.bin", io.LimitReader(&syntheticSource{}, 2<<20), nil)
	if status != http.StatusRequestEntityTooLarge {
		t.Errorf("upload over MaxUploadSize: status %d, want 413", status)
	}
}

// syntheticSource is an endless stream of SyntheticByte.
type syntheticSource struct{ off int64 }

func (s *syntheticSource) Read(p []byte) (int, error) {
	if len(p) >= 251 {
		// Fill one period by the book, then repeat it: SyntheticByte has period 251.
		for i := range 251 {
			p[i] = fakecomfy.SyntheticByte(s.off + int64(i))
		}
		for i := 251; i < len(p); i += copy(p[i:], p[:i]) {
		}
	} else {
		for i := range p {
			p[i] = fakecomfy.SyntheticByte(s.off + int64(i))
		}
	}
	s.off += int64(len(p))
	return len(p), nil
}

// frame is one websocket message as a test reads it.
type frame struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
	bin  []byte
}

func readFrame(t *testing.T, c *websocket.Conn) frame {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	mt, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read websocket: %v", err)
	}
	if mt == websocket.BinaryMessage {
		return frame{bin: b}
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("frame %q: %v", b, err)
	}
	return f
}

func dialWS(t *testing.T, ts *httptest.Server, path string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(ts.URL, "http")+path, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	return c
}

// eventually polls cond until it holds, failing the test after a deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// waitOpenWebsockets waits, on the fake's change channel, until n are open.
func waitOpenWebsockets(t *testing.T, fake *fakecomfy.Server, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		changed := fake.WebsocketsChanged()
		if fake.OpenWebsockets() == n {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("OpenWebsockets() = %d, want %d", fake.OpenWebsockets(), n)
		}
	}
}

func postPrompt(t *testing.T, ts *httptest.Server, body string) (int, map[string]any) {
	t.Helper()
	status, _, b := do(t, "POST", ts.URL+"/api/prompt", "", http.Header{"Content-Type": {"application/json"}}, strings.NewReader(body))
	var reply map[string]any
	if err := json.Unmarshal(b, &reply); err != nil {
		t.Fatalf("prompt reply %q: %v", b, err)
	}
	return status, reply
}

func TestWebsocketSendsStatusEchoesAndStreamsAnExecution(t *testing.T) {
	fake, ts := fakecomfy.Start(t, fakecomfy.Options{})
	c := dialWS(t, ts, "/api/ws?clientId=abc")
	defer c.Close()

	first := readFrame(t, c)
	if first.Type != "status" || string(first.Data) != `{"sid":"abc","status":{"exec_info":{"queue_remaining":0}}}` {
		t.Fatalf("first frame %s %s", first.Type, first.Data)
	}
	waitOpenWebsockets(t, fake, 1)

	if err := c.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if f := readFrame(t, c); f.Type != "echo" || string(f.Data) != `"hello"` {
		t.Fatalf("echo frame %s %s", f.Type, f.Data)
	}

	fake.Broadcast(map[string]any{"type": "custom", "data": 1})
	if f := readFrame(t, c); f.Type != "custom" {
		t.Fatalf("broadcast frame %s", f.Type)
	}
	fake.BroadcastBinary(fakecomfy.BinaryText, []byte("hi"))
	if f := readFrame(t, c); !bytes.Equal(f.bin, []byte{0, 0, 0, 3, 'h', 'i'}) {
		t.Fatalf("binary frame %v", f.bin)
	}

	status, reply := postPrompt(t, ts, `{"prompt":{"1":{"class_type":"X","inputs":{}}},"client_id":"abc"}`)
	id, _ := reply["prompt_id"].(string)
	if status != 200 || id == "" || reply["node_errors"] == nil {
		t.Fatalf("POST /api/prompt: %d %v", status, reply)
	}

	var types []string
	var image string
	for {
		f := readFrame(t, c)
		if f.bin != nil {
			types = append(types, fmt.Sprintf("binary:%d", binary.BigEndian.Uint32(f.bin)))
			continue
		}
		var d struct {
			Node   *string `json:"node"`
			Output struct {
				Images []struct{ Filename string } `json:"images"`
			} `json:"output"`
		}
		_ = json.Unmarshal(f.Data, &d)
		switch {
		case f.Type == "executing" && d.Node == nil:
			types = append(types, "executing:null")
		case f.Type == "executing":
			types = append(types, "executing:"+*d.Node)
		case f.Type == "executed":
			image = d.Output.Images[0].Filename
			types = append(types, f.Type)
		default:
			types = append(types, f.Type)
		}
		if types[len(types)-1] == "executing:null" {
			break
		}
	}
	want := "status execution_start execution_cached executing:1 progress binary:1 progress executed execution_success status executing:null"
	if got := strings.Join(types, " "); got != want {
		t.Fatalf("frames:\n got %s\nwant %s", got, want)
	}

	_, _, b := do(t, "GET", ts.URL+"/api/history/"+id, "", nil, nil)
	if !strings.Contains(string(b), `"filename":"`+image+`"`) || !fake.HasHistory(id) {
		t.Fatalf("history of %s lacks %s: %s", id, image, b)
	}
	if got, h, _ := do(t, "GET", ts.URL+"/view?filename="+image+"&type=output", "", nil, nil); got != 200 || h.Get("Content-Type") != "image/png" {
		t.Fatalf("view of output %s: %d %s", image, got, h.Get("Content-Type"))
	}

	c.Close()
	waitOpenWebsockets(t, fake, 0)
}

func TestInterruptStopsARunningPrompt(t *testing.T) {
	fake, ts := fakecomfy.Start(t, fakecomfy.Options{StepDelay: time.Hour})
	c := dialWS(t, ts, "/ws?clientId=i")
	defer c.Close()
	readFrame(t, c) // status

	_, reply := postPrompt(t, ts, `{"prompt":{"1":{"class_type":"X","inputs":{}}},"client_id":"i"}`)
	id := reply["prompt_id"].(string)
	for f := readFrame(t, c); f.Type != "execution_cached"; f = readFrame(t, c) {
	}
	_, _, q := do(t, "GET", ts.URL+"/api/queue", "", nil, nil)
	if !strings.Contains(string(q), id) {
		t.Fatalf("queue while running: %s", q)
	}
	if got, _, _ := do(t, "POST", ts.URL+"/api/interrupt", "", nil, nil); got != 200 {
		t.Fatalf("interrupt: %d", got)
	}
	var sawInterrupted bool
	for f := readFrame(t, c); ; f = readFrame(t, c) {
		sawInterrupted = sawInterrupted || f.Type == "execution_interrupted"
		if f.Type == "executing" && string(f.Data) == fmt.Sprintf(`{"node":null,"prompt_id":%q}`, id) {
			break
		}
	}
	if !sawInterrupted || !fake.HasHistory(id) {
		t.Fatalf("interrupted=%v history=%v", sawInterrupted, fake.HasHistory(id))
	}
}

func TestPromptValidation(t *testing.T) {
	_, ts := fakecomfy.Start(t, fakecomfy.Options{})
	tests := []struct {
		name, body string
		want       int
		errType    string
	}{
		{"malformed json", `{"prompt":`, 400, "invalid_json"},
		{"missing prompt", `{"client_id":"x"}`, 400, "no_prompt"},
		{"empty prompt", `{"prompt":{}}`, 400, "prompt_no_outputs"},
		{"node without class_type", `{"prompt":{"1":{"inputs":{}}}}`, 400, "invalid_prompt"},
		{"valid", `{"prompt":{"1":{"class_type":"X","inputs":{}}}}`, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, reply := postPrompt(t, ts, tt.body)
			if status != tt.want {
				t.Fatalf("status %d, want %d: %v", status, tt.want, reply)
			}
			if tt.want == 400 {
				e, _ := reply["error"].(map[string]any)
				if e["type"] != tt.errType || reply["node_errors"] == nil {
					t.Fatalf("reply %v, want error type %q and node_errors", reply, tt.errType)
				}
			}
		})
	}
}

func TestRoutesAnswerUnderTheirAPITwinExceptStaticAndInternal(t *testing.T) {
	_, ts := fakecomfy.Start(t, fakecomfy.Options{})
	tests := []struct {
		method, path  string
		want, apiWant int
	}{
		{"GET", "/", 200, 200},
		{"GET", "/system_stats", 200, 200},
		{"GET", "/object_info", 200, 200},
		{"GET", "/object_info/KSampler", 200, 200},
		{"GET", "/prompt", 200, 200},
		{"GET", "/queue", 200, 200},
		{"GET", "/history?max_items=5", 200, 200},
		{"GET", "/embeddings", 200, 200},
		{"GET", "/models", 200, 200},
		{"GET", "/models/checkpoints", 200, 200},
		{"GET", "/extensions", 200, 200},
		{"GET", "/features", 200, 200},
		{"GET", "/settings", 200, 200},
		{"GET", "/users", 200, 200},
		{"GET", "/userdata?dir=workflows", 200, 200},
		{"GET", "/stream?chunks=1", 200, 200},
		{"GET", "/slow?ms=1", 200, 200},
		{"POST", "/interrupt", 200, 200},
		{"GET", "/ws", 400, 400}, // not an upgrade
		{"GET", "/internal/logs", 200, 404},
		{"GET", "/internal/folder_paths", 200, 404},
		{"GET", "/scripts/app.js", 200, 404},
		{"GET", "/extensions/core/example.js", 200, 404},
		{"GET", "/no/such/page", 404, 404},
		{"POST", "/no/such/route", 405, 405},
		{"PUT", "/prompt", 405, 405},
	}
	for _, tt := range tests {
		for _, prefix := range []string{"", "/api"} {
			want := tt.want
			if prefix != "" {
				want = tt.apiWant
			}
			if got, _, b := do(t, tt.method, ts.URL+prefix+tt.path, "", nil, nil); got != want {
				t.Errorf("%s %s%s: status %d, want %d (%.80q)", tt.method, prefix, tt.path, got, want, b)
			}
		}
	}

	_, h, b := do(t, "GET", ts.URL+"/", "", nil, nil)
	if h.Get("Cache-Control") != "no-cache" || !strings.Contains(string(b), `src="/scripts/app.js"`) {
		t.Errorf("index: Cache-Control %q, body %q", h.Get("Cache-Control"), b)
	}
	_, _, b = do(t, "GET", ts.URL+"/api/extensions", "", nil, nil)
	if string(b) != `["/extensions/core/example.js"]` {
		t.Errorf("/api/extensions = %s", b)
	}
	_, _, b = do(t, "GET", ts.URL+"/api/system_stats", "", nil, nil)
	var stats struct {
		System struct {
			Version string `json:"comfyui_version"`
		}
		Devices []map[string]any
	}
	if err := json.Unmarshal(b, &stats); err != nil || stats.System.Version != "0.3.64" || len(stats.Devices) != 1 {
		t.Errorf("system_stats %s", b)
	}
}

func TestRecordsWhatArrived(t *testing.T) {
	fake, ts := fakecomfy.Start(t, fakecomfy.Options{})
	do(t, "GET", ts.URL+"/api/history?max_items=5&token=zzz", "gateway.test", http.Header{"Authorization": {"Bearer x"}}, nil)
	do(t, "POST", ts.URL+"/api/free", "", nil, strings.NewReader(`{"unload_models":true}`))

	rec, ok := fake.LastRequest("/api/history")
	if !ok || rec.Method != "GET" || rec.RawQuery != "max_items=5&token=zzz" || rec.Host != "gateway.test" ||
		rec.Header.Get("Authorization") != "Bearer x" || rec.Status != 200 {
		t.Fatalf("recorded %+v", rec)
	}
	free, _ := fake.LastRequest("/api/free")
	if free.BodyBytes != int64(len(`{"unload_models":true}`)) {
		t.Errorf("free body bytes %d", free.BodyBytes)
	}
	if n := len(fake.Requests()); n != 2 {
		t.Errorf("%d requests recorded, want 2", n)
	}
	fake.Reset()
	if _, ok := fake.LastRequest(""); ok {
		t.Error("Reset kept requests")
	}
}

func TestStreamFlushesEachChunkAsItIsWritten(t *testing.T) {
	_, ts := fakecomfy.Start(t, fakecomfy.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The second chunk would come an hour later: reading the first proves it was flushed.
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/api/stream?chunks=2&interval_ms=3600000", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line := make([]byte, len("chunk 0\n"))
	if _, err := io.ReadFull(resp.Body, line); err != nil || string(line) != "chunk 0\n" {
		t.Fatalf("first chunk %q: %v", line, err)
	}
}

func TestDelayHookHoldsMatchingRequests(t *testing.T) {
	release := make(chan struct{})
	_, ts := fakecomfy.Start(t, fakecomfy.Options{Delay: func(r *http.Request) time.Duration {
		if r.URL.Path == "/api/queue" {
			<-release // a hook may block as well as return a duration
		}
		return 0
	}})
	done := make(chan int)
	go func() {
		resp, err := http.Get(ts.URL + "/api/queue")
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	if got, _, _ := do(t, "GET", ts.URL+"/api/prompt", "", nil, nil); got != 200 {
		t.Fatalf("unaffected route: %d", got)
	}
	select {
	case <-done:
		t.Fatal("held request finished before release")
	default:
	}
	close(release)
	if got := <-done; got != 200 {
		t.Fatalf("held request: %d", got)
	}
}

func TestHistoryMaxItemsKeepsTheNewest(t *testing.T) {
	fake, ts := fakecomfy.Start(t, fakecomfy.Options{})
	var ids []string
	for range 3 {
		_, reply := postPrompt(t, ts, `{"prompt":{"1":{"class_type":"X","inputs":{}}}}`)
		ids = append(ids, reply["prompt_id"].(string))
	}
	eventually(t, "third prompt in history", func() bool { return fake.HasHistory(ids[2]) })
	_, _, b := do(t, "GET", ts.URL+"/history?max_items=2", "", nil, nil)
	var h map[string]any
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	_, hasOld := h[ids[0]]
	if len(h) != 2 || hasOld {
		t.Fatalf("max_items=2 gave %d entries (oldest present: %v)", len(h), hasOld)
	}
	u, _ := url.Parse(ts.URL + "/api/history")
	if got, _, _ := do(t, "POST", u.String(), "", nil, strings.NewReader(`{"clear":true}`)); got != 200 {
		t.Fatalf("clear history: %d", got)
	}
	if _, _, b := do(t, "GET", u.String(), "", nil, nil); string(b) != "{}" {
		t.Fatalf("history after clear: %s", b)
	}
}
