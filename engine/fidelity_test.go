package engine

// How much window_hop changes what the model says, for users choosing one
// (docs/BENCHMARKS.md, "window_hop: speed against fidelity"). Run with
//
//	NIELSGPT_FIDELITY=1 go test -v -run TestWindowHopFidelity -timeout 30m ./engine
//
// For each model (the demo model and the two fixture shapes) and many
// conversations, the model writes a long continuation with hop 1 (the exact
// rule), sampling as the API's defaults do and ignoring stop tags so the
// conversation runs well past T. Then every other hop reads the same tokens
// (teacher forcing) with its own window, and at every position past T its
// distribution (temperature 1, no filtering) is compared with hop 1's: how
// often the most likely token is the same, and the mean KL divergence
// KL(hop 1 || hop k) in nats. Speed is the engine's tokens per second past T
// at that hop (traced, one stream): the steps alone, without HTTP.

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nielsgpt/models/demo"
)

var fidelityQuestions = []string{
	"tell me about niels", "who is niels?", "what's niels' email?", "explain: attention.",
	"what is the meaning of life?", "what does niels work on?", "where does niels live?",
	"what projects has niels built?", "can you help me with my homework?", "what is a transformer?",
	"is niels hiring?", "what languages does niels write?", "why are you so rude?",
	"what did niels study?", "how do i contact niels?", "what is this site?",
	"does niels like music?", "what's the weather like?", "tell me a joke.", "what is niels-gpt?",
	"how big is this model?", "what time is it?", "what is your favourite colour?", "who made you?",
}

const fidelitySystem = "surly chatbot for niels' site. third-person. terse. rude but not offensive. " +
	"grudging, laconic, brooding. answers like it resents being asked. doesn't guess. " +
	"says 'i don't know' for unknowns. refuses private info with 'no'."

// forcedWalk runs a sequence through the model one token at a time under the
// window rule with the given hop, exactly as the scheduler moves windows
// (windowStart, and a recompute from position 0 when the start moves).
// After each position it passes the logits to next, which returns the token
// to append. It returns the time spent in engine steps past T.
func forcedWalk(t *testing.T, m *Model, prompt []int32, steps, hop int, next func(i int, logits []float32) int32) time.Duration {
	c := m.cfg
	cache := newCache(t, m, c.Context)
	seq := &sequence{tokens: append([]int32(nil), prompt...), hop: hop, winStart: -1}
	logits, row := make([]float32, c.Vocab), make([]float32, c.Heads*c.Context)
	cacheAt, cached := -1, 0
	var spent time.Duration
	for i := range steps {
		n := len(seq.tokens)
		start := seq.windowStart(c.Context)
		if start != cacheAt {
			cacheAt, cached = start, 0
		}
		began := time.Now()
		for from := start + cached; from < n; {
			to := min(n, from+defaultPrefillChunk)
			it := stepItem{cache: cache, tokens: seq.tokens[from:to], nPast: from - start}
			if to == n {
				it.logits, it.traceLayers, it.attnRows = logits, []int32{int32(c.Layers - 1)}, row[:c.Heads*(n-start)]
			}
			runStep(t, m, it)
			from = to
		}
		if n > c.Context {
			spent += time.Since(began)
		}
		cached = n - start
		seq.tokens = append(seq.tokens, next(i, logits))
	}
	return spent
}

// logSoftmax returns log-probabilities at temperature 1.
func logSoftmax(logits []float32, out []float64) []float64 {
	maxv := math.Inf(-1)
	for _, l := range logits {
		maxv = max(maxv, float64(l))
	}
	sum := 0.0
	for _, l := range logits {
		sum += math.Exp(float64(l) - maxv)
	}
	lse := maxv + math.Log(sum)
	out = out[:0]
	for _, l := range logits {
		out = append(out, float64(l)-lse)
	}
	return out
}

type fidelityRow struct {
	hop            int
	tokens, agreed int
	kl             float64
	stepTime       time.Duration
	minWin         int
}

