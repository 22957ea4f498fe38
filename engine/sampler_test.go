package engine

// The sampler against the sort-based sampler it replaced (kept below as the
// reference): the same tokens, bit for bit the same entropy and candidates,
// for any seed, temperature and top-k, ties included; and no allocation.

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

// referenceSampler is the previous implementation, verbatim in its maths: a
// stable sort for top-k, a separate entropy loop, ten scans for the top-10.
type referenceSampler struct {
	temperature float64
	topK        int
	topP        float64 // applied as the sampler before this one did: a sort of the kept tokens
	rng         *rand.Rand
	probs       []float64
	order       []int
}

func newReferenceSampler(s Sampling, vocab int) *referenceSampler {
	return &referenceSampler{temperature: s.Temperature, topK: s.TopK, topP: s.TopP,
		rng:   rand.New(rand.NewPCG(uint64(s.Seed), 0x6e69656c73677074)),
		probs: make([]float64, vocab), order: make([]int, vocab)}
}

func (s *referenceSampler) sample(logits []float32) (int, float64, []Candidate) {
	p := s.probs
	var token int
	if s.temperature == 0 {
		token = argmax(logits)
		for i := range p {
			p[i] = 0
		}
		p[token] = 1
	} else {
		for i, l := range logits {
			p[i] = float64(l) / s.temperature
		}
		if s.topK > 0 && s.topK < len(p) {
			for i := range s.order {
				s.order[i] = i
			}
			sort.SliceStable(s.order, func(a, b int) bool { return p[s.order[a]] > p[s.order[b]] })
			for _, i := range s.order[s.topK:] {
				p[i] = math.Inf(-1)
			}
		}
		maxv := math.Inf(-1)
		for _, v := range p {
			maxv = math.Max(maxv, v)
		}
		sum := 0.0
		for i, v := range p {
			p[i] = math.Exp(v - maxv)
			sum += p[i]
		}
		for i := range p {
			p[i] /= sum
		}
		if s.topP > 0 && s.topP < 1 {
			kept := sortedNucleus(p, s.topP)
			sum = 0
			for _, i := range kept {
				sum += p[i]
			}
			next := 0
			for i := range p {
				if next < len(kept) && kept[next] == i {
					p[i] /= sum
					next++
				} else {
					p[i] = 0
				}
			}
		}
		u := s.rng.Float64()
		cum, last, chosen := 0.0, 0, -1
		for i, pi := range p {
			if pi == 0 {
				continue
			}
			cum += pi
			last = i
			if u < cum {
				chosen = i
				break
			}
		}
		if chosen < 0 {
			chosen = last
		}
		token = chosen
	}
	entropy := 0.0
	for _, pi := range p {
		entropy -= pi * math.Log(math.Max(pi, 1e-12))
	}
	var top []Candidate
	for len(top) < traceTopK {
		best := -1
		for i, pi := range p {
			if pi > 0 && (best < 0 || pi > p[best]) && !slices.ContainsFunc(top, func(c Candidate) bool { return c.TokenID == i }) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		top = append(top, Candidate{TokenID: best, Prob: p[best]})
	}
	return token, entropy, top
}

// randomLogits draws logits of several kinds: spread out, peaky, and coarse
// (few distinct values, so top-k cuts through runs of ties).
func randomLogits(rng *rand.Rand, logits []float32) {
	kind := rng.IntN(3)
	for i := range logits {
		switch kind {
		case 0:
			logits[i] = float32(rng.NormFloat64() * 3)
		case 1:
			logits[i] = float32(rng.NormFloat64() * 30)
		default:
			logits[i] = float32(rng.IntN(6))
		}
	}
}

func TestSamplerMatchesSortingSampler(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	logits := make([]float32, 256)
	for trial := range 400 {
		sampling := Sampling{
			Temperature: []float64{0, 0.2, 0.9, 1, 1.7, 1e-3, 50}[trial%7],
			TopK:        []int{0, 1, 5, 10, 50, 255, 256, 300}[rng.IntN(8)],
			Seed:        int64(rng.Uint64()),
		}
		got, want := newSampler(sampling, 256), newReferenceSampler(sampling, 256)
		for step := range 20 {
			randomLogits(rng, logits)
			tok, h, top := got.sample(logits)
			wtok, wh, wtop := want.sample(logits)
			if tok != wtok || math.Float64bits(h) != math.Float64bits(wh) || !slices.Equal(top, wtop) {
				t.Fatalf("trial %d step %d %+v: token %d entropy %v top %v; reference %d %v %v",
					trial, step, sampling, tok, h, top, wtok, wh, wtop)
			}
			if !slices.Equal(got.probs, want.probs) {
				t.Fatalf("trial %d step %d: distributions differ", trial, step)
			}
		}
	}
}

func TestKthLargest(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for trial := range 2000 {
		n := 1 + rng.IntN(300)
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = float64(rng.IntN(1 + trial%40)) // many ties in most trials
		}
		sorted := slices.Clone(xs)
		slices.Sort(sorted)
		slices.Reverse(sorted)
		k := 1 + rng.IntN(n)
		if got := kthLargest(xs, k); got != sorted[k-1] {
			t.Fatalf("n %d k %d: got %v want %v", n, k, got, sorted[k-1])
		}
	}
}

