package testkit

// The subprocess harness as tests use it: the binary built once per test
// binary, and a server that lives exactly as long as one test.

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"nielsgpt/internal/harness"
)

// Binary builds ./cmd/nielsgpt once per test binary and returns its path,
// so that tests exercise what users run. The build inherits this process's
// environment, cgo settings included.
func Binary(t testing.TB) string {
	t.Helper()
	path, err := makeOnce("binary", func(dir string) (string, error) {
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		exe := filepath.Join(dir, "nielsgpt")
		// The import path, not a relative one: it builds from any package's
		// folder in the module.
		if out, err := exec.Command(goTool, "build", "-o", exe, "nielsgpt/cmd/nielsgpt").CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build nielsgpt/cmd/nielsgpt (cgo needs the Makefile's flags: `make test`, or `eval \"$(make -s env)\"` first): %v\n%s", err, out)
		}
		return exe, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// Serve timeouts: loading the deployed-size model takes a second or two, but
// the machine may be busy with other tests.
const (
	serveReadyTimeout = 90 * time.Second
	serveStopGrace    = 15 * time.Second
)

// Serve starts the server for one test and returns once its model is
// loaded; the test fails if it never is. When the test ends the server is
// stopped (SIGTERM, then SIGKILL after a grace period), and if the test
// failed the end of the server's output is logged beside the failure.
func Serve(t testing.TB, spec harness.Spec) *harness.Server {
	t.Helper()
	s, err := harness.StartReady(t.Context(), spec, serveReadyTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop(serveStopGrace)
		if t.Failed() {
			t.Logf("server output:\n%s", s.OutputTail(4000))
		}
	})
	return s
}
