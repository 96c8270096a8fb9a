package server

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// scrape fetches the metrics listener's /metrics page.
func scrape(t testing.TB, g *gateway) string {
	t.Helper()
	addr := g.Server.MetricsAddr()
	if addr == nil {
		t.Fatal("metrics listener not open")
	}
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: status %d: %s", resp.StatusCode, body)
	}
	return string(body)
}

func TestMetricsCountRequestsBcryptReloadsAndUpstreamErrors(t *testing.T) {
	raw := "metrics-raw-token-0123456789abcdef"
	content := lowCostHash(t, raw)
	g := startGateway(t, gatewayOpts{hashContent: &content, configure: func(c *Config) {
		c.MetricsListen = "127.0.0.1:0"
	}})
	hash := content
	for range 2 {
		g.do(t, "GET", "/system_stats", nil, "Authorization: Bearer "+hash)
	}
	for range 3 {
		g.do(t, "GET", "/system_stats", nil, "Authorization: Bearer "+raw)
	}
	g.do(t, "GET", "/system_stats", nil, "Authorization: Bearer wrong-token")
	g.do(t, "GET", "/system_stats", nil)
	g.do(t, "GET", "/healthz", nil)

	page := scrape(t, g)
	for _, want := range []string{
		`comfyui_auth_requests_total{auth="hash-token",outcome="allowed"} 2`,
		`comfyui_auth_requests_total{auth="raw-token",outcome="allowed"} 3`,
		`comfyui_auth_requests_total{auth="none",outcome="denied"} 2`,
		`comfyui_auth_requests_total{auth="none",outcome="unprotected"} 1`,
		`comfyui_auth_responses_total{code="200"} 6`,
		`comfyui_auth_responses_total{code="401"} 2`,
		`comfyui_auth_refusals_total{refusal="wrong_token"} 1`,
		`comfyui_auth_refusals_total{refusal="no_credentials"} 1`,
		`comfyui_auth_bcrypt_checks_total 2`, // the raw token once, the wrong one once
		`comfyui_auth_token_cache_hits_total 2`,
		`comfyui_auth_token_cache_misses_total 2`,
		`comfyui_auth_token_cache_entries 1`,
		`comfyui_auth_bcrypt_in_flight 0`,
		`comfyui_auth_bcrypt_queue_depth 0`,
		`comfyui_auth_bcrypt_shed_total 0`,
		`comfyui_auth_bcrypt_wait_seconds_count 2`,
		`comfyui_auth_proxied_request_duration_seconds_count 5`,
		`comfyui_auth_credential_loads_total{result="ok"} 1`,
		`comfyui_auth_credential_loads_total{result="failed"} 0`,
		`comfyui_auth_websockets_open 0`,
		`process_cpu_seconds_total`,
	} {
		if !strings.Contains(page, want+"\n") && !strings.Contains(page, want+" ") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if !strings.Contains(page, "comfyui_auth_credentials_last_success_timestamp_seconds ") ||
		strings.Contains(page, "comfyui_auth_credentials_last_success_timestamp_seconds 0\n") {
		t.Errorf("last good load timestamp missing or zero")
	}

	// A refused reload counts as failed and keeps the last good credentials.
	if err := os.WriteFile(g.HashFile, []byte("not a hash\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "a failed credential load is counted", func() bool {
		return strings.Contains(scrape(t, g), `comfyui_auth_credential_loads_total{result="failed"} 1`)
	})

	// ComfyUI gone: the 502 is an upstream error.
	g.Upstream.Close()
	if resp := g.do(t, "GET", "/system_stats", nil, "Authorization: Bearer "+hash); resp.StatusCode != 502 {
		t.Fatalf("with ComfyUI down: status %d, want 502", resp.StatusCode)
	}
	page = scrape(t, g)
	if !strings.Contains(page, `comfyui_auth_upstream_errors_total{code="502"} 1`) {
		t.Errorf("upstream error not counted")
	}
	if !strings.Contains(page, `comfyui_auth_refusals_total{refusal="upstream_down"} 1`) {
		t.Errorf("upstream_down refusal not counted")
	}
}

func TestMetricsAreNeverOnThePublicPort(t *testing.T) {
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.MetricsListen = "127.0.0.1:0" }})
	if resp := g.do(t, "GET", "/metrics", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /metrics on the public port without credentials: %d, want 401", resp.StatusCode)
	}
	// With credentials it is ComfyUI's /metrics (none), not ours.
	resp := g.do(t, "GET", "/metrics", nil, "Authorization: Bearer "+seedHash)
	body, _ := io.ReadAll(resp.Body)
	if strings.Contains(string(body), "comfyui_auth_") {
		t.Fatalf("the public port served the gateway's metrics")
	}
}

func TestMetricsOffByDefault(t *testing.T) {
	g := startGateway(t, gatewayOpts{})
	if addr := g.Server.MetricsAddr(); addr != nil {
		t.Fatalf("metrics listening on %s without --metrics-listen", addr)
	}
}
