//go:build !linux

package hashstore

// lowerWorkerPriority is Linux-only (see priority_linux.go); elsewhere
// bcrypt workers run at the process's priority.
func lowerWorkerPriority() {}
