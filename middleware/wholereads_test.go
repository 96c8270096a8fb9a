package middleware

import (
	"net/http/httptest"
	"testing"
)

// TestReadsWholeMatchesTheRoutesThatHoldBodies: the bound covers the
// routes OwnPrompts and QueueShare read whole, as ComfyUI routes them.
func TestReadsWholeMatchesTheRoutesThatHoldBodies(t *testing.T) {
	for _, tc := range []struct {
		method, target string
		want           bool
	}{
		{"POST", "/prompt", true},
		{"post", "/api/prompt", true},
		{"POST", "/api%2Fprompt", true},
		{"POST", "/%70rompt", true},
		{"POST", "/queue", true},
		{"POST", "/api/history", true},
		{"POST", "/interrupt", true},
		{"GET", "/queue", true},
		{"GET", "/api/history?max_items=64", true},
		{"GET", "/history/abc", true},
		{"GET", "/prompt", false},
		{"GET", "/view?filename=a.png", false},
		{"POST", "/upload/image", false},
		{"HEAD", "/queue", false},
	} {
		r := httptest.NewRequest(tc.method, tc.target, nil)
		if got := readsWhole(r); got != tc.want {
			t.Errorf("%s %s: readsWhole %v, want %v", tc.method, tc.target, got, tc.want)
		}
	}
}
