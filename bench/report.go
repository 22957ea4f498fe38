package bench

// The benchmark's results and their three renderings: a plain-text table for
// the terminal, a Markdown table for docs/BENCHMARKS.md, and JSON for
// machines. Ratios are always ours / baseline, as measured in the same run.

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"nielsgpt/gguf"
)

// Report is one benchmark run.
type Report struct {
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Model    ModelInfo `json:"model"`
	Host     HostInfo  `json:"host"`
	Settings Settings  `json:"settings"`
	// Engine is the engine alone (nil when skipped): traced decode steps in
	// the driver's process, the ceiling for the single stream.
	Engine *EngineReport `json:"engine,omitempty"`
	Ours   *ModeReport   `json:"ours"`
	// Baseline is nil when it was skipped or its server never came up;
	// BaselineError then says why (it is empty when skipped).
	Baseline      *ModeReport `json:"baseline,omitempty"`
	BaselineError string      `json:"baseline_error,omitempty"`
}

// ModelInfo names the model served.
type ModelInfo struct {
	Source    string  `json:"source"`
	V         int     `json:"V"`
	T         int     `json:"T"`
	C         int     `json:"C"`
	L         int     `json:"L"`
	H         int     `json:"H"`
	DFF       int     `json:"d_ff"`
	RopeTheta float64 `json:"rope_theta"`
}

func (m *ModelInfo) setConfig(c gguf.ModelConfig) {
	m.V, m.T, m.C, m.L, m.H, m.DFF, m.RopeTheta = c.Vocab, c.Context, c.Embd, c.Layers, c.Heads, c.FF, c.RopeTheta
}

// HostInfo is the machine the run shared with whatever else was running.
type HostInfo struct {
	OS           string   `json:"os"`
	Arch         string   `json:"arch"`
	CPUs         int      `json:"cpus"`
	Threads      int      `json:"threads"` // THREADS given to the server; 0 = one per core
	LoadAvgStart *float64 `json:"load_avg_start,omitempty"`
	LoadAvgEnd   *float64 `json:"load_avg_end,omitempty"`
}

// Settings are the request parameters and bounds the run used.
type Settings struct {
	Tokens             int     `json:"max_new_tokens"`
	BaselineTokens     int     `json:"baseline_max_new_tokens"`
	TraceLayer         int     `json:"trace_layer"`
	Temperature        float64 `json:"temperature"`
	TopK               int     `json:"top_k"`
	Levels             []int   `json:"levels"`
	Quick              bool    `json:"quick"`
	CapSeconds         float64 `json:"phase_cap_seconds"`
	BaselineCapSeconds float64 `json:"baseline_phase_cap_seconds"`
	PastTTokens        int     `json:"past_t_max_new_tokens"`
	PastTHops          []int   `json:"past_t_window_hops"`
	PastTLevels        []int   `json:"past_t_levels"`
	// ServerEnv is what of the user's environment, which the servers
	// inherit, changes what they measure: the KV cache's settings.
	ServerEnv []string `json:"server_env,omitempty"`
}

// serverEnvKeys are the settings ServerEnv records when they are set.
var serverEnvKeys = []string{"KV_CACHE_TYPE", "KV_CACHE_MB", "STREAM_PACE_MS"}

// ModeReport is what one server (batched or baseline) measured.
type ModeReport struct {
	Mode         string       `json:"mode"`
	Tokens       int          `json:"max_new_tokens"`
	SingleStream Throughput   `json:"single_stream"`
	TTFTShort    Latency      `json:"ttft_short_prompt"`
	TTFTLong     Latency      `json:"ttft_16kb_prompt"`
	Levels       []Throughput `json:"levels"`
	// SingleStreamCost is what the single-stream phase cost the server per
	// token received (nil where /proc is not readable).
	SingleStreamCost *PerToken `json:"single_stream_cost,omitempty"`
	// SingleStreamDeep is the single stream again with trace_layers "all"
	// and logit_lens on (nil for the baseline mode, which has neither).
	SingleStreamDeep *Throughput `json:"single_stream_deep,omitempty"`
	PastT            []PastT     `json:"past_t,omitempty"`
	// Alternated is the single stream and the engine alone timed in turns
	// (nil when the engine alone was skipped, and for the baseline).
	Alternated *Alternated `json:"alternated,omitempty"`
	// PeakRSSBytes is read after the concurrency levels; nil: not measurable.
	PeakRSSBytes *int64 `json:"peak_rss_bytes,omitempty"`
	// WallSeconds is the mode's whole run, server start to stop; the CPU
	// times are over the same span (nil where not measurable).
	WallSeconds      float64  `json:"wall_seconds"`
	ServerCPUSeconds *float64 `json:"server_cpu_seconds,omitempty"`
	DriverCPUSeconds *float64 `json:"driver_cpu_seconds,omitempty"`
	Errors           []string `json:"errors,omitempty"` // the first few distinct failures
}

