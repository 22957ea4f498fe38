package bench

// End to end: build the real binary, and let Run start `nielsgpt serve` (and
// `serve --baseline`) on a tiny model and drive it with small counts. This
// is the test that the driver, the server and the SSE protocol agree.

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"nielsgpt/convert"
	"nielsgpt/gguf"
	"nielsgpt/internal/harness"
	"nielsgpt/internal/testkit"
)

// The binary is built once for this package's tests and removed after them.
func TestMain(m *testing.M) { testkit.Main(m) }

func TestRunEndToEnd(t *testing.T) {
	start := time.Now()
	bin := testkit.Binary(t)
	t.Logf("built the binary in %s", time.Since(start).Round(time.Millisecond))

	tiny := gguf.ModelConfig{Vocab: 256, Context: 64, Embd: 32, Layers: 2, Heads: 2, FF: 64, RopeTheta: 10000, NormEps: convert.LayerNormEps}
	model, err := harness.WriteSyntheticModel(t.TempDir(), tiny, 3)
	if err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := Run(ctx, Options{
		Executable: bin, Model: model, Threads: 1, Quick: true,
		Levels: []int{1, 4}, Tokens: 8, BaselineTokens: 4,
		// Caps well above what the tiny model needs, so a busy machine
		// slows the test down rather than cutting its streams.
		Duration: 10 * time.Second, BaselineDuration: 10 * time.Second,
		Progress: &progress,
	})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := rep.WriteText(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", table.String())

	if rep.Settings.TraceLayer != tiny.Layers-1 || rep.Model.C != tiny.Embd {
		t.Errorf("model or trace layer not read from the GGUF: %+v %+v", rep.Model, rep.Settings)
	}
	if rep.BaselineError != "" {
		t.Errorf("baseline mode (serve --baseline) failed: %s", rep.BaselineError)
	}
	if e := rep.Engine; e == nil || e.Error != "" || e.StepsPerS <= 0 || e.Context < 2 || e.Context > tiny.Context ||
		e.PrefillShortMs <= 0 || e.PrefillTokens < 40 {
		t.Errorf("engine alone: %+v", e)
	}
	if a := rep.Ours.Alternated; a == nil || a.Rounds != 2 || a.EngineStepsPerS <= 0 || a.StreamTokensPerS <= 0 || a.MedianRatio <= 0 {
		t.Errorf("alternated rounds: %+v", a)
	}
	if a := rep.Ours.Alternated; a != nil && (a.EngineCPUms == nil || *a.EngineCPUms <= 0 || a.EngineRunQueueWaitMs == nil) {
		t.Errorf("the engine slices' CPU and run-queue wait: %+v", a)
	}
	if c := rep.Ours.SingleStreamCost; c == nil || c.DriverCPUms == nil || *c.DriverCPUms <= 0 || c.DriverCtxSwitches == nil || c.RunQueueWaitMs == nil {
		t.Errorf("the driver's cost per token: %+v", c)
	}
	for _, m := range []*ModeReport{rep.Ours, rep.Baseline} {
		if m == nil {
			t.Error("a mode is missing from the report")
			continue
		}
		if len(m.Errors) > 0 {
			t.Errorf("%s: stream errors: %q", m.Mode, m.Errors)
		}
		// Each quick stream asks for m.Tokens; a stop tag may end one early,
		// but a random tiny model never sends none.
		if s := m.SingleStream; s.Completed != 1 || s.Tokens < 1 || s.Tokens > m.Tokens || s.TokensPerS <= 0 {
			t.Errorf("%s: single stream %+v", m.Mode, s)
		}
		if d := m.SingleStreamDeep; (d == nil) != (m.Mode == "baseline") || d != nil && (d.Completed < 1 || d.Tokens < 1 || d.Errors > 0) {
			t.Errorf("%s: single stream with every layer and the lens %+v", m.Mode, d)
		}
		// --quick plans 3 TTFT requests per prompt for ours, 2 for the baseline.
		wantTTFT := map[string]int{"ours": 3, "baseline": 2}[m.Mode]
		if m.TTFTShort.Samples != wantTTFT || m.TTFTLong.Samples != wantTTFT {
			t.Errorf("%s: ttft samples short %+v long %+v", m.Mode, m.TTFTShort, m.TTFTLong)
		}
		if m.TTFTShort.P50ms <= 0 || m.TTFTLong.P95ms < m.TTFTLong.P50ms {
			t.Errorf("%s: implausible ttft %+v %+v", m.Mode, m.TTFTShort, m.TTFTLong)
		}
		if len(m.Levels) != 2 {
			t.Fatalf("%s: levels %+v", m.Mode, m.Levels)
		}
		for i, want := range []int{1, 4} {
			lv := m.Levels[i]
			if lv.Concurrency != want || lv.Streams != want || lv.Completed != want || lv.Tokens < want || lv.Tokens > want*m.Tokens {
				t.Errorf("%s: level %d: %+v", m.Mode, want, lv)
			}
		}
		if runtime.GOOS == "linux" && (m.PeakRSSBytes == nil || *m.PeakRSSBytes < 1<<20) {
			t.Errorf("%s: peak RSS not measured: %v", m.Mode, m.PeakRSSBytes)
		}
		if c := m.SingleStreamCost; runtime.GOOS == "linux" && (c == nil || c.RWSyscalls <= 0 || c.CtxSwitches <= 0) {
			t.Errorf("%s: the single stream's cost per token not measured: %+v", m.Mode, c)
		}
		// Past T: hops 1 and 32 (both below T = 64) at 1 and 4 streams.
		if len(m.PastT) != 4 {
			t.Fatalf("%s: past-T scenarios %+v", m.Mode, m.PastT)
		}
		for _, pt := range m.PastT {
			if pt.Completed != pt.Concurrency || pt.Tokens < pt.Concurrency || pt.Errors != 0 {
				t.Errorf("%s: past T hop %d: %+v", m.Mode, pt.WindowHop, pt.Throughput)
			}
		}
	}
	for _, want := range []string{"aggregate tokens/s, 4 concurrent", "single stream over HTTP / engine alone", "past T, window_hop 32, 4 streams"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks the row %q", want)
		}
	}
	if left, err := os.ReadDir(filepath.Dir(model)); err != nil || len(left) != 1 {
		t.Errorf("the test's model directory changed: %v %v", left, err)
	}
}