// A step's sampling allocates nothing: it runs for every token of every
// stream on the scheduler's goroutine. Nor does observing a token.
func TestSamplerDoesNotAllocate(t *testing.T) {
	logits := make([]float32, 256)
	randomLogits(rand.New(rand.NewPCG(1, 1)), logits)
	for _, sampling := range []Sampling{{Temperature: 0}, {Temperature: 0.9, TopK: 50}, {Temperature: 1},
		{Temperature: 0.8, TopK: 50, TopP: 0.9, RepetitionPenalty: 1.3}, {Temperature: 0, RepetitionPenalty: 1.3},
		{Temperature: 1, TopP: 0.5}} {
		s := newSampler(sampling, 256, 3, 4, 5)
		next := 0
		if n := testing.AllocsPerRun(100, func() {
			tok, _, _ := s.sample(logits)
			s.observe(tok)
			s.observe(next % 256)
			next += 7
		}); n != 0 {
			t.Errorf("%+v: %v allocations per step", sampling, n)
		}
	}
}

// sortedNucleus is top-p the obvious way: sort by probability (ties by
// id), keep until the sum reaches p.
func sortedNucleus(p []float64, topP float64) []int {
	var order []int
	for i, pi := range p {
		if pi > 0 {
			order = append(order, i)
		}
	}
	sort.SliceStable(order, func(a, b int) bool { return p[order[a]] > p[order[b]] })
	cum, n := 0.0, 0
	for _, i := range order {
		if cum >= topP {
			break
		}
		cum += p[i]
		n++
	}
	kept := order[:n]
	slices.Sort(kept)
	return kept
}