// PerToken is a server's cost per token delivered.
type PerToken struct {
	RWSyscalls  float64 `json:"rw_syscalls"`  // read- and write-family system calls (/proc/PID/io syscr + syscw)
	CtxSwitches float64 `json:"ctx_switches"` // voluntary and involuntary, every thread
	CPUms       float64 `json:"cpu_ms"`       // user + system CPU time, milliseconds
	// The bench driver's own CPU and context switches over the same streams:
	// on a machine with few cores the client shares them with the server, so
	// these say how much of a token's time the measuring costs. Nil where
	// not measurable.
	DriverCPUms       *float64 `json:"driver_cpu_ms,omitempty"`
	DriverCtxSwitches *float64 `json:"driver_ctx_switches,omitempty"`
	// RunQueueWaitMs is the time the server's threads were runnable but
	// waiting for a CPU, summed over its threads (/proc schedstat).
	RunQueueWaitMs *float64 `json:"run_queue_wait_ms,omitempty"`
}

// PastT is one past-T scenario: streams generated with the window full.
type PastT struct {
	WindowHop int `json:"window_hop"`
	Throughput
}

func (m *ModeReport) pastT(hop, level int) *Throughput {
	if m == nil {
		return nil
	}
	for i := range m.PastT {
		if m.PastT[i].WindowHop == hop && m.PastT[i].Concurrency == level {
			return &m.PastT[i].Throughput
		}
	}
	return nil
}

