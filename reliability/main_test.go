//go:build linux

package reliability

// Shared set-up: the binary is built once per test run (the tests exercise
// what users run, not a function call) and a deployed-size model with random
// weights is written once beside it.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"nielsgpt/convert"
	"nielsgpt/gguf"
	"nielsgpt/internal/testkit"
)

var (
	exe           string // the freshly built nielsgpt binary
	deployedModel string // a deployed-size (SPEC §1) GGUF with random weights
	// wideTraceModel is cheap to run but has 32 heads and a 1024-token
	// window, so each trace event is a few hundred KiB: a stalled client
	// fills the kernel's socket buffers (about 3 MiB per loopback connection)
	// within a few tokens instead of minutes.
	wideTraceModel string
	workDir        string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	var err error
	workDir, err = os.MkdirTemp("", "nielsgpt-reliability-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(workDir)
	exe = filepath.Join(workDir, "nielsgpt")
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	build := exec.Command(goCmd, "build", "-o", exe, "nielsgpt/cmd/nielsgpt")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building nielsgpt (cgo needs the Makefile's flags: make test, or eval \"$(make -s env)\" first): %v\n%s", err, out)
		return 1
	}
	if deployedModel, err = testkit.WriteSyntheticModel(workDir, testkit.Deployed, 6); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	wideDir := filepath.Join(workDir, "wide")
	if err := os.Mkdir(wideDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	wide := gguf.ModelConfig{Vocab: 256, Context: 1024, Embd: 64, Layers: 1, Heads: 32, FF: 64, RopeTheta: 10000, NormEps: convert.LayerNormEps}
	if wideTraceModel, err = testkit.WriteSyntheticModel(wideDir, wide, 6); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// startServer starts the binary on the deployed-size model (unless spec
// names another) and waits until the model is ready; the server is stopped
// when the test ends.
func startServer(t *testing.T, spec ServerSpec) *Server {
	t.Helper()
	if spec.Exe == "" {
		spec.Exe = exe
	}
	if spec.Model == "" {
		spec.Model = deployedModel
	}
	s, err := Start(t.Context(), spec, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop(15 * time.Second)
		if t.Failed() {
			t.Logf("server output:\n%s", tail(s.Output(), 4000))
		}
	})
	if err := s.WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	return s
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// scrape reads /metrics or fails the test.
func scrape(t *testing.T, s *Server) Metrics {
	t.Helper()
	m, err := Scrape(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
