package engine

// The engine measured alone, for `nielsgpt bench` to print beside what a
// client gets over HTTP: how fast one sequence's traced decode steps are
// with nothing between them, so the report shows how much of a stream's time
// goes to the engine's arithmetic and how much to everything around it.

import (
	"errors"
	"slices"
	"time"
)

// DecodeRate is what TracedDecodeRate measured.
type DecodeRate struct {
	Context      int     // positions each step attended to
	Steps        int     // steps timed
	Seconds      float64 // their wall-clock time
	StepsPerS    float64
	MeanStepSecs float64
}

// TracedDecodeRate times single-sequence traced decode steps at a fixed
// context, as BenchmarkDecodeStepTraced does: one new token attending to
// context-1 cached ones, the traced layer's attention row and the logits
// copied out, and a token sampled (temperature 0.9, top-k 50). It runs the
// steps for about d on the calling goroutine, so m must have nothing else to
// do: load a model for it alone.
func (m *Model) TracedDecodeRate(context, traceLayer int, d time.Duration) (DecodeRate, error) {
	c := m.cfg
	if context < 2 || context > c.Context || traceLayer < 0 || traceLayer >= c.Layers {
		return DecodeRate{}, errors.New("context or trace layer out of range")
	}
	cache, err := m.newKVCache(context)
	if err != nil {
		return DecodeRate{}, err
	}
	defer cache.free()
	const text = "user: tell me about niels\nassistant: "
	tokens := make([]int32, context)
	for i := range tokens {
		tokens[i] = int32(text[i%len(text)])
	}
	if err := m.step([]stepItem{{cache: cache, tokens: tokens[:context-1]}}); err != nil {
		return DecodeRate{}, err
	}
	s := newSampler(Sampling{Temperature: 0.9, TopK: 50, Seed: 42}, c.Vocab)
	it := stepItem{cache: cache, tokens: tokens[context-1:], nPast: context - 1,
		logits: make([]float32, c.Vocab), traceLayers: []int32{int32(traceLayer)},
		attnRows: make([]float32, c.Heads*context)}
	// One step untimed: the first pays for the graph and buffers at this shape.
	if err := m.step([]stepItem{it}); err != nil {
		return DecodeRate{}, err
	}
	r := DecodeRate{Context: context}
	start := time.Now()
	for time.Since(start) < d || r.Steps < 10 {
		// the same position each time: the context stays where it is
		if err := m.step([]stepItem{it}); err != nil {
			return DecodeRate{}, err
		}
		s.sample(it.logits)
		r.Steps++
	}
	r.Seconds = time.Since(start).Seconds()
	r.StepsPerS = float64(r.Steps) / r.Seconds
	r.MeanStepSecs = r.Seconds / float64(r.Steps)
	return r, nil
}

// TracedPrefillTime is the median over runs of a prompt's prefill as a new
// request has it: a fresh KV cache, the whole prompt in one step with the
// traced row and logits of its last position, and the first token sampled.
// Like TracedDecodeRate it runs on the calling goroutine: m must be idle.
func (m *Model) TracedPrefillTime(prompt []byte, traceLayer, runs int) (time.Duration, error) {
	c := m.cfg
	n := len(prompt)
	if n < 1 || n > min(c.Context, stepTokenBudget) || traceLayer < 0 || traceLayer >= c.Layers || runs < 1 {
		return 0, errors.New("prompt length, trace layer or runs out of range")
	}
	tokens := make([]int32, n)
	for i, b := range prompt {
		tokens[i] = int32(b)
	}
	s := newSampler(Sampling{Temperature: 0.9, TopK: 50, Seed: 42}, c.Vocab)
	logits, row := make([]float32, c.Vocab), make([]float32, c.Heads*n)
	times := make([]time.Duration, 0, runs)
	for range runs + 1 { // the first pays for the graph at this shape
		began := time.Now()
		cache, err := m.newKVCache(n)
		if err != nil {
			return 0, err
		}
		err = m.step([]stepItem{{cache: cache, tokens: tokens, logits: logits, traceLayers: []int32{int32(traceLayer)}, attnRows: row}})
		cache.free()
		if err != nil {
			return 0, err
		}
		s.sample(logits)
		times = append(times, time.Since(began))
	}
	times = times[1:]
	slices.Sort(times)
	return times[len(times)/2], nil
}