func (m *ModeReport) level(n int) *Throughput {
	if m == nil {
		return nil
	}
	for i := range m.Levels {
		if m.Levels[i].Concurrency == n {
			return &m.Levels[i]
		}
	}
	return nil
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// row is one line of the results table: a figure for each mode and the ratio.
type row struct {
	metric, ours, ref, ratio string
}

func (r *Report) rows() []row {
	ref := r.Baseline
	rows := r.engineRows()
	rows = append(rows, row{
		metric: "single stream, tokens/s",
		ours:   rate(&r.Ours.SingleStream), ref: rate(refSingle(ref)),
		ratio: ratio(r.Ours.SingleStream.TokensPerS, refValue(ref, func(m *ModeReport) float64 { return m.SingleStream.TokensPerS })),
	})
	if d := r.Ours.SingleStreamDeep; d != nil {
		rows = append(rows, row{metric: "single stream, every layer + logit lens, tokens/s (ratio: to the plain single stream)",
			ours: rate(d), ref: "n/a", ratio: ratio(d.TokensPerS, r.Ours.SingleStream.TokensPerS)})
	}
	rows = append(rows, r.costRows()...)
	for _, c := range []struct {
		name string
		get  func(*ModeReport) Latency
	}{
		{"time to first token, short prompt, p50 / p95 ms", func(m *ModeReport) Latency { return m.TTFTShort }},
		{"time to first token, 16 KB prompt, p50 / p95 ms", func(m *ModeReport) Latency { return m.TTFTLong }},
	} {
		o := c.get(r.Ours)
		rw := row{metric: c.name, ours: latency(o), ref: "n/a", ratio: "n/a"}
		if ref != nil {
			rl := c.get(ref)
			rw.ref = latency(rl)
			if rl.Samples > 0 && o.Samples > 0 {
				rw.ratio = ratio(o.P50ms, rl.P50ms) + " / " + ratio(o.P95ms, rl.P95ms)
			}
		}
		rows = append(rows, rw)
	}
	for _, lv := range r.Ours.Levels {
		rl := ref.level(lv.Concurrency)
		rw := row{metric: fmt.Sprintf("aggregate tokens/s, %d concurrent", lv.Concurrency), ours: rate(&lv), ref: rate(rl), ratio: "n/a"}
		if rl != nil {
			rw.ratio = ratio(lv.TokensPerS, rl.TokensPerS)
		}
		rows = append(rows, rw)
	}
	rows = append(rows, r.pastTRows()...)
	// Read after the concurrency levels, so it covers the most streams.
	rss := row{metric: "peak RSS of the server, MB", ours: mb(r.Ours.PeakRSSBytes), ref: "n/a", ratio: "n/a"}
	if ref != nil {
		rss.ref = mb(ref.PeakRSSBytes)
		if r.Ours.PeakRSSBytes != nil && ref.PeakRSSBytes != nil {
			rss.ratio = ratio(float64(*r.Ours.PeakRSSBytes), float64(*ref.PeakRSSBytes))
		}
	}
	return append(rows, rss)
}

// engineRows set the single stream against the engine alone: the rate of
// traced decode steps with nothing around them, and how much of it a client
// receives over HTTP.
func (r *Report) engineRows() []row {
	e := r.Engine
	if e == nil {
		return nil
	}
	name := fmt.Sprintf("engine alone, traced decode steps/s at context %d", e.Context)
	if e.Error != "" {
		return []row{{metric: name, ours: "failed", ref: "n/a", ratio: "n/a"}}
	}
	share := "n/a"
	if e.StepsPerS > 0 && r.Ours.SingleStream.TokensPerS > 0 {
		share = fmt.Sprintf("%.0f %%", 100*r.Ours.SingleStream.TokensPerS/e.StepsPerS)
	}
	rows := []row{
		{metric: name, ours: num(e.StepsPerS), ref: "n/a", ratio: "n/a"},
		{metric: "single stream over HTTP / engine alone", ours: share, ref: "n/a", ratio: "n/a"},
	}
	if a := r.Ours.Alternated; a != nil {
		rows = append(rows,
			row{metric: fmt.Sprintf("alternated (%d rounds): engine alone steps/s, single stream tokens/s", a.Rounds),
				ours: num(a.EngineStepsPerS) + ", " + num(a.StreamTokensPerS), ref: "n/a", ratio: "n/a"},
			row{metric: "alternated: single stream / engine alone, median of rounds",
				ours: fmt.Sprintf("%.0f %%", 100*a.MedianRatio), ref: "n/a", ratio: "n/a"})
		if a.EngineCPUms != nil {
			rows = append(rows, row{metric: "alternated: engine alone, the driver's CPU per step, ms",
				ours: num(*a.EngineCPUms), ref: "n/a", ratio: "n/a"})
		}
		// With no core to spare, a stream's rate is set by all the CPU a
		// token takes, the server's and the client's; the engine alone's by
		// its step's. Their ratio is what the measured ratio should read
		// then: when it does, the gap is the machine's cores, not a wait.
		if c := r.Ours.SingleStreamCost; a.EngineCPUms != nil && c != nil && c.DriverCPUms != nil && c.CPUms+*c.DriverCPUms > 0 {
			rows = append(rows, row{metric: "engine CPU per step / (server + driver CPU per token): the ratio when no core is spare",
				ours: fmt.Sprintf("%.0f %%", 100**a.EngineCPUms/(c.CPUms+*c.DriverCPUms)), ref: "n/a", ratio: "n/a"})
		}
		if a.EngineRunQueueWaitMs != nil {
			rows = append(rows, row{metric: "alternated: engine alone, the driver's run-queue wait per step, ms",
				ours: num(*a.EngineRunQueueWaitMs), ref: "n/a", ratio: "n/a"})
		}
	}
	if e.PrefillTokens > 0 {
		rows = append(rows, row{metric: fmt.Sprintf("engine alone, short-prompt prefill (%d tokens), median ms", e.PrefillTokens),
			ours: num(e.PrefillShortMs), ref: "n/a", ratio: "n/a"})
	}
	return rows
}

// costRows are the single stream's cost to the server per token.
func (r *Report) costRows() []row {
	var rows []row
	for _, c := range []struct {
		name string
		get  func(*PerToken) float64
	}{
		{"server CPU per token, single stream, ms", func(p *PerToken) float64 { return p.CPUms }},
		{"server read/write syscalls per token, single stream", func(p *PerToken) float64 { return p.RWSyscalls }},
		{"server context switches per token, single stream", func(p *PerToken) float64 { return p.CtxSwitches }},
		{"server threads' run-queue wait per token, single stream, ms", func(p *PerToken) float64 { return orNaN(p.RunQueueWaitMs) }},
		{"bench driver CPU per token, single stream, ms", func(p *PerToken) float64 { return orNaN(p.DriverCPUms) }},
		{"bench driver context switches per token, single stream", func(p *PerToken) float64 { return orNaN(p.DriverCtxSwitches) }},
	} {
		if r.Ours.SingleStreamCost == nil {
			return nil
		}
		rw := row{metric: c.name, ours: numOrNA(c.get(r.Ours.SingleStreamCost)), ref: "n/a", ratio: "n/a"}
		if r.Baseline != nil && r.Baseline.SingleStreamCost != nil {
			b := c.get(r.Baseline.SingleStreamCost)
			rw.ref, rw.ratio = numOrNA(b), ratio(c.get(r.Ours.SingleStreamCost), b)
		}
		rows = append(rows, rw)
	}
	return rows
}

// pastTRows are the scenarios with the window already full.
func (r *Report) pastTRows() []row {
	var rows []row
	for _, hop := range r.Settings.PastTHops {
		for _, level := range r.Settings.PastTLevels {
			o := r.Ours.pastT(hop, level)
			if o == nil {
				continue
			}
			rl := r.Baseline.pastT(hop, level)
			rw := row{metric: fmt.Sprintf("past T, window_hop %d, %s, tokens/s", hop, plural(level, "stream")),
				ours: rate(o), ref: rate(rl), ratio: "n/a"}
			if rl != nil {
				rw.ratio = ratio(o.TokensPerS, rl.TokensPerS)
			}
			rows = append(rows, rw)
		}
	}
	return rows
}

func refSingle(m *ModeReport) *Throughput {
	if m == nil {
		return nil
	}
	return &m.SingleStream
}

func refValue(m *ModeReport, get func(*ModeReport) float64) float64 {
	if m == nil {
		return math.NaN()
	}
	return get(m)
}

// rate shows tokens/s, or n/a when nothing was measured.
func rate(t *Throughput) string {
	if t == nil || t.Streams == 0 || t.Seconds == 0 {
		return "n/a"
	}
	return num(t.TokensPerS)
}

func latency(l Latency) string {
	if l.Samples == 0 {
		return "n/a"
	}
	return num(l.P50ms) + " / " + num(l.P95ms)
}

func mb(b *int64) string {
	if b == nil {
		return "n/a"
	}
	return num(float64(*b) / (1 << 20))
}

// ratio is a/b as "12.3×", or n/a when either side is missing or zero.
func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 || a == 0 {
		return "n/a"
	}
	return num(a/b) + "×"
}

