package fakecomfy

import "net/http/httptest"

// TB is the part of testing.TB that Start needs. Declaring it here rather
// than importing testing keeps the testing package, and its flags, out of
// the fakecomfyd binary, which imports this package.
type TB interface {
	Helper()
	Cleanup(func())
}

// Start runs a Server on a loopback port for the length of a test, the way
// ComfyUI listens on 127.0.0.1:8188, and closes both when the test ends.
// The returned httptest.Server's URL is the upstream to point a gateway at.
func Start(tb TB, opts Options) (*Server, *httptest.Server) {
	tb.Helper()
	s := New(opts)
	ts := httptest.NewServer(s)
	tb.Cleanup(func() {
		s.Close() // websockets first: httptest.Server.Close does not close hijacked conns
		ts.Close()
	})
	return s, ts
}
