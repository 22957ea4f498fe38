package engine

import (
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
