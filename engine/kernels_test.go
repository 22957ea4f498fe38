package engine

import (
	"testing"

	"nielsgpt/convert"
	"nielsgpt/gguf"
)

// The C step multiplies items of 32 rows or more with its own kernel and
// one-token steps with ggml's. A shape that no dimension of which is a
// multiple of the kernel's tiles (8 output rows, 32 tokens): 36 channels,
// heads of 12, d_ff 100. The same 80 tokens as one prompt, as two uneven
// chunks, and one at a time must give the same last logits and attention
// rows within the goldens' tolerances.
func TestOwnKernelsMatchOneTokenSteps(t *testing.T) {
	mc := gguf.ModelConfig{Vocab: 256, Context: 96, Embd: 36, Layers: 2, Heads: 3, FF: 100, RopeTheta: 10000,
		NormEps: convert.LayerNormEps}
	m := syntheticModel(t, mc, Options{Threads: 1})
	c := m.Config()
	const n = 80
	const text = "user: what does the kernel do with odd shapes?\nassistant: "
	prompt := make([]int32, n)
	for i := range prompt {
		prompt[i] = int32(text[i%len(text)])
	}
	layers := []int32{0, 1}

	// run feeds prompt in steps of the given sizes and returns the last
	// token's logits and attention rows.
	run := func(sizes ...int) ([]float32, []float32) {
		cache := newCache(t, m, n)
		past := 0
		var it stepItem
		for _, size := range sizes {
			it = stepItem{cache: cache, tokens: prompt[past : past+size], nPast: past,
				logits: make([]float32, c.Vocab), traceLayers: layers,
				attnRows: make([]float32, len(layers)*c.Heads*(past+size))}
			if err := m.step([]stepItem{it}); err != nil {
				t.Fatal(err)
			}
			past += size
		}
		if past != n {
			t.Fatalf("sizes cover %d tokens, want %d", past, n)
		}
		return it.logits, it.attnRows
	}

	ones := make([]int, n)
	for i := range ones {
		ones[i] = 1
	}
	wantLogits, wantAttn := run(ones...)
	for _, sizes := range [][]int{{n}, {33, 47}, {45, 1, 34}} {
		logits, attn := run(sizes...)
		dl, da := maxAbsDiff(logits, wantLogits), maxAbsDiff(attn, wantAttn)
		t.Logf("steps %v: max |Δlogit| %.2e, max |Δattn| %.2e against one token a step", sizes, dl, da)
		if dl > logitTol || da > attnTol {
			t.Fatalf("steps %v: max |Δlogit| %.2e (tol %.0e), max |Δattn| %.2e (tol %.0e)", sizes, dl, logitTol, da, attnTol)
		}
	}
}
