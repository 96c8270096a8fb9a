package main

import (
	"syscall"
	"testing"
)

// Every signal a child can die of is named as people write it, not only
// the handful a hand-kept table would list.
func TestEverySignalIsNamedTheWayPeopleWriteIt(t *testing.T) {
	tests := []struct {
		sig  syscall.Signal
		want string
	}{
		{syscall.SIGKILL, "SIGKILL"},
		{syscall.SIGTERM, "SIGTERM"},
		{syscall.SIGWINCH, "SIGWINCH"},
		{syscall.SIGSYS, "SIGSYS"},
		{syscall.SIGXCPU, "SIGXCPU"},
		{syscall.Signal(200), "signal 200"},
	}
	for _, tc := range tests {
		if got := signalName(tc.sig); got != tc.want {
			t.Errorf("signalName(%d) = %q, want %q", int(tc.sig), got, tc.want)
		}
	}
}
