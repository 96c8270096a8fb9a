package server

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/comfyui-auth/comfyui-auth/internal/logbuf"
)

// The seeds' public test vector: this raw token matches this hash.
const (
	seedToken = "@TKEoMzUx&)F@B$^1O3hkt&VkDWp0JXf"
	seedHash  = "$2b$12$UDceblhZeEySDwVMC0ccN.IaQmMBfKdTY.aAE3poXcq1zsOP6coni"
)

// syncBuffer collects log output from many goroutines.
type syncBuffer = logbuf.Buffer

// allLogs gathers every gateway log line of the package's tests, so that
// TestMain can check no secret ever reached a log.
var allLogs syncBuffer

// secretsSeen are values no log line may contain.
var secretsSeen = struct {
	sync.Mutex
	values map[string]bool
}{values: map[string]bool{seedToken: true, seedHash: true}}

func rememberSecret(s string) {
	secretsSeen.Lock()
	secretsSeen.values[s] = true
	secretsSeen.Unlock()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		logs := allLogs.String()
		for s := range secretsSeen.values {
			if len(s) >= 8 && strings.Contains(logs, s) {
				os.Stderr.WriteString("FAIL: a secret reached the gateway log\n")
				code = 1
			}
		}
	}
	os.Exit(code)
}

type gateway struct {
	URL      string
	Server   *Server
	Fake     *fakecomfy.Server
	Upstream *httptest.Server
	HashFile string
	Logs     *syncBuffer
	stop     context.CancelFunc
	done     chan error
}

type gatewayOpts struct {
	hashContent *string // nil: the seed hash; pointer to "": no file
	configure   func(*Config)
	fake        fakecomfy.Options
	// discardLogs formats log lines but keeps none: benchmarks, whose
	// millions of lines would otherwise grow the shared log buffer and put
	// its copying into the profile.
	discardLogs bool
}

// startGateway runs a fake ComfyUI and a gateway in front of it, both on
// loopback, and stops them when the test ends.
func startGateway(t testing.TB, o gatewayOpts) *gateway {
	t.Helper()
	fake := fakecomfy.New(o.fake)
	up := httptest.NewServer(fake)
	t.Cleanup(func() { fake.Close(); up.Close() })

	dir := t.TempDir()
	hashFile := filepath.Join(dir, "qwen-api-user.token")
	content := seedHash
	if o.hashContent != nil {
		content = *o.hashContent
	}
	if content != "" {
		if err := os.WriteFile(hashFile, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := testConfig()
	cfg.Upstream = up.URL
	cfg.HashFile = hashFile
	if o.configure != nil {
		o.configure(&cfg)
	}
	logs := &syncBuffer{}
	var out io.Writer = zerolog.MultiLevelWriter(logs, &allLogs)
	if o.discardLogs {
		out = io.Discard
	}
	logger := zerolog.New(out).With().Timestamp().Logger()
	srv, err := New(cfg, logger)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &gateway{URL: "http://" + ln.Addr().String(), Server: srv, Fake: fake, Upstream: up,
		HashFile: hashFile, Logs: logs, stop: cancel, done: make(chan error, 1)}
	go func() { g.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(g.Stop)
	return g
}

// Stop shuts the gateway down and waits for Serve to return.
func (g *gateway) Stop() {
	g.stop()
	if g.done != nil {
		<-g.done
		g.done = nil
	}
}

// do sends a request with optional headers ("Name: value").
func (g *gateway) do(t testing.TB, method, path string, body []byte, headers ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, g.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

var noRedirect = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{Proxy: nil},
}

// lowCostHash makes a fast hash for tests that do many verifications.
func lowCostHash(t testing.TB, token string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(token), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	rememberSecret(token)
	rememberSecret(string(h))
	return string(h)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ptr[T any](v T) *T { return &v }

// testConfig is the configuration the gateway tests start from: the
// product's defaults as cmd/comfyui-auth's settings table gives them, except
// for a loopback port, a fast poll, two bcrypt workers and a short drain.
// The table itself is tested in cmd/comfyui-auth; these are test choices.
func testConfig() Config {
	return Config{
		Listen:            "127.0.0.1:0",
		Upstream:          "http://127.0.0.1:8189",
		AuthEnabled:       true,
		AcceptHashToken:   true,
		BcryptWorkers:     2,
		BcryptQueue:       64,
		BcryptMaxWait:     2 * time.Second,
		PollInterval:      200 * time.Millisecond,
		UpstreamTimeout:   120 * time.Second,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ShutdownTimeout:   5 * time.Second,
		MaxLoginAttempts:  5,
		ThrottleWindow:    5 * time.Minute,
		ThrottleLock:      time.Minute,
		SessionExpire:     24 * time.Hour,
		LogLevel:          "info",
	}
}
