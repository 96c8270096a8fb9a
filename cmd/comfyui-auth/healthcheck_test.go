package main

import (
	"strings"
	"testing"
)

// TestHealthcheckPrintsTheReason: inside the container the healthcheck gets
// /readyz's details and prints why it is unhealthy; from elsewhere it gets
// the word only and says where the reason is.
func TestHealthcheckPrintsTheReason(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"status":"not ready","credentials":"none","upstream":"ok","reason":"no valid credential loaded: credential file /x does not exist"}`,
			"not ready: no valid credential loaded: credential file /x does not exist (credentials: none; upstream: ok)"},
		{`{"status":"not ready"}`, "not ready (the gateway gives details only to loopback and authenticated callers"},
		{`{"status":"ready"}`, "ready"},
		{`not json`, "not json"},
	} {
		if got := readyzSummary([]byte(tc.body)); !strings.HasPrefix(got, tc.want) {
			t.Errorf("readyzSummary(%s) = %q, want it to start with %q", tc.body, got, tc.want)
		}
	}
}
