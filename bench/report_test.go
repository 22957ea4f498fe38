package bench

// The report's renderings on a canned run: every row present, ratios as
// ours / baseline, n/a where a figure is missing, and JSON that round-trips.

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"nielsgpt/internal/testkit"
)

func cannedReport() *Report {
	rss := func(mb int64) *int64 { b := mb << 20; return &b }
	load := 1.5
	return &Report{
		Started: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC), Seconds: 42,
		Model: ModelInfo{Source: "synthetic", V: 256, T: 256, C: 256, L: 4, H: 4, DFF: 1024, RopeTheta: 10000},
		Host:  HostInfo{OS: "linux", Arch: "amd64", CPUs: 2, LoadAvgStart: &load},
		Settings: Settings{Tokens: 200, BaselineTokens: 200, TraceLayer: 3, Temperature: 0.9, TopK: 50,
			Levels: []int{1, 64}, CapSeconds: 30, BaselineCapSeconds: 10, ServerEnv: []string{"KV_CACHE_TYPE=f16"}},
		Ours: &ModeReport{
			Mode: "ours", Tokens: 200,
			SingleStream: Throughput{Concurrency: 1, Streams: 3, Completed: 3, Tokens: 600, Seconds: 0.4, TokensPerS: 1500},
			TTFTShort:    Latency{Samples: 20, P50ms: 2, P95ms: 3},
			TTFTLong:     Latency{Samples: 20, P50ms: 10, P95ms: 12},
			Levels: []Throughput{
				{Concurrency: 1, Streams: 2, Completed: 2, Tokens: 400, Seconds: 0.25, TokensPerS: 1600},
				{Concurrency: 64, Streams: 128, Completed: 128, Tokens: 25600, Seconds: 4, TokensPerS: 6400},
			},
			PeakRSSBytes: rss(120),
		},
		Baseline: &ModeReport{
			Mode: "baseline", Tokens: 200,
			SingleStream: Throughput{Concurrency: 1, Streams: 1, Cut: 1, Tokens: 100, Seconds: 10, TokensPerS: 10},
			TTFTShort:    Latency{Samples: 5, P50ms: 40, P95ms: 60},
			TTFTLong:     Latency{Samples: 5, P50ms: 400, P95ms: 480},
			Levels: []Throughput{
				{Concurrency: 1, Streams: 1, Cut: 1, Tokens: 100, Seconds: 10, TokensPerS: 10},
				{Concurrency: 64, Streams: 64, Cut: 64, Errors: 0, Tokens: 64, Seconds: 10, TokensPerS: 6.4},
			},
			PeakRSSBytes: rss(60),
			Errors:       []string{"POST /chat/stream: 503 Service Unavailable\nsecond line"},
		},
	}
}

// render runs one of the report's writers and returns what it wrote.
func render(t *testing.T, write func(io.Writer) error) string {
	t.Helper()
	var b bytes.Buffer
	if err := write(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestWriteText(t *testing.T) {
	out := render(t, cannedReport().WriteText)
	testkit.ContainsAll(t, "text report", out,
		"V=256 T=256 C=256 L=4 H=4 d_ff=1024",
		"2 CPUs", "load average 1.50 at start", "trace_layer=3",
		"server settings from the environment: KV_CACHE_TYPE=f16",
		"single stream, tokens/s", "1500", "150×",
		"16 KB prompt, p50 / p95 ms", "10.0 / 12.0", "400 / 480", "0.025× / 0.025×",
		"aggregate tokens/s, 64 concurrent", "6400", "6.40", "1000×",
		"peak RSS of the server, MB", "120", "60.0", "2.00×",
		"64 cut by the cap",
		"baseline error: POST /chat/stream: 503 Service Unavailable …",
	)
	// Columns line up: every table line has the same length.
	var widths []int
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "metric") || strings.Contains(l, "tokens/s,") || strings.Contains(l, "p50 / p95") || strings.Contains(l, "RSS") {
			widths = append(widths, len([]rune(l)))
		}
	}
	for _, w := range widths {
		if w != widths[0] {
			t.Errorf("table lines differ in width: %v\n%s", widths, out)
			break
		}
	}
}

func TestWriteMarkdown(t *testing.T) {
	out := render(t, cannedReport().WriteMarkdown)
	testkit.ContainsAll(t, "markdown", out,
		"| metric | ours | baseline | ours/baseline |",
		"|---|---:|---:|---:|",
		"| single stream, tokens/s | 1500 | 10.0 | 150× |",
		"| aggregate tokens/s, 64 concurrent | 6400 | 6.40 | 1000× |",
		"| peak RSS of the server, MB | 120 | 60.0 | 2.00× |",
		"2026-11-26T12:00:00Z",
	)
}

func TestReportWithoutBaseline(t *testing.T) {
	r := cannedReport()
	r.Baseline = nil
	r.BaselineError = "the server exited before it was ready: flag provided but not defined: -baseline\nmore"
	r.Ours.PeakRSSBytes = nil
	out := render(t, r.WriteText)
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "tokens/s,") && !strings.Contains(l, "n/a") {
			t.Errorf("row without a baseline should show n/a: %q", l)
		}
	}
	if !strings.Contains(out, "baseline failed: the server exited before it was ready: flag provided but not defined: -baseline …") {
		t.Errorf("the baseline's failure is not reported:\n%s", out)
	}
	if !strings.Contains(out, "peak RSS of the server, MB") || !strings.Contains(out, "n/a") {
		t.Errorf("peak RSS should read n/a:\n%s", out)
	}
}

