package engine

import (
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	"nielsgpt/models/demo"
)

// kvHalfRow is how far half-precision keys and values moved one model's
// next-token distributions from the exact (F32) cache's.
type kvHalfRow struct {
	tokens, agreed int
	kl, maxLogit   float64
}

// kvHalfCompare lets exact write conversations (hop 1, the API's default
// sampling, well past T), then reads the same tokens with half (teacher
// forcing) and compares the distributions at every generated position:
// top-1 agreement, KL(exact ‖ half) at temperature 1, and the largest logit
// difference.
func kvHalfCompare(t *testing.T, exact, half *Model, conversations, steps int) kvHalfRow {
	c := exact.cfg
	var row kvHalfRow
	for conv := range conversations {
		ids, s := studyConversation(conv, c.Vocab)
		ref := make([][]float32, steps)
		var trajectory []int32
		forcedWalk(t, exact, ids, steps, 1, func(i int, logits []float32) int32 {
			ref[i] = append([]float32(nil), logits...)
			tok, _, _ := s.sample(logits)
			trajectory = append(trajectory, int32(tok))
			return int32(tok)
		})
		var lpRef, lp []float64
		forcedWalk(t, half, ids, steps, 1, func(i int, logits []float32) int32 {
			lpRef, lp = logSoftmax(ref[i], lpRef), logSoftmax(logits, lp)
			row.tokens++
			if argmax(lp) == argmax(lpRef) {
				row.agreed++
			}
			for v, l := range lpRef {
				row.kl += math.Exp(l) * (l - lp[v])
			}
			row.maxLogit = max(row.maxLogit, maxAbsDiff(ref[i], logits))
			return trajectory[i]
		})
	}
	return row
}

// KV_CACHE_TYPE=f16 holds twice the positions in the same memory, is really
// in effect (the logits move), and stays close to the exact cache on a
// fixture trained like the real model.
func TestKVHalfStaysClose(t *testing.T) {
	exact, _ := loadFixtureWith(t, "tiny_a", Options{KVCacheMB: 8})
	half, _ := loadFixtureWith(t, "tiny_a", Options{KVCacheMB: 8, KVHalf: true})
	full, _ := exact.kvPositions()
	halfTotal, _ := half.kvPositions()
	if halfTotal != 2*full {
		t.Fatalf("8 MiB hold %d positions in F16, %d in F32: want twice as many", halfTotal, full)
	}
	r := kvHalfCompare(t, exact, half, 4, 2*exact.cfg.Context)
	agreement, kl := float64(r.agreed)/float64(r.tokens), r.kl/float64(r.tokens)
	t.Logf("tiny_a, %d positions: top-1 agreement %.1f %%, mean KL %.2e nats, largest logit change %.2e",
		r.tokens, 100*agreement, kl, r.maxLogit)
	if r.maxLogit == 0 {
		t.Fatal("the half-precision cache gave exactly the exact cache's logits: is it in effect?")
	}
	if agreement < 0.97 || kl > 1e-3 || r.maxLogit > 0.1 {
		t.Fatalf("half precision moved the model too far: agreement %.3f, mean KL %.2e, logit change %.2e",
			agreement, kl, r.maxLogit)
	}
}

// The study behind docs/BENCHMARKS.md's KV_CACHE_TYPE table; run with
//
//	NIELSGPT_FIDELITY=1 go test -v -run TestKVHalfFidelity -timeout 30m ./engine
func TestKVHalfFidelity(t *testing.T) {
	if os.Getenv("NIELSGPT_FIDELITY") != "1" {
		t.Skip("a study, not a check: NIELSGPT_FIDELITY=1 runs it (minutes)")
	}
	var out strings.Builder
	fmt.Fprintf(&out, "| model | T | positions compared | top-1 agreement with f32 | mean KL(f32 ‖ f16), nats | largest logit change |\n|---|---:|---:|---:|---:|---:|\n")
	for _, c := range []struct {
		name          string
		load          func(half bool) *Model
		conversations int
		steps         int
	}{
		{"demo (`--model demo`)", func(half bool) *Model {
			m, err := LoadBytes(demo.GGUF, Options{Threads: 1, KVHalf: half})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(m.Close)
			return m
		}, 24, 384},
		{"tiny_a (fixture)", func(half bool) *Model { m, _ := loadFixtureWith(t, "tiny_a", Options{KVHalf: half}); return m }, 24, 256},
		{"tiny_b (fixture)", func(half bool) *Model { m, _ := loadFixtureWith(t, "tiny_b", Options{KVHalf: half}); return m }, 24, 128},
	} {
		exact, half := c.load(false), c.load(true)
		r := kvHalfCompare(t, exact, half, c.conversations, c.steps)
		fmt.Fprintf(&out, "| %s | %d | %d | %.1f %% | %.2e | %.2e |\n", c.name, exact.cfg.Context, r.tokens,
			100*float64(r.agreed)/float64(r.tokens), r.kl/float64(r.tokens), r.maxLogit)
	}
	fmt.Print(out.String())
}
