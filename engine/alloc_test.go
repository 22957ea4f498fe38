package engine

import (
	"testing"
)

// A decode step allocates nothing on the Go side once the model's scratch
// has grown to the batch: the items, tokens and outputs pass through C
// memory, and the C side keeps its graphs, their memory plans and its input
// staging between steps (docs/BENCHMARKS.md, "Reuse between steps").
func TestDecodeStepAllocatesNothing(t *testing.T) {
	m, _ := loadFixture(t, "tiny_a")
	c := m.Config()
	prompt := make([]int32, 40)
	for i := range prompt {
		const text = "user: hello there\nassistant: "
		prompt[i] = int32(text[i%len(text)])
	}
	items := make([]stepItem, 3)
	for i := range items {
		cache := newCache(t, m, c.Context)
		runStep(t, m, stepItem{cache: cache, tokens: prompt[:39-i]})
		items[i] = stepItem{cache: cache, tokens: prompt[39-i : 40-i], nPast: 39 - i,
			logits: make([]float32, c.Vocab), traceLayers: []int32{int32(i % c.Layers)}, attnRows: make([]float32, c.Heads*(40-i))}
	}
	items[2].traceLayers = nil // one untraced stream in the batch
	items[2].attnRows = nil
	// one deep stream: every layer traced, the lens, a head ablated
	items[1].traceLayers = []int32{1, 0}
	items[1].attnRows = make([]float32, 2*c.Heads*39)
	items[1].lens = make([]float32, c.Layers*c.Vocab)
	items[1].headMask = make([]float32, c.Layers*c.Heads)
	for i := range items[1].headMask {
		items[1].headMask[i] = float32(min(i, 1)) // head 0 of layer 0 ablated
	}
	if err := m.step(items); err != nil { // grows the scratch and builds the graph
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(50, func() {
		if err := m.step(items); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("a decode step made %v heap allocations, want 0", allocs)
	}
}
