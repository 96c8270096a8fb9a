package hashstore

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// workerNice is the nice value of the threads that run bcrypt.
const workerNice = 10

// lowerWorkerPriority moves the calling goroutine, a bcrypt worker, onto an
// OS thread of its own and lowers that thread's scheduling priority to nice
// 10 (never raising it, if the process already runs nicer).
//
// The pool bounds how much bcrypt runs, but a running comparison still holds
// a whole core for a quarter second. On a small machine the kernel then
// shares that core evenly between bcrypt and the threads proxying requests
// (and ComfyUI), so a guess flood adds tens of milliseconds to legitimate
// requests. At nice 10 a thread weighs about a tenth of a nice-0 one, so the
// kernel runs proxying first and bcrypt on what is left; bcrypt still gets
// a whole idle core. Wrong guesses only get slower, which is no loss.
//
// The thread is never unlocked: it ends with the worker goroutine, so no
// other goroutine ever runs at the lowered priority. Failure (a seccomp
// profile refusing setpriority) leaves the worker at normal priority.
func lowerWorkerPriority() {
	runtime.LockOSThread()
	tid := unix.Gettid()
	// The raw getpriority system call answers 20 - nice.
	if raw, err := unix.Getpriority(unix.PRIO_PROCESS, tid); err == nil && 20-raw >= workerNice {
		return
	}
	_ = unix.Setpriority(unix.PRIO_PROCESS, tid, workerNice)
}
