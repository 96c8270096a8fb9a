//go:build !unix

package main

import "io"

// lockCredentialDir is flock on Unix (see editlock_unix.go); elsewhere the
// token commands do not guard against each other: run them one at a time.
func lockCredentialDir(string, io.Writer, string) (func(), error) { return func() {}, nil }
