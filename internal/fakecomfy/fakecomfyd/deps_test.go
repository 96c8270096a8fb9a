package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The daemon is a program, not a test: linking the testing package would
// add its flags (-test.v, ...) to fakecomfyd's command line and its code to
// the binary.
func TestDaemonDoesNotLinkTheTestingPackage(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the go command is not on PATH: %v", err)
		}
		t.Skipf("the go command is not on PATH: %v", err)
	}
	// Reading the sources the answer depends on makes go test's cache rerun
	// this test when they change; it does not see what go list reads.
	for _, pattern := range []string{"*.go", "../*.go"} {
		files, _ := filepath.Glob(pattern)
		for _, f := range files {
			if _, err := os.ReadFile(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	if deps := strings.Fields(string(out)); slices.Contains(deps, "testing") {
		t.Fatal("fakecomfyd links the testing package; keep testing imports in _test.go files")
	}
}
