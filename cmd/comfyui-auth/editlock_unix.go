//go:build unix

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// lockCredentialDir holds an exclusive flock on the credential file's folder
// while a command reads, checks and rewrites the file, so that two commands
// run at once (a loop with `&`, `xargs -P`) take turns instead of each
// writing back the file it read and losing the other's change. The folder,
// not the file, is locked because the file may not exist yet. The gateway
// takes no lock: it only reads, and keeps the last good credentials when it
// catches the file half-written. unlock must be called once.
func lockCredentialDir(hashFile string, stderr io.Writer, cmd string) (unlock func(), err error) {
	dir := filepath.Dir(hashFile)
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("opening %s to lock it against other token commands: %w", dir, err)
	}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		fmt.Fprintf(stderr, "%s: waiting for another comfyui-auth token command editing a file in %s\n", cmd, dir)
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s against other token commands: %w", dir, err)
	}
	return func() { f.Close() }, nil // closing the descriptor releases the lock
}
