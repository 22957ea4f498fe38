package engine

// The hand-off between the scheduler and a stream's reader: Step values are
// reused, so a reader must see its Step unchanged for as long as its onStep
// runs, however far behind it is; and a token costs the caller's side no
// allocation.

import (
	"context"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestStepStaysStillDuringOnStep(t *testing.T) {
	m, _ := loadFixture(t, "tiny_b")
	req := GenerateRequest{Messages: []Message{{Role: "user", Content: "hello"}}, MaxNewTokens: 40,
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

// A stop is found on the step whose token completes it, and not before:
// byte by byte for generation 1, and across pieces of several bytes for
// generation 2.
func TestAppendTextFindsStops(t *testing.T) {
	m1, _ := loadFixture(t, "tiny_a")
	for text, want := range map[string]int{
		"": -1, "hi": -1, "hi\nuser: ": 8, "\nsystem: ": 8,
		"\nuser:": -1, "hi\nuser: x": 8, "user: ": -1,
	} {
		seq := &sequence{model: m1, stops: StopTags}
		found := -1
		for i := range len(text) {
			if seq.appendText(int(text[i])) && found < 0 {
				found = i
			}
		}
		if found != want {
			t.Errorf("%q: stop found at byte %d, want %d", text, found, want)
		}
	}
	m2, _ := loadGen2Fixture(t, "tiny_gen2_a", fixtureOptions)
	ids := m2.Encode([]byte("hello there, how are you"))
	var joined []byte
	for _, id := range ids {
		joined = append(joined, m2.TokenBytes(int(id))...)
	}
	for _, stop := range []string{"lo th", "you", "hello there, how are you", ", h"} {
		seq := &sequence{model: m2, stops: [][]byte{[]byte(stop)}}
		end := strings.Index(string(joined), stop) + len(stop)
		for i, id := range ids {
			before := len(seq.text)
			hit := seq.appendText(int(id))
			if completes := before < end && len(seq.text) >= end; hit != completes {
				t.Fatalf("stop %q: after piece %d (text %q) found %v", stop, i, seq.text, hit)
			}
		}
	}
}

// A reader about stepsAhead steps behind is never left waiting: the step
// that brings it back within reach wakes the scheduler, however the
// scheduler's sends interleave with the reader's count (stepDone). The gap
// inside stepDone is widened to a goroutine switch, so that a send lands in
// it: with sent read before done was counted this stalls within a few
// generations; each generation here must finish well inside the watchdog.
func TestReaderNeverLeftWaiting(t *testing.T) {
	m, _ := loadFixture(t, "tiny_b")
	handoffGap = runtime.Gosched
	t.Cleanup(func() { handoffGap = nil })
	for run := range 40 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req := GenerateRequest{Messages: []Message{{Role: "user", Content: "hi"}}, MaxNewTokens: 200,
			Sampling: Sampling{Temperature: 0.9, TopK: 50, Seed: int64(run)}, TraceLayer: 1}
		got := 0
		_, err := m.Generate(ctx, req, func(*Step) error {
			got++
			return nil
		})
		cancel()
		if err != nil {
			t.Fatalf("run %d stalled after %d of %d tokens: %v", run, got, req.MaxNewTokens, err)
		}
	}
}
