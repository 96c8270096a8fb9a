//go:build unix

package server

import (
	"net"
	"syscall"
)

// idleConnUsable reports whether a pooled connection is still open and
// silent: ComfyUI has not closed it (a read would see EOF) nor sent bytes
// no request asked for. It peeks without blocking, once, on the calling
// goroutine; waiting for readability through the poller instead would
// need a goroutine per idle connection, which is the cost this pool avoids.
func idleConnUsable(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	usable := false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// EAGAIN: nothing to read, the connection is open and quiet.
		usable = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true // never wait for readability
	})
	return err == nil && usable
}
