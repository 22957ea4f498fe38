package engine

// Turning one step's logits into a token (docs/API.md, Generation): temperature, top-k and a
// seeded generator, plus the entropy and top-10 that the trace reports. All
// in float64 so the reported distribution is the one actually sampled from.
//
// The sampler runs once per token on the scheduler's goroutine, between two
// engine steps, so it is on the critical path of every stream. It does no
// sorting and no allocation: top-k is a selection of the k-th largest value
// (ties go to the lower token id, as a stable sort by probability would give),
// and one pass over the normalised distribution yields the entropy and the
// top-10. The arithmetic that decides the drawn token (scaling, exp, the sum
// in token order, the cumulative walk) is kept operation for operation, so a
// seed draws the same tokens as it always has.

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
)

const traceTopK = 10

type sampler struct {
	temperature float64
	topK        int
	topP        float64
	order       []int // token ids, reordered by probability for top_p
	rng         *rand.Rand
	probs       []float64 // the last step's distribution; reused across steps
	scratch     []float64 // reordered while selecting the k-th largest logit
	top         [traceTopK]Candidate
}

func newSampler(s Sampling, vocab int) *sampler {
	return &sampler{
		temperature: s.Temperature,
		topK:        s.TopK,
		topP:        s.TopP,
		// PCG's second word is a fixed stream id: the seed alone decides the draws.
		rng:     rand.New(rand.NewPCG(uint64(s.Seed), 0x6e69656c73677074)),
		probs:   make([]float64, vocab),
		scratch: make([]float64, vocab),
		order:   make([]int, 0, vocab),
	}
}

// sample draws the next token and describes the distribution it came from.
// top aliases the sampler's own array: it is valid until the next call.
func (s *sampler) sample(logits []float32) (token int, entropy float64, top []Candidate) {
	if s.temperature == 0 {
		token = argmax(logits)
		clear(s.probs)
		s.probs[token] = 1
		s.top[0] = Candidate{TokenID: token, Prob: 1}
		return token, 0, s.top[:1] // one-hot: −1·ln 1 = 0
	}
	p := s.probs
	maxv := math.Inf(-1)
	for i, l := range logits {
		p[i] = float64(l) / s.temperature
		maxv = max(maxv, p[i]) // the builtin: math.Max's NaN and ±0 rules, inlined
	}
	if s.topK > 0 && s.topK < len(p) {
		s.keepTopK() // keeps the largest value, so maxv stands
	}
	entropy, n := s.normalise(maxv)
	if s.topP > 0 && s.topP < 1 {
		entropy, n = s.keepNucleus()
	}
	return s.draw(), entropy, s.top[:n]
}

// keepTopK sets every scaled logit outside the k largest to −∞. Of equal
// values straddling the cut, the lower token ids are kept: exactly the first
// k of a stable sort by value, highest first.
func (s *sampler) keepTopK() {
	p := s.probs
	copy(s.scratch, p)
	kth := kthLargest(s.scratch, s.topK)
	above := 0
	for _, v := range p {
		if v > kth {
			above++
		}
	}
	ties := s.topK - above // how many of the values equal to kth stay
	for i, v := range p {
		switch {
		case v > kth:
		case v == kth && ties > 0:
			ties--
		default:
			p[i] = math.Inf(-1)
		}
	}
}

// keepNucleus keeps, of the normalised distribution, the smallest set of
// most likely tokens whose probability reaches topP (the token that crosses
// it included; ties ordered by id), zeroes the rest and renormalises, then
// describes the new distribution as normalise does. It sorts, but only the
// tokens top-k left, and only when a request asks for top_p.
func (s *sampler) keepNucleus() (entropy float64, n int) {
	p := s.probs
	s.order = s.order[:0]
	for i, pi := range p {
		if pi > 0 {
			s.order = append(s.order, i)
		}
	}
	slices.SortFunc(s.order, func(a, b int) int {
		if c := cmp.Compare(p[b], p[a]); c != 0 {
			return c
		}
		return a - b
	})
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
	return s.describe(cum)
}

// normalise turns s.probs from scaled logits (the largest is maxv) into
// softmax probabilities and, in the same pass, sums the entropy and keeps the
// ten most probable tokens. Filtered tokens (−∞) get exactly 0 and add
// nothing to either. It returns the entropy and how many candidates s.top
// holds.
func (s *sampler) normalise(maxv float64) (entropy float64, n int) {
	p := s.probs
	sum := 0.0
	for i, v := range p {
		if v == math.Inf(-1) {
			p[i] = 0 // what exp(−∞) gives, without calling exp
			continue
		}
		p[i] = math.Exp(v - maxv)
		sum += p[i]
	}
	return s.describe(sum)
}

// describe divides s.probs by sum and, in the same pass, sums the entropy
// and keeps the ten most probable tokens in s.top.
func (s *sampler) describe(sum float64) (entropy float64, n int) {
	p := s.probs
	for i := range p {
		pi := p[i] / sum
		p[i] = pi
		if pi == 0 {
			continue // 0·ln(1e-12) would subtract a zero: skipping it is exact
		}
		entropy -= pi * math.Log(max(pi, 1e-12))
		if pi > 0 && (n < traceTopK || pi > s.top[n-1].Prob) {
			n = s.insertCandidate(n, i, pi)
		}
	}
	return entropy, n
}

// insertCandidate puts (id, prob) into the sorted top list of length n and
// returns its new length. Ids arrive in increasing order and only a strictly
// higher probability moves ahead, so ties stay ordered by id.
func (s *sampler) insertCandidate(n, id int, prob float64) int {
	j := n
	if n < traceTopK {
		n++
	} else {
		j = traceTopK - 1 // the last entry falls off
	}
	for j > 0 && prob > s.top[j-1].Prob {
		s.top[j] = s.top[j-1]
		j--
	}
	s.top[j] = Candidate{TokenID: id, Prob: prob}
	return n
}

// draw picks a token from s.probs by walking the cumulative sum in token
// order.
func (s *sampler) draw() int {
	u := s.rng.Float64()
	cum, last := 0.0, 0
	for i, pi := range s.probs {
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

// kthLargest returns the k-th largest of xs (k counted from 1), reordering
// xs: a quickselect with a three-way partition, so runs of equal values (a
// flat distribution) cost one pass, and a NaN, equal to nothing, cannot stop
// it from ending.
func kthLargest(xs []float64, k int) float64 {
	lo, hi, want := 0, len(xs)-1, k-1
	for lo < hi {
		pivot := median3(xs[lo], xs[lo+(hi-lo)/2], xs[hi])
		// Afterwards: xs[lo:gt] > pivot, xs[gt:lt+1] == pivot, xs[lt+1:hi+1] < pivot.
		gt, i, lt := lo, lo, hi
		for i <= lt {
			switch v := xs[i]; {
			case v > pivot:
				xs[gt], xs[i] = v, xs[gt]
				gt++
				i++
			case v < pivot:
				xs[lt], xs[i] = v, xs[lt]
				lt--
			default:
				i++
			}
		}
		switch {
		case want < gt:
			hi = gt - 1
		case want > lt:
			lo = lt + 1
		default:
			return pivot
		}
	}
	return xs[lo]
}

func median3(a, b, c float64) float64 {
	if a > b {
		a, b = b, a
	}
	if b > c {
		b = c
	}
	return max(a, b)
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
