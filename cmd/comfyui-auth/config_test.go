package main

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func mapEnv(m map[string]string) env {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestServeConfigFlagBeatsEnvironmentBeatsDefault(t *testing.T) {
	cfg, err := loadServeConfig(nil, mapEnv(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "0.0.0.0:8188" || cfg.Upstream != "http://127.0.0.1:8189" ||
		cfg.HashFile != "/workspace/ComfyUI/.secrets/qwen-api-user.token" || !cfg.AuthEnabled || !cfg.AcceptHashToken {
		t.Fatalf("defaults: %+v", cfg)
	}
	env := mapEnv(map[string]string{
		"COMFYUI_AUTH_LISTEN":          "127.0.0.1:9000",
		"COMFYUI_AUTH_POLL_INTERVAL":   "3",
		"COMFYUI_AUTH_BCRYPT_MAX_WAIT": "750ms",
		"QWEN_API_TOKEN":               "from-qwen",
		"COMFYUI_AUTH_STATE_DIR":       "/var/lib/comfyui-auth",
	})
	cfg, err = loadServeConfig([]string{"--listen", "127.0.0.1:9001"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:9001" {
		t.Errorf("flag did not win: %s", cfg.Listen)
	}
	if cfg.PollInterval != 3*time.Second || cfg.BcryptMaxWait != 750*time.Millisecond {
		t.Errorf("durations: %s %s", cfg.PollInterval, cfg.BcryptMaxWait)
	}
	if cfg.ServerToken != "from-qwen" || cfg.ServerTokenVar != "QWEN_API_TOKEN" {
		t.Errorf("server token from %q", cfg.ServerTokenVar)
	}
	if cfg.StateDir != "/var/lib/comfyui-auth" {
		t.Errorf("state dir from COMFYUI_AUTH_STATE_DIR: %q", cfg.StateDir)
	}
	cfg, err = loadServeConfig([]string{"--state-dir", "/srv/state"}, env, io.Discard)
	if err != nil || cfg.StateDir != "/srv/state" {
		t.Errorf("--state-dir did not win: %q %v", cfg.StateDir, err)
	}
}

func TestOnlyAnExplicitFalseTurnsAuthenticationOff(t *testing.T) {
	for v, want := range map[string]bool{"false": false, "FALSE": false, "true": true, "0": true, "": true, "no": true} {
		cfg, err := loadServeConfig(nil, mapEnv(map[string]string{"COMFYUI_LOGIN_ENABLED": v}), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.AuthEnabled != want {
			t.Errorf("COMFYUI_LOGIN_ENABLED=%q: auth %v, want %v", v, cfg.AuthEnabled, want)
		}
	}
}

func TestBadServeConfigurationSaysWhatToFix(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown flag as typed", []string{"--lisen", "x"}, nil, "unknown flag --lisen"},
		{"stray argument", []string{"serve"}, nil, "unexpected argument"},
		{"bad duration", nil, map[string]string{"COMFYUI_AUTH_POLL_INTERVAL": "soon"}, "not a duration"},
		{"bad number", nil, map[string]string{"COMFYUI_AUTH_BCRYPT_WORKERS": "two"}, "not a whole number"},
		{"bad boolean", nil, map[string]string{"COMFYUI_AUTH_ACCEPT_HASH_TOKEN": "maybe"}, "not true or false"},
		{"upstream not http", []string{"--upstream", "ftp://127.0.0.1:8189"}, nil, "must start with http:// or https://"},
		{"upstream with path", []string{"--upstream", "http://127.0.0.1:8189/comfy"}, nil, "bare origin"},
		{"listen without port", []string{"--listen", "0.0.0.0"}, nil, "not host:port"},
		{"zero workers", []string{"--bcrypt-workers", "0"}, nil, "at least 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			_, err := loadServeConfig(tc.args, mapEnv(tc.env), &stderr)
			if err == nil {
				t.Fatal("accepted")
			}
			if msg := err.Error() + stderr.String(); !strings.Contains(msg, tc.want) {
				t.Fatalf("message %q does not say %q", msg, tc.want)
			}
		})
	}
}

func TestServeExitsWithOneSentenceOnBadInput(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"serve", "--upstream", "localhost:8189"}, io.Discard, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if lines := strings.Count(strings.TrimSpace(stderr.String()), "\n"); lines != 0 || !strings.Contains(stderr.String(), "upstream") {
		t.Fatalf("want one sentence about the upstream, got %q", stderr.String())
	}
}

func TestServeRefusesATakenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("COMFYUI_LOGIN_ENABLED", "false")
	var stderr bytes.Buffer
	if code := run([]string{"serve", "--listen", ln.Addr().String()}, io.Discard, &stderr); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "cannot listen on "+ln.Addr().String()) {
		t.Fatalf("stderr %q", stderr.String())
	}
}

func TestHealthcheckExitCodes(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	var stderr bytes.Buffer
	if code := run([]string{"healthcheck", "--url", "http://" + dead + "/readyz", "--timeout", "2s"}, io.Discard, &stderr); code != 1 {
		t.Fatalf("nothing listening: exit %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "unhealthy") {
		t.Fatalf("stderr %q", stderr.String())
	}
}
