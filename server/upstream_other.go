//go:build !unix

package server

import "net"

// idleConnUsable cannot peek on this platform; a dead connection is found
// by the request, which is then retried if it is replayable.
func idleConnUsable(net.Conn) bool { return true }
