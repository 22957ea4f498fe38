package bench

// The benchmark itself: which phases run against which server, with what
// bounds, and how their results are gathered into a Report.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"nielsgpt/engine"
	"nielsgpt/gguf"
	"nielsgpt/internal/harness"
)

// Options configure a benchmark run. The zero value of every field means its
// default (see withDefaults), so callers set only what they change.
type Options struct {
	Executable string // the nielsgpt binary whose `serve` is benchmarked (required)
	Model      string // a .gguf to serve; "" writes a deployed-size model with random weights
	Threads    int    // THREADS for the server; 0 lets it use one per core

	// Quick shrinks every count and cap, for a smoke run of a few seconds.
	Quick bool

	Levels         []int // concurrent-stream levels; default 1, 4, 16, 64
	Tokens         int   // max_new_tokens per stream; default 200 (quick 24)
	BaselineTokens int   // the same for the baseline mode; default Tokens (quick 8)

	// Duration caps each measured phase of the batched server; BaselineDuration
	// each phase of the baseline server, whose every token costs a whole
	// window. A phase that hits its cap cuts its streams and still reports
	// the tokens received in the time it had.
	Duration         time.Duration // default 30s (quick 3s)
	BaselineDuration time.Duration // default 10s (quick 1s)

	NoBaseline bool // skip the baseline mode

	// Past-T scenarios: streams whose prompt is already longer than the
	// context, so every token is generated past T, at each window_hop of
	// PastTHops (default 1 and 32: the exact rule and a fast one) and each
	// level of PastTLevels (default 1 and 4), PastTTokens each (default 128,
	// quick 8). A hop of T or more for the model is skipped.
	PastTHops   []int
	PastTLevels []int
	PastTTokens int

	// EngineTime is how long the engine alone is timed (default 2s, quick
	// 200ms); negative skips it.
	EngineTime time.Duration

	// ReadyTimeout bounds the server's start-up (model load). Default 60s.
	ReadyTimeout time.Duration

	Progress io.Writer // one line per phase as it finishes; nil for silence

	// CPUProfileDir, when set, gets a CPU profile of each server's whole
	// run (ours.pprof, baseline.pprof) for `go tool pprof`.
	CPUProfileDir string
}

// The sampling the benchmark asks for: the API's defaults, a realistic chat.
const (
	benchTemperature = 0.9
	benchTopK        = 50
)

