package server

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// debianPython is Debian's interpreter, where python3-requests and
// python3-websocket install (a pyenv python3 earlier on PATH has neither).
const debianPython = "/usr/bin/python3"

// requirePython skips the test when the Python client libraries are missing,
// except under CI=true, where .ci/setup installed them and a skip would hide
// a broken setup.
func requirePython(t *testing.T) {
	t.Helper()
	err := exec.Command(debianPython, "-c", "import requests, websocket").Run()
	if err == nil {
		return
	}
	msg := "Debian's python3-requests and python3-websocket are not installed (run .ci/setup as root): " + err.Error()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func TestRealPythonClientWorksThroughTheGateway(t *testing.T) {
	requirePython(t)
	g := startGateway(t, gatewayOpts{})
	for _, tc := range []struct{ name, token string }{
		{"raw token", seedToken},
		{"hash token", seedHash},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(debianPython, "testdata/compat_client.py", g.URL, tc.token)
			cmd.Env = append(os.Environ(), "NO_PROXY=*", "no_proxy=*")
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "all steps passed") {
				t.Fatalf("python client failed: %v\n%s", err, out)
			}
		})
	}
}
