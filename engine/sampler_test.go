package engine

// The sampler against the sort-based sampler it replaced (kept below as the
// reference): the same tokens, bit for bit the same entropy and candidates,
// for any seed, temperature and top-k, ties included; and no allocation.

import (
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
	rng         *rand.Rand
	probs       []float64
	order       []int
}

func newReferenceSampler(s Sampling, vocab int) *referenceSampler {
	return &referenceSampler{temperature: s.Temperature, topK: s.TopK,
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
// stream on the scheduler's goroutine.
func TestSamplerDoesNotAllocate(t *testing.T) {
	logits := make([]float32, 256)
	randomLogits(rand.New(rand.NewPCG(1, 1)), logits)
	for _, sampling := range []Sampling{{Temperature: 0}, {Temperature: 0.9, TopK: 50}, {Temperature: 1}} {
		s := newSampler(sampling, 256)
		if n := testing.AllocsPerRun(100, func() { s.sample(logits) }); n != 0 {
			t.Errorf("%+v: %v allocations per step", sampling, n)
		}
	}
}

func BenchmarkSample(b *testing.B) {
	logits := make([]float32, 256)
	randomLogits(rand.New(rand.NewPCG(1, 1)), logits)
	for _, c := range []struct {
		name string
		s    Sampling
	}{{"topk50", Sampling{Temperature: 0.9, TopK: 50}}, {"all", Sampling{Temperature: 0.9}}} {
		b.Run(c.name, func(b *testing.B) {
			s := newSampler(c.s, 256)
			for b.Loop() {
				s.sample(logits)
			}
		})
		b.Run(c.name+"-reference", func(b *testing.B) {
			s := newReferenceSampler(c.s, 256)
			for b.Loop() {
				s.sample(logits)
			}
		})
	}
}
