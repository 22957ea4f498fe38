package bench

// The engine alone, in this process: traced decode steps of the model the
// server will serve, with the server's thread count, timed before any server
// runs. It is the ceiling a single stream over HTTP is held to.

import (
	"context"
	"fmt"
	"time"

	"nielsgpt/engine"
	"nielsgpt/gguf"
	"nielsgpt/internal/harness"
)

// EngineReport is the engine's own traced decode rate.
type EngineReport struct {
	Context   int     `json:"context"` // positions each timed step attended to
	Steps     int     `json:"steps"`
	Seconds   float64 `json:"seconds"`
	StepsPerS float64 `json:"steps_per_s"`
	// PrefillShortMs is the median prefill of the short prompt (a fresh
	// cache, the whole prompt in one traced step, the first token sampled):
	// what its time to first token costs the engine.
	PrefillShortMs float64 `json:"prefill_short_ms"`
	PrefillTokens  int     `json:"prefill_tokens"`
	Error          string  `json:"error,omitempty"`
}

// Alternated is the engine alone and the single stream over HTTP timed in
// turns, a slice of one then a stream of the other, so both see the same
// load: on a shared machine the engine's figure above and the single-stream
// phase are seconds apart, and either can move 2x between them.
type Alternated struct {
	Rounds           int     `json:"rounds"`
	EngineStepsPerS  float64 `json:"engine_steps_per_s"`  // all engine slices' steps over their time
	StreamTokensPerS float64 `json:"stream_tokens_per_s"` // all streams' tokens over their time
	// MedianRatio is the median over rounds of the stream's rate over the
	// engine slice's just before it: robust to one round caught by a burst.
	MedianRatio float64 `json:"median_ratio"`
	// EngineRunQueueWaitMs is how long, per engine step, the driver's
	// threads waited for a CPU during the engine slices: the same measure
	// as the server's run-queue wait per token (nil: not measurable).
	EngineRunQueueWaitMs *float64 `json:"engine_run_queue_wait_ms,omitempty"`
	// EngineCPUms is the driver's CPU time per engine step during the
	// slices, to set against the server's and the driver's CPU per token.
	EngineCPUms *float64 `json:"engine_cpu_ms,omitempty"`
}

// measureEngine times traced decode steps at the single-stream phase's mean
// context: the short prompt plus half the stream's tokens, within T.
// The model stays loaded (the caller closes it) for the alternated rounds.
func measureEngine(modelPath string, o Options, cfg gguf.ModelConfig) (*EngineReport, *engine.Model) {
	context := engineContext(o, cfg)
	m, err := engine.LoadFile(modelPath, engine.Options{Threads: o.Threads})
	if err != nil {
		return &EngineReport{Context: context, Error: fmt.Sprintf("loading the model in the driver: %v", err)}, nil
	}
	return engineRates(m, context, o, cfg), m
}

// engineContext is the single-stream phase's mean context: the short prompt
// plus half the stream's tokens, within T.
func engineContext(o Options, cfg gguf.ModelConfig) int {
	return min(cfg.Context, formattedLen(shortPrompt(1))+o.Tokens/2)
}

func engineRates(m *engine.Model, context int, o Options, cfg gguf.ModelConfig) *EngineReport {
	r, err := m.TracedDecodeRate(context, cfg.Layers-1, o.EngineTime)
	if err != nil {
		return &EngineReport{Context: context, Error: err.Error()}
	}
	rep := &EngineReport{Context: r.Context, Steps: r.Steps, Seconds: r.Seconds, StepsPerS: r.StepsPerS}
	// The prompt as the server formats it: the first TTFT request's.
	prompt := []byte(fmt.Sprintf("%s: %s\nassistant: ", shortPrompt(1)[0].Role, shortPrompt(1)[0].Content))
	if len(prompt) <= cfg.Context {
		runs := 20
		if o.Quick {
			runs = 3
		}
		d, err := m.TracedPrefillTime(prompt, cfg.Layers-1, runs)
		if err != nil {
			rep.Error = err.Error()
			return rep
		}
		rep.PrefillShortMs, rep.PrefillTokens = float64(d)/1e6, len(prompt)
	}
	return rep
}

// alternate runs rounds of an engine slice (traced decode steps at context,
// in this process) followed by one single stream over HTTP.
func (r *modeRunner) alternate(ctx context.Context, m *engine.Model, context, rounds int, slice time.Duration) (*Alternated, error) {
	a := &Alternated{}
	var steps, tokens int
	var engSecs, streamSecs float64
	ratios := make([]float64, 0, rounds)
	var wait, cpu time.Duration
	waitOK, cpuOK := true, true
	for range rounds {
		if ctx.Err() != nil {
			break
		}
		w0, ok := runQueueWait(0)
		c0, cok := selfCPU()
		e, err := m.TracedDecodeRate(context, r.traceLayer, slice)
		if err != nil {
			return nil, err
		}
		c1, cok2 := selfCPU()
		w1, ok2 := runQueueWait(0)
		wait, waitOK = wait+w1-w0, waitOK && ok && ok2
		cpu, cpuOK = cpu+c1-c0, cpuOK && cok && cok2
		t := r.throughput(ctx, 1, 1, r.plan.tokens)
		if t.Errors > 0 || t.Tokens == 0 {
			return nil, fmt.Errorf("alternated round %d: the stream failed", a.Rounds+1)
		}
		steps, engSecs = steps+e.Steps, engSecs+e.Seconds
		tokens, streamSecs = tokens+t.Tokens, streamSecs+t.Seconds
		ratios = append(ratios, t.TokensPerS/e.StepsPerS)
		a.Rounds++
	}
	if a.Rounds == 0 {
		return nil, ctx.Err()
	}
	a.EngineStepsPerS = float64(steps) / engSecs
	a.StreamTokensPerS = float64(tokens) / streamSecs
	a.MedianRatio = harness.Percentile(ratios, 50)
	if waitOK {
		ms := float64(wait) / 1e6 / float64(steps)
		a.EngineRunQueueWaitMs = &ms
	}
	if cpuOK {
		// The slice's set-up (a prefill of context-1 positions per round)
		// is included: a few percent at the default slice.
		ms := float64(cpu) / 1e6 / float64(steps)
		a.EngineCPUms = &ms
	}
	return a, nil
}