// top_p without a sort keeps exactly the set a sort would: over spread,
// peaky and coarse logits (runs of ties cut by the nucleus), with and
// without top-k before it.
func TestSamplerTopPMatchesSorting(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	logits := make([]float32, 300)
	for trial := range 3000 {
		randomLogits(rng, logits)
		sampling := Sampling{Temperature: []float64{0.5, 1, 2}[trial%3], TopK: []int{0, 20, 299}[rng.IntN(3)],
			TopP: []float64{1e-9, 0.1, 0.5, 0.9, 0.999, rng.Float64()}[rng.IntN(6)], Seed: 1}
		// The distribution top-p starts from: the same sampler without it.
		before := newSampler(Sampling{Temperature: sampling.Temperature, TopK: sampling.TopK}, len(logits))
		before.sample(logits)
		want := sortedNucleus(before.probs, sampling.TopP)
		s := newSampler(sampling, len(logits))
		tok, _, top := s.sample(logits)
		var got []int
		sum := 0.0
		for i, pi := range s.probs {
			if pi > 0 {
				got = append(got, i)
				sum += pi
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("trial %d %+v: kept %v, a sort keeps %v", trial, sampling, got, want)
		}
		if !slices.Contains(got, tok) || len(top) != min(len(got), traceTopK) || math.Abs(sum-1) > 1e-12 {
			t.Fatalf("trial %d: drew %d, %d candidates, sum %v", trial, tok, len(top), sum)
		}
	}
}

// repetition_penalty divides the logit of each distinct id seen so far,
// positive or negative, once however often it was seen, before the
// temperature; banned ids never win, even greedy.
func TestSamplerPenaltyAndBans(t *testing.T) {
	logits := []float32{2, -1, 1.9, 0.5, -3, 4}
	s := newSampler(Sampling{Temperature: 1, RepetitionPenalty: 2}, len(logits), 5)
	for _, id := range []int{0, 1, 1, 1, 4} {
		s.observe(id)
	}
	s.sample(logits)
	want := make([]float64, 5) // id 5 banned
	for i := range want {
		want[i] = float64(logits[i])
		if i == 0 || i == 1 || i == 4 {
			want[i] /= 2
		}
	}
	z := 0.0
	for _, w := range want {
		z += math.Exp(w)
	}
	for i, w := range want {
		if d := math.Abs(s.probs[i] - math.Exp(w)/z); d > 1e-12 {
			t.Fatalf("p(%d) = %v, want %v", i, s.probs[i], math.Exp(w)/z)
		}
	}
	if s.probs[5] != 0 {
		t.Fatalf("banned id 5 has p %v", s.probs[5])
	}
	// greedy: 5 is banned and 0 penalised below 2
	g := newSampler(Sampling{Temperature: 0, RepetitionPenalty: 2}, len(logits), 5)
	g.observe(0)
	if tok, h, top := g.sample(logits); tok != 2 || h != 0 || len(top) != 1 || top[0] != (Candidate{2, 1}) {
		t.Fatalf("greedy: token %d entropy %v top %v, want 2", tok, h, top)
	}
	// a penalty below 1 raises a seen token: 2·(1/0.5) = 4 ties 5, and the lower id wins
	r := newSampler(Sampling{Temperature: 0, RepetitionPenalty: 0.5}, len(logits))
	r.observe(0)
	if tok, _, _ := r.sample(logits); tok != 0 {
		t.Fatalf("penalty 0.5: token %d, want 0", tok)
	}
	// 1 and 0 are off: no history is even kept
	for _, off := range []float64{0, 1} {
		o := newSampler(Sampling{Temperature: 0, RepetitionPenalty: off}, len(logits))
		o.observe(5)
		if tok, _, _ := o.sample(logits); tok != 5 || o.seen != nil {
			t.Fatalf("penalty %v: token %d, history %v", off, tok, o.seen)
		}
	}
}

func BenchmarkSample(b *testing.B) {
	for _, vocab := range []int{256, 16000} {
		logits := make([]float32, vocab)
		randomLogits(rand.New(rand.NewPCG(1, 1)), logits)
		history := make([]int, 300)
		for i := range history {
			history[i] = (i * 37) % vocab
		}
		for _, c := range []struct {
			name string
			s    Sampling
		}{
			{"greedy", Sampling{Temperature: 0}},
			{"topk50", Sampling{Temperature: 0.9, TopK: 50}},
			{"all", Sampling{Temperature: 0.9}},
			{"topp0.9", Sampling{Temperature: 0.9, TopP: 0.9}},
			{"topk50-topp0.9-penalty", Sampling{Temperature: 0.8, TopK: 50, TopP: 0.9, RepetitionPenalty: 1.3}},
			{"greedy-penalty", Sampling{Temperature: 0, RepetitionPenalty: 1.3}},
		} {
			b.Run(fmt.Sprintf("V%d/%s", vocab, c.name), func(b *testing.B) {
				s := newSampler(c.s, vocab, 3, 4, 5)
				for _, id := range history {
					s.observe(id)
				}
				for b.Loop() {
					s.sample(logits)
				}
			})
			if c.s.RepetitionPenalty == 0 && c.s.Temperature > 0 {
				b.Run(fmt.Sprintf("V%d/%s-reference", vocab, c.name), func(b *testing.B) {
					s := newReferenceSampler(c.s, vocab)
					for b.Loop() {
						s.sample(logits)
					}
				})
			}
		}
	}
}
