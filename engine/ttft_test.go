package engine

// Time to first token of a short chat, in the engine: the prefill step alone
// against a whole Generate of one token through the scheduler, so that what
// the scheduler adds on top of the arithmetic shows.

import (
	"context"
	"testing"

	"nielsgpt/internal/harness"
)

// shortMessages is the bench's short prompt, and shortChat its transcript as
// the model reads it: 56 bytes.
var (
	shortMessages = []Message{{Role: "user", Content: "hi niels, what are you working on? (3)"}}
	shortChat     = FormatTranscript(shortMessages)
)

// The prefill of a short chat with the trace row and logits the first token
// needs, in a fresh cache each time (as a new request has).
func BenchmarkPrefillShortTraced(b *testing.B) {
	m := syntheticModel(b, harness.Deployed, Options{Threads: benchThreads()})
	c := m.Config()
	tokens := make([]int32, len(shortChat))
	for i, x := range shortChat {
		tokens[i] = int32(x)
	}
	s := newSampler(Sampling{Temperature: 0.9, TopK: 50, Seed: 42}, c.Vocab)
	for b.Loop() {
		cache := newCache(b, m, len(tokens))
		it := stepItem{cache: cache, tokens: tokens, logits: make([]float32, c.Vocab), traceLayers: []int32{int32(c.Layers - 1)},
			attnRows: make([]float32, c.Heads*len(tokens))}
		if err := m.step([]stepItem{it}); err != nil {
			b.Fatal(err)
		}
		s.sample(it.logits)
		cache.free()
	}
}

// The same request through Generate: submit, cache, prefill, sample, relay.
func BenchmarkFirstTokenShortTraced(b *testing.B) {
	m := syntheticModel(b, harness.Deployed, Options{Threads: benchThreads()})
	req := GenerateRequest{Messages: shortMessages, MaxNewTokens: 1,
		Sampling: Sampling{Temperature: 0.9, TopK: 50, Seed: 42}, TraceLayer: m.Config().Layers - 1}
	for b.Loop() {
		if _, err := m.Generate(context.Background(), req, func(*Step) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
