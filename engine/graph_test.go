package engine

import (
	"math"
	"strings"
	"testing"

	"nielsgpt/convert"
	"nielsgpt/gguf"
)

// A one-layer model's prompt chunk wants no output, so its only attention
// is left out of the graph and the causal mask, an input, is read by no op
// and gets no memory: uploading it anyway aborted the process.
func TestOneLayerPromptChunk(t *testing.T) {
	oneLayer := gguf.ModelConfig{Vocab: 256, Context: 256, Embd: 16, Layers: 1, Heads: 2, FF: 32, RopeTheta: 10000,
		NormEps: convert.LayerNormEps}
	m := syntheticModel(t, oneLayer, Options{Threads: 1})
	prompt := []byte(strings.Repeat("a chunk of prompt. ", 10)) // over one chunk of 128
	if r := generate(t, m, GenerateRequest{Prompt: prompt, MaxNewTokens: 3, TraceLayer: 0}); len(r.tokens) != 3 {
		t.Fatalf("%d tokens", len(r.tokens))
	}
}

// A one-layer model's lens is its one layer: the model's own distribution,
// with no earlier layer to put through the LM head.
func TestOneLayerLens(t *testing.T) {
	oneLayer := gguf.ModelConfig{Vocab: 256, Context: 64, Embd: 16, Layers: 1, Heads: 2, FF: 32, RopeTheta: 10000,
		NormEps: convert.LayerNormEps}
	m := syntheticModel(t, oneLayer, Options{Threads: 1})
	r := generate(t, m, GenerateRequest{Messages: []Message{{Role: "user", Content: "hi"}}, MaxNewTokens: 3, TraceLayer: 0,
		TraceLayers: []int{0}, LogitLens: true, Logprobs: true, TopLogprobs: 1})
	for i, s := range r.steps {
		if len(s.Lens) != 1 || len(s.Layers) != 1 || len(s.Lens[0].Candidates) == 0 {
			t.Fatalf("step %d: %d lens entries, %d layers", i, len(s.Lens), len(s.Layers))
		}
		top := s.Lens[0].Candidates[0]
		if top.TokenID != s.TopLogprobs[0].TokenID || math.Abs(math.Log(top.Prob)-s.TopLogprobs[0].Logprob) > 1e-9 {
			t.Fatalf("step %d: lens top %+v, the model's own %+v", i, top, s.TopLogprobs[0])
		}
	}
}
