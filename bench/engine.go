package bench

// The engine alone, in this process: traced decode steps of the model the
// server will serve, with the server's thread count, timed before any server
// runs. It is the ceiling a single stream over HTTP is held to.

import (
	"fmt"

	"nielsgpt/engine"
	"nielsgpt/gguf"
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

// measureEngine times traced decode steps at the single-stream phase's mean
// context: the short prompt plus half the stream's tokens, within T.
func measureEngine(modelPath string, o Options, cfg gguf.ModelConfig) *EngineReport {
	context := min(cfg.Context, formattedLen(shortPrompt(1))+o.Tokens/2)
	m, err := engine.LoadFile(modelPath, engine.Options{Threads: o.Threads})
	if err != nil {
		return &EngineReport{Context: context, Error: fmt.Sprintf("loading the model in the driver: %v", err)}
	}
	defer m.Close()
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