// orNaN reads an optional figure, NaN standing for "not measured".
func orNaN(x *float64) float64 {
	if x == nil {
		return math.NaN()
	}
	return *x
}

// numOrNA is num, with n/a for a figure not measured.
func numOrNA(x float64) string {
	if math.IsNaN(x) {
		return "n/a"
	}
	return num(x)
}

// num prints with about three significant digits, so 0.0421, 1.93 and 1523
// all read naturally in one column.
func num(x float64) string {
	ax := math.Abs(x)
	switch {
	case ax >= 100:
		return fmt.Sprintf("%.0f", x)
	case ax >= 10:
		return fmt.Sprintf("%.1f", x)
	case ax >= 1:
		return fmt.Sprintf("%.2f", x)
	case ax == 0:
		return "0"
	default:
		return fmt.Sprintf("%.2g", x)
	}
}

// header is the run's context in one or two sentences.
func (r *Report) header() []string {
	m := r.Model
	lines := []string{
		fmt.Sprintf("model: V=%d T=%d C=%d L=%d H=%d d_ff=%d rope_theta=%g, %s", m.V, m.T, m.C, m.L, m.H, m.DFF, m.RopeTheta, m.Source),
	}
	threads := "one per core"
	if r.Host.Threads > 0 {
		threads = fmt.Sprint(r.Host.Threads)
	}
	host := fmt.Sprintf("host: %s/%s, %d CPUs, server threads: %s", r.Host.OS, r.Host.Arch, r.Host.CPUs, threads)
	if r.Host.LoadAvgStart != nil {
		host += fmt.Sprintf(", load average %.2f at start", *r.Host.LoadAvgStart)
		if r.Host.LoadAvgEnd != nil {
			host += fmt.Sprintf(", %.2f at end", *r.Host.LoadAvgEnd)
		}
	}
	lines = append(lines, host)
	s := r.Settings
	lines = append(lines, fmt.Sprintf("requests: tracing on (trace_layer=%d), temperature %g, top_k %d, seeds varied per stream; max_new_tokens %d (baseline %d); phase caps %gs (baseline %gs)%s",
		s.TraceLayer, s.Temperature, s.TopK, s.Tokens, s.BaselineTokens, s.CapSeconds, s.BaselineCapSeconds, map[bool]string{true: "; --quick"}[s.Quick]))
	if len(s.ServerEnv) > 0 {
		lines = append(lines, "server settings from the environment: "+strings.Join(s.ServerEnv, " "))
	}
	if len(s.PastTHops) > 0 {
		lines = append(lines, fmt.Sprintf("past T: a prompt longer than T by half a window, so every token is generated past T; max_new_tokens %d; window_hop %v", s.PastTTokens, s.PastTHops))
	}
	return lines
}