// fidelity runs the study on one model over conversations; steps tokens are
// generated after each prompt.
func fidelity(t *testing.T, m *Model, hops []int, conversations, steps int) []fidelityRow {
	c := m.cfg
	rows := make([]fidelityRow, len(hops))
	for i, hop := range hops {
		rows[i] = fidelityRow{hop: hop, minWin: c.Context}
	}
	for conv := range conversations {
		// hop 1 writes the conversation and keeps its distributions.
		ids, s := studyConversation(conv, c.Vocab)
		ref := make([][]float64, steps)
		var trajectory []int32
		rows[0].stepTime += forcedWalk(t, m, ids, steps, 1, func(i int, logits []float32) int32 {
			ref[i] = logSoftmax(logits, nil)
			tok, _, _ := s.sample(logits)
			trajectory = append(trajectory, int32(tok))
			return int32(tok)
		})
		countPastT(&rows[0], ids, steps, c.Context, 1, func(int) (bool, float64) { return true, 0 })
		for h := 1; h < len(hops); h++ {
			lp := make([]float64, 0, c.Vocab)
			agree, kl := make([]bool, steps), make([]float64, steps)
			rows[h].stepTime += forcedWalk(t, m, ids, steps, hops[h], func(i int, logits []float32) int32 {
				lp = logSoftmax(logits, lp)
				agree[i] = argmax(lp) == argmax(ref[i])
				for v, l := range ref[i] {
					kl[i] += math.Exp(l) * (l - lp[v])
				}
				return trajectory[i]
			})
			countPastT(&rows[h], ids, steps, c.Context, hops[h], func(i int) (bool, float64) { return agree[i], kl[i] })
		}
	}
	return rows
}

const defaultTemperatureForStudy = 0.9 // the API's default sampling

// studyConversation is conversation conv of a study: its prompt (the
// system prompt and one of fidelityQuestions, as generation-1 bytes) and the
// sampler, the API's defaults seeded by conv, that writes its reply.
func studyConversation(conv, vocab int) ([]int32, *sampler) {
	prompt := FormatTranscript([]Message{{Role: "system", Content: fidelitySystem},
		{Role: "user", Content: fidelityQuestions[conv%len(fidelityQuestions)]}})
	ids := make([]int32, len(prompt))
	for i, b := range prompt {
		ids[i] = int32(b)
	}
	return ids, newSampler(Sampling{Temperature: defaultTemperatureForStudy, TopK: 50, Seed: int64(conv)}, vocab)
}

// countPastT adds the steps generated past T to row: the agreement and KL of
// each, and the shortest window the hop left.
func countPastT(row *fidelityRow, prompt []int32, steps, T, hop int, at func(i int) (bool, float64)) {
	seq := &sequence{tokens: make([]int32, len(prompt)), hop: hop, winStart: -1}
	for i := range steps {
		n := len(seq.tokens)
		start := seq.windowStart(T)
		if n > T {
			agreed, kl := at(i)
			row.tokens++
			if agreed {
				row.agreed++
			}
			row.kl += kl
			row.minWin = min(row.minWin, n-start)
		}
		seq.tokens = append(seq.tokens, 0)
	}
}

func TestWindowHopFidelity(t *testing.T) {
	if os.Getenv("NIELSGPT_FIDELITY") != "1" {
		t.Skip("a study, not a check: NIELSGPT_FIDELITY=1 runs it (minutes)")
	}
	demoModel, err := LoadBytes(demo.GGUF, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(demoModel.Close)
	tinyA, _ := loadFixture(t, "tiny_a")
	tinyB, _ := loadFixture(t, "tiny_b")
	var out strings.Builder
	fmt.Fprintf(&out, "| model | T | window_hop | tokens/s past T (engine, traced) | top-1 agreement with hop 1 | mean KL(hop 1 ‖ hop k), nats | shortest window |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range []struct {
		name          string
		m             *Model
		conversations int
		steps         int
	}{
		{"demo (`--model demo`)", demoModel, 24, 384},
		{"tiny_a (fixture)", tinyA, 24, 256},
		{"tiny_b (fixture)", tinyB, 24, 128},
	} {
		var hops []int
		for _, h := range []int{1, 8, 32, 64, 128} {
			if h < c.m.cfg.Context {
				hops = append(hops, h)
			}
		}
		began := time.Now()
		for _, r := range fidelity(t, c.m, hops, c.conversations, c.steps) {
			rate := float64(r.tokens) / r.stepTime.Seconds()
			fmt.Fprintf(&out, "| %s | %d | %d | %.0f | %.1f %% | %.4f | %d |\n", c.name, c.m.cfg.Context, r.hop,
				rate, 100*float64(r.agreed)/float64(r.tokens), r.kl/float64(r.tokens), r.minWin)
		}
		t.Logf("%s: %d conversations of %d tokens in %s", c.name, c.conversations, c.steps, time.Since(began).Round(time.Second))
	}
	fmt.Print(out.String())
	if dir := os.Getenv("NIELSGPT_FIDELITY_OUT"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, "fidelity.md"), []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
