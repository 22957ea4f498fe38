//go:build linux

package reliability

// Shared set-up: the tests run the real binary (what users run, not a
// function call), built once per test binary, on a deployed-size model with
// random weights, written once; testkit.Main removes both afterwards.

import (
	"testing"

	"nielsgpt/convert"
	"nielsgpt/gguf"
	"nielsgpt/internal/harness"
	"nielsgpt/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// deployedModel is a GGUF of the deployed shape with random weights.
func deployedModel(t testing.TB) string { return testkit.SyntheticModel(t, harness.Deployed, 6) }

// wideTraceModel is cheap to run but has 32 heads and a 1024-token window,
// so each trace event is a few hundred KiB: a stalled client fills the
// kernel's socket buffers (about 3 MiB per loopback connection) within a
// few tokens instead of minutes.
func wideTraceModel(t testing.TB) string {
	wide := gguf.ModelConfig{Vocab: 256, Context: 1024, Embd: 64, Layers: 1, Heads: 32, FF: 64, RopeTheta: 10000, NormEps: convert.LayerNormEps}
	return testkit.SyntheticModel(t, wide, 6)
}

// startServer serves the deployed-size model (unless spec names another)
// with the built binary for the length of the test.
func startServer(t *testing.T, spec harness.Spec) *harness.Server {
	t.Helper()
	if spec.Exe == "" {
		spec.Exe = testkit.Binary(t)
	}
	if spec.Model == "" {
		spec.Model = deployedModel(t)
	}
	return testkit.Serve(t, spec)
}

// scrape reads /metrics or fails the test.
func scrape(t *testing.T, s *harness.Server) Metrics {
	t.Helper()
	m, err := Scrape(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
