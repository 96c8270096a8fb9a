package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
	"github.com/comfyui-auth/comfyui-auth/server"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

// startProbeGateway runs the real gateway on loopback in front of upstream,
// with hashContent in its hash file ("" for no file), until the test ends.
func startProbeGateway(t *testing.T, upstream, hashContent string) string {
	t.Helper()
	hashFile := filepath.Join(t.TempDir(), "qwen-api-user.token")
	if hashContent != "" {
		if err := os.WriteFile(hashFile, []byte(hashContent), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := defaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Upstream = upstream
	cfg.HashFile = hashFile
	cfg.BcryptWorkers = 1
	return serveGateway(t, cfg)
}

// serveGateway runs the real gateway with cfg on loopback until the test
// ends, and returns its base URL.
func serveGateway(t *testing.T, cfg server.Config) string {
	t.Helper()
	srv, err := server.New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + ln.Addr().String()
}

// lockOut sends wrong tokens to the gateway at base from this address until
// it answers 429.
func lockOut(t *testing.T, base string) {
	t.Helper()
	for i := 0; i < 50; i++ {
		req, _ := http.NewRequest("GET", base+"/system_stats", nil)
		req.Header.Set("Authorization", "Bearer lockout-guess-"+strconv.Itoa(i))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			return
		}
	}
	t.Fatal("50 wrong tokens did not lock this address out")
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// stub answers /readyz with 200 and /system_stats with the given status.
func stub(t *testing.T, status int, header, body string) string {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			w.Write([]byte(`{"status":"ready"}`))
			return
		}
		if k, v, ok := strings.Cut(header, ": "); ok {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	t.Cleanup(ts.Close)
	return ts.URL
}

func TestProbeExplainsEachOutcome(t *testing.T) {
	tok := "probe-token-0123456789abcdefghij"
	h, _ := bcrypt.GenerateFromPassword([]byte(tok), bcrypt.MinCost)
	hash := string(h)
	_, up := fakecomfy.Start(t, fakecomfy.Options{})
	gw := startProbeGateway(t, up.URL, hash+"\n")
	noCreds := startProbeGateway(t, up.URL, "")
	noComfy := startProbeGateway(t, "http://"+closedPort(t), hash+"\n")
	locked := startProbeGateway(t, up.URL, hash+"\n")
	lockOut(t, locked)

	dir := t.TempDir()
	matchingLocal := filepath.Join(dir, "local.token")
	other, _ := bcrypt.GenerateFromPassword([]byte("wrong-token-0123456789abcdefghij"), bcrypt.MinCost)
	os.WriteFile(matchingLocal, append(other, '\n'), 0o644)

	tests := []struct {
		name     string
		url      string
		token    string
		hashFile string
		code     int
		says     []string
	}{
		{"connection refused", "http://" + closedPort(t), tok, "", 1, []string{"connection refused", "container up", "COMFYUI_PORT"}},
		{"200 with the raw token", gw, tok, "", 0, []string{"/readyz: 200", "200, authenticated", "ComfyUI " + fakecomfy.ComfyUIVersion}},
		{"200 with the hash itself", gw, hash, "", 0, []string{"ComfyUI " + fakecomfy.ComfyUIVersion}},
		{"401 without a token", gw, "", "", 1, []string{"401", "no token was sent"}},
		{"401 wrong token, local file agrees with it", gw, "wrong-token-0123456789abcdefghij", matchingLocal, 1, []string{"401", "1. the token is valid for " + matchingLocal, "stale file"}},
		{"401 wrong token, local file disagrees", gw, "bad-token-0123456789abcdefghijkl", matchingLocal, 1, []string{"1. checked against", "matches none", "2. the token and the server's hash are out of sync"}},
		{"401 wrong token, no local file", gw, "bad-token-0123456789abcdefghijkl", "", 1, []string{"1. the token and the server's hash are out of sync", "pass --hash-file"}},
		{"401 no credential on the server", noCreds, tok, "", 1, []string{"/readyz: 503", "no valid hash file loaded", "does not exist"}},
		{"502 ComfyUI not up", noComfy, tok, "", 1, []string{"/readyz: 503", "502", "not answering yet", "docker logs"}},
		{"403 from ComfyUI itself", stub(t, 403, "", "Forbidden"), tok, "", 1, []string{"403", "ComfyUI refused", "origin check"}},
		{"403 guest", stub(t, 403, "", `{"error":"Forbidden for guests.","reason":"x","code":"guest_forbidden"}`), tok, "", 1, []string{"403", "code guest_forbidden", "guest session"}},
		{"403 cross origin", stub(t, 403, "", `{"error":"Forbidden.","reason":"x","code":"cross_origin"}`), tok, "", 1, []string{"403", "code cross_origin", "another origin", "--public-url"}},
		{"429 locked out, real gateway", locked, "bad-token-0123456789abcdefghijkl", "", 1, []string{"429", "code locked_out", "locked out", "Retry-After: "}},
		{"429 client busy", stub(t, 429, "Retry-After: 1", `{"error":"x","reason":"y","code":"client_busy"}`), tok, "", 1, []string{"429", "code client_busy", "one token at a time"}},
		{"503 pool busy", stub(t, 503, "Retry-After: 1", `{"error":"busy","reason":"too many token checks are waiting","code":"pool_busy"}`), tok, "", 1, []string{"503", "code pool_busy", "busy", "Retry-After: 1", "too many token checks"}},
		// The sentences below name other causes: the code decides.
		{"503 decided by code, not by the sentence", stub(t, 503, "Retry-After: 5", `{"error":"x","reason":"too many token checks are waiting","code":"too_many_connections"}`), tok, "", 1, []string{"code too_many_connections", "connection limit"}},
		{"401 decided by code, not by the sentence", stub(t, 401, "", `{"error":"Authentication required.","reason":"longer than 72 bytes; Authorization header; no valid credential","code":"wrong_token"}`), tok, "", 1, []string{"code wrong_token", "1. the token and the server's hash are out of sync"}},
		{"not comfyui-auth", strings.TrimSuffix(up.URL, "/"), tok, "", 0, []string{"/readyz: 404", "not comfyui-auth"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			code := probe(context.Background(), probeOptions{URL: tt.url, Token: tt.token, TokenSource: "--token",
				HashFile: tt.hashFile, AcceptHash: true, Timeout: 5 * time.Second}, &out)
			s := out.String()
			if code != tt.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tt.code, s)
			}
			for _, w := range tt.says {
				if !strings.Contains(s, w) {
					t.Errorf("output lacks %q:\n%s", w, s)
				}
			}
			if tt.token != "" && strings.Contains(s, tt.token) || strings.Contains(s, hash) {
				t.Fatalf("probe printed a secret:\n%s", s)
			}
		})
	}
}
