package engine

// Turning one step's logits into a token (docs/API.md, Generation): temperature, top-k and a
// seeded generator, plus the entropy and top-10 that the trace reports. All
// in float64 so the reported distribution is the one actually sampled from.

import (
	"math"
	"math/rand/v2"
	"sort"
)

const traceTopK = 10

type sampler struct {
	temperature float64
	topK        int
	topP        float64
	rng         *rand.Rand
	probs       []float64 // reused across steps
	order       []int
}

func newSampler(s Sampling, vocab int) *sampler {
	return &sampler{
		temperature: s.Temperature,
		topK:        s.TopK,
		topP:        s.TopP,
		// PCG's second word is a fixed stream id: the seed alone decides the draws.
		rng:   rand.New(rand.NewPCG(uint64(s.Seed), 0x6e69656c73677074)),
		probs: make([]float64, vocab),
		order: make([]int, vocab),
	}
}

// sample draws the next token and describes the distribution it came from.
func (s *sampler) sample(logits []float32) (token int, entropy float64, top []Candidate) {
	p := s.probs
	if s.temperature == 0 {
		token = argmax(logits)
		for i := range p {
			p[i] = 0
		}
		p[token] = 1
	} else {
		token = s.draw(logits)
	}
	for _, pi := range p {
		entropy -= pi * math.Log(math.Max(pi, 1e-12))
	}
	return token, entropy, s.topCandidates()
}

// draw fills s.probs with softmax(logits/T) over the top-k logits and draws
// from it by walking the cumulative sum in token order.
func (s *sampler) draw(logits []float32) int {
	p := s.probs
	for i, l := range logits {
		p[i] = float64(l) / s.temperature
	}
	if s.topK > 0 && s.topK < len(p) {
		s.sortByProb() // p holds scaled logits: same order
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
		p[i] = math.Exp(v - maxv) // exp(−inf) = 0: filtered tokens get exactly 0
		sum += p[i]
	}
	for i := range p {
		p[i] /= sum
	}
	if s.topP > 0 && s.topP < 1 {
		s.keepNucleus()
	}
	u := s.rng.Float64()
	cum, last := 0.0, 0
	for i, pi := range p {
		if pi == 0 {
			continue
		}
		cum += pi
		last = i
		if u < cum {
			return i
		}
	}
	return last // rounding left u above the final sum
}

// keepNucleus keeps the smallest set of most likely tokens whose
// probability reaches topP (the one that crosses it included), zeroes the
// rest and renormalises.
func (s *sampler) keepNucleus() {
	p := s.probs
	s.sortByProb()
	cum, kept := 0.0, 0
	for _, i := range s.order {
		if cum >= s.topP {
			break
		}
		cum += p[i]
		kept++
	}
	for _, i := range s.order[kept:] {
		p[i] = 0
	}
	for _, i := range s.order[:kept] {
		p[i] /= cum
	}
}

// sortByProb orders token ids by s.probs, highest first, ties by id.
func (s *sampler) sortByProb() {
	for i := range s.order {
		s.order[i] = i
	}
	p := s.probs
	sort.SliceStable(s.order, func(a, b int) bool { return p[s.order[a]] > p[s.order[b]] })
}

// topCandidates lists up to ten tokens with non-zero probability, most
// probable first. A one-hot (greedy) distribution has a single candidate.
func (s *sampler) topCandidates() []Candidate {
	p := s.probs
	top := make([]Candidate, 0, traceTopK)
	for len(top) < traceTopK {
		best := -1
		for i, pi := range p {
			if pi > 0 && (best < 0 || pi > p[best]) && !taken(top, i) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		top = append(top, Candidate{TokenID: best, Prob: p[best]})
	}
	return top
}

func taken(top []Candidate, id int) bool {
	for _, c := range top {
		if c.TokenID == id {
			return true
		}
	}
	return false
}

// argmax returns the first index of the largest logit.
func argmax(logits []float32) int {
	best := 0
	for i, l := range logits {
		if l > logits[best] {
			best = i
		}
	}
	return best
}
