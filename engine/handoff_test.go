package engine

// The hand-off between the scheduler and a stream's reader: Step values are
// reused, so a reader must see its Step unchanged for as long as its onStep
// runs, however far behind it is; and a token costs the caller's side no
// allocation.

import (
	"context"
	"slices"
	"testing"
	"time"
)

func TestStepStaysStillDuringOnStep(t *testing.T) {
	m, _ := loadFixture(t, "tiny_b")
	req := GenerateRequest{Prompt: []byte("user: hello\nassistant: "), MaxNewTokens: 40,
		Sampling: Sampling{Temperature: 0.9, TopK: 50, Seed: 3}, TraceLayer: 1}
	want := generate(t, m, req)
	i := 0
	_, err := m.Generate(context.Background(), req, func(s *Step) error {
		index, token, cands := s.Index, s.TokenID, slices.Clone(s.Candidates)
		rows := make([][]float32, len(s.Attn))
		for h := range s.Attn {
			rows[h] = slices.Clone(s.Attn[h])
		}
		// A slow reader: the scheduler fills every slot it may meanwhile.
		time.Sleep(2 * time.Millisecond)
		if s.Index != index || s.TokenID != token || !slices.Equal(s.Candidates, cands) {
			t.Fatalf("step %d changed while its onStep ran", index)
		}
		for h := range rows {
			if !slices.Equal(rows[h], s.Attn[h]) {
				t.Fatalf("step %d: attention row %d changed while its onStep ran", index, h)
			}
		}
		if index != i || token != want.tokens[i] {
			t.Fatalf("step %d: token %d, want step %d token %d", index, token, i, want.tokens[i])
		}
		i++
		return nil
	})
	if err != nil || i != len(want.tokens) {
		t.Fatalf("%d steps, want %d: %v", i, len(want.tokens), err)
	}
}

func TestEndsWithStopTag(t *testing.T) {
	ids := func(s string) []int32 {
		out := make([]int32, len(s))
		for i := range s {
			out[i] = int32(s[i])
		}
		return out
	}
	for text, want := range map[string]bool{
		"": false, "hi": false, "hi\nuser: ": true, "\nsystem: ": true,
		"\nuser:": false, "hi\nuser: x": false, "user: ": false,
	} {
		if got := endsWithStop(ids(text), StopTags); got != want {
			t.Errorf("%q: %v, want %v", text, got, want)
		}
	}
}
