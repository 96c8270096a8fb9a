package fakecomfy

import (
	"net/http/httptest"
	"testing"
)

// Start runs a Server on a loopback port for the length of a test, the way
// ComfyUI listens on 127.0.0.1:8188, and closes both when the test ends.
// The returned httptest.Server's URL is the upstream to point a gateway at.
func Start(tb testing.TB, opts Options) (*Server, *httptest.Server) {
	tb.Helper()
	s := New(opts)
	ts := httptest.NewServer(s)
	tb.Cleanup(func() {
		s.Close() // websockets first: httptest.Server.Close does not close hijacked conns
		ts.Close()
	})
	return s, ts
}
