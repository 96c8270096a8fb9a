//go:build !linux

package main

import "os"

// startWithoutPrivilegeGain: no_new_privs is Linux's; elsewhere the dropped
// credential alone applies.
func startWithoutPrivilegeGain(path string, argv []string, attr *os.ProcAttr) (*os.Process, error) {
	return os.StartProcess(path, argv, attr)
}