// details says how much each figure rests on: streams, tokens, seconds,
// cuts and errors, so a capped or failing phase cannot pass for a clean one.
func (r *Report) details() []string {
	var out []string
	for _, m := range []*ModeReport{r.Ours, r.Baseline} {
		if m == nil {
			continue
		}
		parts := []string{"single " + sample(m.SingleStream),
			fmt.Sprintf("ttft short %s", ttftSample(m.TTFTShort)),
			fmt.Sprintf("ttft 16 KB %s", ttftSample(m.TTFTLong))}
		for _, lv := range m.Levels {
			parts = append(parts, fmt.Sprintf("@%d %s", lv.Concurrency, sample(lv)))
		}
		for _, pt := range m.PastT {
			parts = append(parts, fmt.Sprintf("past T hop %d @%d %s", pt.WindowHop, pt.Concurrency, sample(pt.Throughput)))
		}
		out = append(out, fmt.Sprintf("%s (max_new_tokens %d): %s", m.Mode, m.Tokens, strings.Join(parts, "; ")))
		if m.ServerCPUSeconds != nil && m.DriverCPUSeconds != nil {
			out = append(out, fmt.Sprintf("%s CPU time over %s s, start to stop: server %s s, bench driver %s s",
				m.Mode, num(m.WallSeconds), num(*m.ServerCPUSeconds), num(*m.DriverCPUSeconds)))
		}
		for _, e := range m.Errors {
			out = append(out, fmt.Sprintf("%s error: %s", m.Mode, firstLine(e)))
		}
	}
	if r.BaselineError != "" {
		out = append(out, "baseline failed: "+firstLine(r.BaselineError))
	}
	return out
}

func sample(t Throughput) string {
	s := fmt.Sprintf("%s, %s in %s s", plural(t.Streams, "stream"), plural(t.Tokens, "token"), num(t.Seconds))
	if t.Cut > 0 {
		s += fmt.Sprintf(", %d cut by the cap", t.Cut)
	}
	if t.Errors > 0 {
		s += fmt.Sprintf(", %d failed", t.Errors)
	}
	return s
}

func ttftSample(l Latency) string {
	s := plural(l.Samples, "request")
	if l.Errors > 0 {
		s += fmt.Sprintf(", %d failed", l.Errors)
	}
	if l.Capped {
		s += ", capped"
	}
	return s
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// WriteText writes the report as an aligned plain-text table.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	b.WriteString("nielsgpt bench\n")
	for _, l := range r.header() {
		b.WriteString(l + "\n")
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 3, ' ', tabwriter.AlignRight)
	// AlignRight right-aligns every cell; the metric names read better
	// left-aligned, so they are padded by hand.
	width := len("metric")
	rows := r.rows()
	for _, rw := range rows {
		width = max(width, len(rw.metric))
	}
	pad := func(s string) string { return s + strings.Repeat(" ", width-len(s)) }
	fmt.Fprintf(tw, "%s\tours\tbaseline\tours/baseline\t\n", pad("metric"))
	for _, rw := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", pad(rw.metric), rw.ours, rw.ref, rw.ratio)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	b.WriteString("\n")
	for _, d := range r.details() {
		b.WriteString(d + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteMarkdown writes the report as a Markdown table with its context, for
// docs/BENCHMARKS.md.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Run of %s, %.0f s.\n\n", r.Started.Format(time.RFC3339), r.Seconds)
	for _, l := range r.header() {
		b.WriteString("- " + l + "\n")
	}
	b.WriteString("\n| metric | ours | baseline | ours/baseline |\n|---|---:|---:|---:|\n")
	for _, rw := range r.rows() {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", rw.metric, rw.ours, rw.ref, rw.ratio)
	}
	b.WriteString("\n")
	for _, d := range r.details() {
		b.WriteString("- " + strings.ReplaceAll(d, "|", `\|`) + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
