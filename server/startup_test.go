package server

import (
	"strings"
	"testing"
	"time"
)

func TestStartupTokenCheckLogsTheDiagnosis(t *testing.T) {
	const tok = "startup-token-0123456789abcdefgh"
	hash := lowCostHash(t, tok) // the seed hash costs seconds under -race
	tests := []struct {
		name, token, level, kind string
		acceptHash               bool
	}{
		{"raw token matches", tok, "info", "raw-match", true},
		{"hash given as the server token", hash, "info", "hash-itself", true},
		{"hash with compatibility off", hash, "error", "hash-itself", false},
		{"desynchronised token", "stale-token-0123456789abcdefghij", "error", "no-match", true},
		{"hash cut by Compose", strings.ReplaceAll(hash, "$", ""), "error", "dollar-mangled", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rememberSecret(tt.token)
			g := startGateway(t, gatewayOpts{hashContent: ptr(hash + "\n"), configure: func(c *Config) {
				c.ServerToken, c.ServerTokenVar, c.AcceptHashToken = tt.token, "QWEN_API_TOKEN", tt.acceptHash
			}})
			eventually(t, 10*time.Second, "the start-up token check to log", func() bool {
				return strings.Contains(g.Logs.String(), `"diagnosis"`)
			})
			logs := g.Logs.String()
			want := `"level":"` + tt.level + `","variable":"QWEN_API_TOKEN","diagnosis":"` + tt.kind + `"`
			if !strings.Contains(logs, want) {
				t.Fatalf("logs lack %s:\n%s", want, logs)
			}
		})
	}
}