func (o Options) withDefaults() Options {
	if len(o.Levels) == 0 {
		o.Levels = []int{1, 4, 16, 64}
	}
	if o.Tokens == 0 {
		o.Tokens = 200
		if o.Quick {
			o.Tokens = 24
		}
	}
	if o.BaselineTokens == 0 {
		// The same stream length by default: the baseline's cost per token
		// grows with the window, so shorter streams would flatter it.
		o.BaselineTokens = o.Tokens
		if o.Quick {
			o.BaselineTokens = min(o.Tokens, 8)
		}
	}
	if o.Duration == 0 {
		o.Duration = 30 * time.Second
		if o.Quick {
			o.Duration = 3 * time.Second
		}
	}
	if o.BaselineDuration == 0 {
		o.BaselineDuration = 10 * time.Second
		if o.Quick {
			o.BaselineDuration = time.Second
		}
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 60 * time.Second
	}
	if o.PastTHops == nil {
		o.PastTHops = []int{1, 32}
	}
	if o.PastTLevels == nil {
		o.PastTLevels = []int{1, 4}
	}
	if o.PastTTokens == 0 {
		o.PastTTokens = 128
		if o.Quick {
			o.PastTTokens = 8
		}
	}
	if o.EngineTime == 0 {
		o.EngineTime = 2 * time.Second
		if o.Quick {
			o.EngineTime = 200 * time.Millisecond
		}
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return o
}

func (o Options) validate() error {
	if o.Executable == "" {
		return errors.New("no server executable given")
	}
	for _, l := range append(slices.Clone(o.Levels), o.PastTLevels...) {
		if l < 1 || l > 1024 {
			return fmt.Errorf("concurrency level %d is out of range [1, 1024]", l)
		}
	}
	for _, h := range o.PastTHops {
		if h < 1 {
			return fmt.Errorf("window hop %d must be at least 1", h)
		}
	}
	if o.PastTTokens < 1 || o.PastTTokens > 1<<16 {
		return fmt.Errorf("past-T tokens per stream must be in [1, 65536]")
	}
	if o.Tokens < 1 || o.Tokens > 1<<16 || o.BaselineTokens < 1 || o.BaselineTokens > 1<<16 {
		return fmt.Errorf("tokens per stream must be in [1, 65536]")
	}
	if o.Duration < 0 || o.BaselineDuration < 0 || o.Threads < 0 {
		return errors.New("durations and threads must not be negative")
	}
	return nil
}

// plan is how much one mode runs: counts of streams and the phase cap.
type plan struct {
	mode             string // "ours" or "baseline"
	baseline         bool
	tokens           int
	singleRuns       int // sequential streams for the single-stream figure
	ttftRuns         int // sequential one-token requests per prompt size
	streamsPerWorker int // streams each concurrent worker runs per level
	cap              time.Duration
}

func plans(o Options) []plan {
	ours := plan{mode: "ours", tokens: o.Tokens, singleRuns: 3, ttftRuns: 20, streamsPerWorker: 2, cap: o.Duration}
	// The baseline serves one request at a time and recomputes the whole
	// window per token: far fewer streams, and its own cap.
	ref := plan{mode: "baseline", baseline: true, tokens: o.BaselineTokens, singleRuns: 1, ttftRuns: 5, streamsPerWorker: 1, cap: o.BaselineDuration}
	if o.Quick {
		ours.singleRuns, ours.ttftRuns, ours.streamsPerWorker = 1, 3, 1
		ref.ttftRuns = 2
	}
	if o.NoBaseline {
		return []plan{ours}
	}
	return []plan{ours, ref}
}

// Run benchmarks the server: the batched engine, then (unless NoBaseline)
// the baseline mode, each in its own server process started and stopped
// here. A baseline server that fails does not fail the run: its error is in
// the report, next to the figures that were measured.
func Run(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	started := time.Now()
	rep := &Report{Started: started.UTC(), Host: hostInfo(o.Threads)}
	rep.Settings = Settings{
		Tokens: o.Tokens, BaselineTokens: o.BaselineTokens, Temperature: benchTemperature, TopK: benchTopK,
		Levels: o.Levels, Quick: o.Quick,
		CapSeconds: o.Duration.Seconds(), BaselineCapSeconds: o.BaselineDuration.Seconds(),
	}
	for _, key := range serverEnvKeys {
		if v, ok := os.LookupEnv(key); ok {
			rep.Settings.ServerEnv = append(rep.Settings.ServerEnv, key+"="+v)
		}
	}

	modelPath, remove, err := harness.ModelToServe(o.Model)
	if err != nil {
		return nil, err
	}
	defer remove()
	if o.Model == "" {
		rep.Model.Source = fmt.Sprintf("synthetic, random weights (std %g)", harness.SyntheticStd)
	} else {
		rep.Model.Source = modelPath
	}
	cfg, err := harness.ModelConfigOf(modelPath)
	if err != nil {
		return nil, fmt.Errorf("the benchmark needs a niels-gpt .gguf (convert a .pt with `nielsgpt convert`): %w", err)
	}
	rep.Model.setConfig(cfg)
	rep.Settings.TraceLayer = cfg.Layers - 1 // the deepest layer: the whole forward pass runs before it is read
	rep.Settings.PastTTokens, rep.Settings.PastTLevels = o.PastTTokens, o.PastTLevels
	for _, h := range o.PastTHops {
		if h < cfg.Context {
			rep.Settings.PastTHops = append(rep.Settings.PastTHops, h)
		}
	}

	// The engine alone first, with the machine otherwise as quiet as the
	// measured phases find it: the figure the single stream is held to.
	var eng *engine.Model // kept loaded for the alternated rounds
	if o.EngineTime > 0 {
		fmt.Fprintf(o.Progress, "engine alone: timing traced decode steps\n")
		var m *engine.Model
		rep.Engine, m = measureEngine(modelPath, o, cfg)
		if m != nil {
			defer m.Close()
			eng = m
		}
		if rep.Engine.Error == "" {
			fmt.Fprintf(o.Progress, "engine alone: %s traced steps/s at context %d\n", num(rep.Engine.StepsPerS), rep.Engine.Context)
		}
	}

	for _, p := range plans(o) {
		fmt.Fprintf(o.Progress, "%s: starting the server%s\n", p.mode, map[bool]string{true: " (serve --baseline)"}[p.baseline])
		mr, err := runMode(ctx, o, p, modelPath, cfg, rep.Settings.PastTHops, eng)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if p.baseline {
			rep.Baseline = mr
			if err != nil {
				rep.BaselineError = err.Error()
				fmt.Fprintf(o.Progress, "baseline: failed: %v\n", err)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		rep.Ours = mr
	}
	if l, ok := harness.LoadAverage(); ok {
		rep.Host.LoadAvgEnd = &l
	}
	rep.Seconds = time.Since(started).Seconds()
	return rep, nil
}

// serverOutputShown is how much of the server's log a failure quotes.
const serverOutputShown = 64 << 10

// serverSpec is how the bench starts `nielsgpt serve` for plan p: with the
// user's environment (their settings apply), and with the limits that would
// otherwise measure themselves lifted.
func serverSpec(o Options, p plan, modelPath string) harness.Spec {
	spec := harness.Spec{Exe: o.Executable, Model: modelPath, InheritEnv: true, Env: []string{
		"RATE_LIMIT_PER_MIN=1000000000",
		"RATE_LIMIT_BURST=1000000000",
		"MAX_CONCURRENT=" + strconv.Itoa(max(64, slices.Max(o.Levels))),
		// Room for the 16 KB transcript and its JSON body.
		"MAX_PROMPT_BYTES=20000",
		"MAX_BODY_BYTES=1048576",
		"MAX_NEW_TOKENS=" + strconv.Itoa(max(1024, p.tokens)),
		// The model is a local file; the bench never touches the network.
		"HF_HUB_OFFLINE=1",
		"THREADS=" + strconv.Itoa(o.Threads),
	}}
	if p.baseline {
		spec.Args = []string{"--baseline"}
	}
	if o.CPUProfileDir != "" {
		spec.Env = append(spec.Env, "NIELSGPT_CPUPROFILE="+filepath.Join(o.CPUProfileDir, p.mode+".pprof"))
	}
	return spec
}

// runMode starts one server and runs every phase against it. Once the
// measured phases have begun the result is non-nil even with an error, so
// figures measured before a failure are kept.
func runMode(ctx context.Context, o Options, p plan, modelPath string, cfg gguf.ModelConfig, hops []int, eng *engine.Model) (*ModeReport, error) {
	maxLevel := slices.Max(append(slices.Clone(o.Levels), o.PastTLevels...))
	wall0 := time.Now()
	driverCPU0, _ := selfCPU()
	srv, err := harness.StartReady(ctx, serverSpec(o, p, modelPath), o.ReadyTimeout)
	if err != nil {
		return nil, err
	}
	defer srv.Stop(10 * time.Second)
	c := newClient(srv.URL, maxLevel)
	defer c.close()

	mr := &ModeReport{Mode: p.mode, Tokens: p.tokens}
	r := &modeRunner{client: c, plan: p, traceLayer: cfg.Layers - 1, report: mr, pid: srv.PID()}
	say := func(format string, args ...any) { fmt.Fprintf(o.Progress, p.mode+": "+format+"\n", args...) }

	// Warm-up, not measured: the first request pays for lazy set-up (graph
	// allocation, the thread pool, connection set-up) that users pay once.
	warm := r.client.stream(ctx, r.request(shortPrompt(0), warmTokens(p)))
	if warm.Err != nil || warm.Tokens == 0 {
		return nil, fmt.Errorf("warm-up stream failed (%d tokens): %v; server output:\n%s", warm.Tokens, warm.Err, srv.OutputTail(serverOutputShown))
	}

	mr.SingleStream, mr.SingleStreamCost = r.singleStream(ctx)
	say("single stream: %s tokens/s (%s)", num(mr.SingleStream.TokensPerS), sample(mr.SingleStream))
	if !p.baseline {
		// The same single stream with every layer's attention and the lens:
		// what the deepest traces cost end to end, the encoder's 4-16x more
		// floats per event included. The baseline mode has no such traces.
		deep := r.throughputWith(ctx, scenario{prompt: shortPrompt, deep: true}, 1, p.singleRuns, p.tokens)
		mr.SingleStreamDeep = &deep
		say("single stream, every layer and the lens: %s tokens/s (%s)", num(deep.TokensPerS), sample(deep))
	}
	if eng != nil && !p.baseline {
		rounds, slice := 5, 300*time.Millisecond
		if o.Quick {
			rounds, slice = 2, 50*time.Millisecond
		}
		a, err := r.alternate(ctx, eng, engineContext(o, cfg), rounds, slice)
		if err != nil {
			r.noteError(err)
		} else {
			mr.Alternated = a
			say("alternated, %d rounds: engine alone %s steps/s, single stream %s tokens/s, median ratio %.0f %%",
				a.Rounds, num(a.EngineStepsPerS), num(a.StreamTokensPerS), 100*a.MedianRatio)
		}
	}
	mr.TTFTShort = r.ttft(ctx, shortPrompt)
	say("time to first token, short prompt: p50 / p95 %s ms (%s)", latency(mr.TTFTShort), ttftSample(mr.TTFTShort))
	mr.TTFTLong = r.ttft(ctx, longPrompt)
	say("time to first token, 16 KB prompt: p50 / p95 %s ms (%s)", latency(mr.TTFTLong), ttftSample(mr.TTFTLong))
	for _, level := range o.Levels {
		if ctx.Err() != nil {
			return mr, ctx.Err()
		}
		t := r.throughput(ctx, level, p.streamsPerWorker, p.tokens)
		mr.Levels = append(mr.Levels, t)
		say("%d concurrent: %s tokens/s aggregate (%s)", level, num(t.TokensPerS), sample(t))
	}
	// VmHWM is the peak over the process's life, read while it still runs:
	// here, after the concurrency levels (64 streams by default).
	if _, peak, err := harness.Memory(srv.PID()); err == nil {
		mr.PeakRSSBytes = &peak
	}
	r.pastT(ctx, hops, o.PastTLevels, o.PastTTokens, cfg.Context, say)

	if !srv.Alive() {
		return mr, fmt.Errorf("the server died during the benchmark; its last output:\n%s", srv.OutputTail(serverOutputShown))
	}
	r.recordCPU(srv, driverCPU0, wall0)
	return mr, ctx.Err()
}

// singleStream runs the single-stream phase and reads what it cost the
// server in system calls, context switches and CPU per token.
func (r *modeRunner) singleStream(ctx context.Context) (Throughput, *PerToken) {
	before, ok := harness.ReadCounters(r.pid)
	cpu0, cpuOK := selfCPU()
	sw0, swOK := selfSwitches()
	wait0, waitOK := runQueueWait(r.pid)
	t := r.throughput(ctx, 1, r.plan.singleRuns, r.plan.tokens)
	wait1, waitOK2 := runQueueWait(r.pid)
	cpu1, cpuOK2 := selfCPU()
	sw1, swOK2 := selfSwitches()
	after, ok2 := harness.ReadCounters(r.pid)
	if !ok || !ok2 || t.Tokens == 0 {
		return t, nil
	}
	n := float64(t.Tokens)
	cost := &PerToken{
		RWSyscalls:  float64(after.RWSyscalls-before.RWSyscalls) / n,
		CtxSwitches: float64(after.CtxSwitches-before.CtxSwitches) / n,
		CPUms:       float64(after.CPUTicks-before.CPUTicks) * 1000 / harness.ClockTicksPerSecond / n,
	}
	if cpuOK && cpuOK2 {
		ms := float64(cpu1-cpu0) / 1e6 / n
		cost.DriverCPUms = &ms
	}
	if waitOK && waitOK2 {
		ms := float64(wait1-wait0) / 1e6 / n
		cost.RunQueueWaitMs = &ms
	}
	if swOK && swOK2 {
		sw := float64(sw1-sw0) / n
		cost.DriverCtxSwitches = &sw
	}
	return t, cost
}

// pastT runs the past-T scenarios: every token generated with the window
// already full, at each hop and level.
func (r *modeRunner) pastT(ctx context.Context, hops, levels []int, tokens, context int, say func(string, ...any)) {
	for _, hop := range hops {
		for _, level := range levels {
			if ctx.Err() != nil {
				return
			}
			t := r.throughputWith(ctx, scenario{prompt: pastTPrompt(context), hop: hop}, level, r.plan.streamsPerWorker, tokens)
			r.report.PastT = append(r.report.PastT, PastT{WindowHop: hop, Throughput: t})
			say("past T, window_hop %d, %d concurrent: %s tokens/s (%s)", hop, level, num(t.TokensPerS), sample(t))
		}
	}
}

// recordCPU stops the server and notes the CPU time it and the driver used.
// On a machine with few cores the driver competes with the server it
// measures; these two figures say by how much.
func (r *modeRunner) recordCPU(srv *harness.Server, driverCPU0 time.Duration, wall0 time.Time) {
	srv.Stop(10 * time.Second)
	r.report.WallSeconds = time.Since(wall0).Seconds()
	if cpu, ok := srv.CPUTime(); ok {
		seconds := cpu.Seconds()
		r.report.ServerCPUSeconds = &seconds
	}
	if now, ok := selfCPU(); ok {
		cpu := (now - driverCPU0).Seconds()
		r.report.DriverCPUSeconds = &cpu
	}
}

// modeRunner runs the phases of one mode against one server.
type modeRunner struct {
	client     *client
	plan       plan
	traceLayer int
	report     *ModeReport
	pid        int // the server's, for its /proc counters

	mu   sync.Mutex
	seed int64 // the last seed handed out: every stream samples differently
}

func (r *modeRunner) request(msgs []message, tokens int) chatRequest {
	r.mu.Lock()
	r.seed++
	seed := r.seed
	r.mu.Unlock()
	return chatRequest{Messages: msgs, MaxNewTokens: tokens, Temperature: benchTemperature,
		TopK: benchTopK, Seed: seed, TraceLayer: r.traceLayer}
}

// noteError keeps the first few distinct failures for the report.
func (r *modeRunner) noteError(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	msg := err.Error()
	if len(r.report.Errors) < 5 && !slices.Contains(r.report.Errors, msg) {
		r.report.Errors = append(r.report.Errors, msg)
	}
}

// check turns a stream that finished but broke the protocol into a failure.
func (r *modeRunner) check(res streamResult) streamResult {
	if res.Err == nil && res.Done && res.Traces != res.Tokens {
		res.Err = fmt.Errorf("%d trace events for %d tokens with tracing on", res.Traces, res.Tokens)
	}
	if res.Err != nil {
		r.noteError(res.Err)
	}
	return res
}

// scenario is what a throughput phase asks for: the prompt of each stream
// and its window_hop (0: the server's default).
type scenario struct {
	prompt func(variant int) []message
	hop    int
	deep   bool // trace every layer and the logit lens
}

// throughput runs short-prompt streams: the chat widget's common case.
func (r *modeRunner) throughput(ctx context.Context, concurrency, perWorker, tokens int) Throughput {
	return r.throughputWith(ctx, scenario{prompt: shortPrompt}, concurrency, perWorker, tokens)
}

// throughputWith runs `concurrency` workers, each running `perWorker` streams
// back to back, within the phase cap; tokens are counted as received.
func (r *modeRunner) throughputWith(ctx context.Context, sc scenario, concurrency, perWorker, tokens int) Throughput {
	phase, cancel := context.WithTimeout(ctx, r.plan.cap)
	defer cancel()
	t := Throughput{Concurrency: concurrency}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for w := range concurrency {
		wg.Go(func() {
			for i := range perWorker {
				if phase.Err() != nil {
					return
				}
				req := r.request(sc.prompt(w*perWorker+i), tokens)
				req.WindowHop = sc.hop
				if sc.deep {
					req.TraceLayers, req.LogitLens = "all", true
				}
				res := r.check(r.client.stream(phase, req))
				mu.Lock()
				t.Streams++
				t.Tokens += res.Tokens
				switch {
				case res.Err != nil:
					t.Errors++
				case res.Cut:
					t.Cut++
				case res.Done:
					t.Completed++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.finish(time.Since(start))
	return t
}

// ttft times sequential one-token requests on an otherwise idle server:
// request start to the first `token` event, which includes the prompt's
// upload, parsing, formatting and prefill.
func (r *modeRunner) ttft(ctx context.Context, prompt func(variant int) []message) Latency {
	phase, cancel := context.WithTimeout(ctx, r.plan.cap)
	defer cancel()
	var samples []time.Duration
	errs := 0
	for i := range r.plan.ttftRuns {
		if phase.Err() != nil {
			break
		}
		res := r.check(r.client.stream(phase, r.request(prompt(i+1), 1)))
		switch {
		case res.Tokens > 0:
			samples = append(samples, res.TTFT)
		case res.Err != nil:
			errs++
		}
	}
	l := summariseLatency(samples)
	l.Errors = errs
	l.Capped = len(samples)+errs < r.plan.ttftRuns
	return l
}

func hostInfo(threads int) HostInfo {
	h := HostInfo{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), Threads: threads}
	if l, ok := harness.LoadAverage(); ok {
		h.LoadAvgStart = &l
	}
	return h
}

// warmTokens is the warm-up stream's length: as long as a measured stream,
// so the first measured one does not pay for what only a server's first long
// stream pays (the KV pool's pages and the graphs of every context length a
// stream passes through). The baseline recomputes its whole window per token,
// so a full-length warm-up would cost it seconds; a few tokens do there.
func warmTokens(p plan) int {
	if p.baseline {
		return min(8, p.tokens)
	}
	return p.tokens
}
