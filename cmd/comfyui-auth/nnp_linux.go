package main

import (
	"os"
	"runtime"
	"syscall"
)

// startWithoutPrivilegeGain starts a process with no_new_privs set, so that
// neither it nor anything it runs can gain privileges through a setuid or
// file-capability binary (su, sudo, ping): ComfyUI's user stays ComfyUI's.
//
// Go has no SysProcAttr field for it, and the flag belongs to one thread, so
// it is set on a thread locked for this purpose, the fork happens from that
// thread (the child inherits its flags), and the goroutine ends still locked,
// which makes the runtime discard the thread instead of reusing it for the
// gateway's goroutines.
func startWithoutPrivilegeGain(path string, argv []string, attr *os.ProcAttr) (*os.Process, error) {
	type result struct {
		p   *os.Process
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		const prSetNoNewPrivs = 38
		if _, _, errno := syscall.RawSyscall6(syscall.SYS_PRCTL, prSetNoNewPrivs, 1, 0, 0, 0, 0); errno != 0 {
			ch <- result{nil, os.NewSyscallError("prctl(PR_SET_NO_NEW_PRIVS)", errno)}
			return
		}
		p, err := os.StartProcess(path, argv, attr)
		ch <- result{p, err}
	}()
	r := <-ch
	return r.p, r.err
}