func TestWriteJSON(t *testing.T) {
	out := render(t, cannedReport().WriteJSON)
	var back Report
	if err := json.Unmarshal([]byte(out), &back); err != nil {
		t.Fatal(err)
	}
	if back.Ours.Levels[1].TokensPerS != 6400 || *back.Baseline.PeakRSSBytes != 60<<20 || back.Settings.TraceLayer != 3 {
		t.Errorf("round trip lost data: %s", out)
	}
	var generic map[string]any
	_ = json.Unmarshal([]byte(out), &generic)
	if _, ok := generic["ours"].(map[string]any)["ttft_16kb_prompt"]; !ok {
		t.Errorf("JSON lacks ttft_16kb_prompt: %s", out)
	}
}

func TestNum(t *testing.T) {
	for x, want := range map[float64]string{1523.4: "1523", 47.25: "47.2", 1.934: "1.93", 0.04213: "0.042", 0: "0"} {
		if got := num(x); got != want {
			t.Errorf("num(%g) = %q, want %q", x, got, want)
		}
	}
	if ratio(1, 0) != "n/a" || ratio(0, 1) != "n/a" {
		t.Error("ratios with a missing side must read n/a")
	}
}

// The engine alone beside the single stream, the per-token costs and the
// past-T scenarios, each against the baseline where it has one.
func TestReportEngineCostsAndPastT(t *testing.T) {
	r := cannedReport()
	r.Engine = &EngineReport{Context: 156, Steps: 5000, Seconds: 2, StepsPerS: 2500, PrefillShortMs: 3.25, PrefillTokens: 56}
	r.Settings.PastTHops, r.Settings.PastTLevels, r.Settings.PastTTokens = []int{1, 32}, []int{1}, 128
	driverMs, driverSw := 0.15, 2.5
	r.Ours.SingleStreamCost = &PerToken{RWSyscalls: 1.5, CtxSwitches: 2, CPUms: 0.5, DriverCPUms: &driverMs, DriverCtxSwitches: &driverSw}
	r.Baseline.SingleStreamCost = &PerToken{RWSyscalls: 3, CtxSwitches: 4, CPUms: 40}
	engCPU, engWait, srvWait := 0.4, 0.05, 0.3
	r.Ours.SingleStreamCost.RunQueueWaitMs = &srvWait
	r.Ours.Alternated = &Alternated{Rounds: 5, EngineStepsPerS: 2400, StreamTokensPerS: 1800, MedianRatio: 0.74,
		EngineCPUms: &engCPU, EngineRunQueueWaitMs: &engWait}
	r.Ours.PastT = []PastT{
		{WindowHop: 1, Throughput: Throughput{Concurrency: 1, Streams: 1, Completed: 1, Tokens: 128, Seconds: 4, TokensPerS: 32}},
		{WindowHop: 32, Throughput: Throughput{Concurrency: 1, Streams: 1, Completed: 1, Tokens: 128, Seconds: 0.2, TokensPerS: 640}},
	}
	r.Baseline.PastT = []PastT{{WindowHop: 1, Throughput: Throughput{Concurrency: 1, Streams: 1, Completed: 1, Tokens: 128, Seconds: 5, TokensPerS: 25.6}}}
	out := render(t, r.WriteMarkdown)
	testkit.ContainsAll(t, "markdown", out,
		"| engine alone, traced decode steps/s at context 156 | 2500 | n/a | n/a |",
		"| single stream over HTTP / engine alone | 60 % | n/a | n/a |",
		"| engine alone, short-prompt prefill (56 tokens), median ms | 3.25 | n/a | n/a |",
		"| server CPU per token, single stream, ms | 0.5 | 40.0 | 0.013× |",
		"| server read/write syscalls per token, single stream | 1.50 | 3.00 | 0.5× |",
		"| server context switches per token, single stream | 2.00 | 4.00 | 0.5× |",
		"| bench driver CPU per token, single stream, ms | 0.15 | n/a | n/a |",
		"| bench driver context switches per token, single stream | 2.50 | n/a | n/a |",
		"| alternated (5 rounds): engine alone steps/s, single stream tokens/s | 2400, 1800 | n/a | n/a |",
		"| alternated: single stream / engine alone, median of rounds | 74 % | n/a | n/a |",
		"| alternated: engine alone, the driver's CPU per step, ms | 0.4 | n/a | n/a |",
		"| alternated: engine alone, the driver's run-queue wait per step, ms | 0.05 | n/a | n/a |",
		"| engine CPU per step / (server + driver CPU per token): the ratio when no core is spare | 62 % | n/a | n/a |",
		"| server threads' run-queue wait per token, single stream, ms | 0.3 | n/a | n/a |",
		"| past T, window_hop 1, 1 stream, tokens/s | 32.0 | 25.6 | 1.25× |",
		"| past T, window_hop 32, 1 stream, tokens/s | 640 | n/a | n/a |",
		"past T hop 32 @1 1 stream, 128 tokens in 0.2 s",
		"window_hop [1 32]",
	)
	r.Engine = &EngineReport{Context: 156, Error: "no model"}
	testkit.ContainsAll(t, "text", render(t, r.WriteText), "engine alone, traced decode steps/s at context 156", "failed")
}
