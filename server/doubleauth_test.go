package server

import (
	"io"
	"strings"
	"testing"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
)

// TestComfyUILoginLeftInstalledIsReportedOnce: a user who forgot to remove
// the plugin sees its 401s pass through unchanged, and the log says, once,
// what to remove.
func TestComfyUILoginLeftInstalledIsReportedOnce(t *testing.T) {
	g := startGateway(t, gatewayOpts{fake: fakecomfy.Options{ComfyUILogin: true}})
	for i := 0; i < 3; i++ {
		resp := g.do(t, "GET", "/system_stats", nil, "Authorization: Bearer "+seedHash)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 401 || !strings.Contains(string(body), "Authentication required.") {
			t.Fatalf("upstream 401 was not passed through: %d %s", resp.StatusCode, body)
		}
	}
	// A browser gets the plugin's redirect; the advice is not repeated
	// within the minute.
	if resp := g.do(t, "GET", "/", nil, "Authorization: Bearer "+seedHash, "Accept: text/html"); resp.StatusCode != 302 {
		t.Fatalf("browser: %d", resp.StatusCode)
	}
	if n := strings.Count(g.Logs.String(), "Remove custom_nodes/ComfyUI-Login"); n != 1 {
		t.Fatalf("the double-authentication advice was logged %d times, want once:\n%s", n, g.Logs.String())
	}
}

func TestComfyUILoginRedirectIsRecognised(t *testing.T) {
	g := startGateway(t, gatewayOpts{fake: fakecomfy.Options{ComfyUILogin: true}})
	resp := g.do(t, "GET", "/", nil, "Authorization: Bearer "+seedHash, "Accept: text/html")
	if resp.StatusCode != 302 || !strings.Contains(g.Logs.String(), "Remove custom_nodes/ComfyUI-Login") {
		t.Fatalf("status %d; log:\n%s", resp.StatusCode, g.Logs.String())
	}
}
