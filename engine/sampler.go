package engine

// Turning one step's logits into a token (docs/API.md, Generation), in this order: banned
// ids, repetition penalty, greedy when the temperature is 0, temperature, top-k, top-p,
// softmax and a draw from a seeded generator; plus the entropy and top-10 that the trace
// reports. All in float64 so the reported distribution is the one actually sampled from.
//
// The sampler runs once per token on the scheduler's goroutine, between two
// engine steps, so it is on the critical path of every stream. It does no
// sorting and no allocation: top-k is a selection of the k-th largest value
// (ties go to the lower token id, as a stable sort by probability would give),
// top-p a selection of the probability at which the nucleus ends, the penalty
// touches only the ids seen so far, and one pass over the normalised
// distribution yields the entropy and the top-10. The arithmetic that decides
// the drawn token (scaling, exp, the sum in token order, the cumulative walk)
// is kept operation for operation, so a seed draws the same tokens as it
// always has.

import (
	"math"
	"math/rand/v2"
)

const traceTopK = 10

type sampler struct {
	temperature float64
	topK        int
	topP        float64
	penalty     float64 // the repetition penalty; 1 is off
	banned      []int   // ids that get probability 0 (a chat's role pieces)
	seen        []bool  // [vocab] ids of the penalty's history; nil when it is off
	distinct    []int   // the ids seen holds, in the order they came
	rng         *rand.Rand
	probs       []float64 // the last step's distribution; reused across steps
	scratch     []float64 // reordered while selecting the k-th largest logit or the nucleus
	top         [traceTopK]Candidate
}

// newSampler makes a sampler for a vocabulary of vocab ids that never draws
// one of banned (ids in range; the slice is kept, not copied).
func newSampler(s Sampling, vocab int, banned ...int) *sampler {
	sm := &sampler{
		temperature: s.Temperature,
		topK:        s.TopK,
		topP:        s.TopP,
		penalty:     1,
		banned:      banned,
		// PCG's second word is a fixed stream id: the seed alone decides the draws.
		rng:     rand.New(rand.NewPCG(uint64(s.Seed), 0x6e69656c73677074)),
		probs:   make([]float64, vocab),
		scratch: make([]float64, vocab),
	}
	if s.RepetitionPenalty > 0 && s.RepetitionPenalty != 1 {
		sm.penalty = s.RepetitionPenalty
		sm.seen = make([]bool, vocab)
		sm.distinct = make([]int, 0, vocab)
	}
	return sm
}

// observe adds a token of the prompt or of the generation to the
// repetition penalty's history; a no-op when the penalty is off.
func (s *sampler) observe(id int) {
	if s.seen != nil && id >= 0 && id < len(s.seen) && !s.seen[id] {
		s.seen[id] = true
		s.distinct = append(s.distinct, id)
	}
}

// adjusts says whether bans or the penalty change any logit.
func (s *sampler) adjusts() bool { return len(s.banned) > 0 || len(s.distinct) > 0 }

// adjust applies the bans and the repetition penalty to the scaled logits
// in s.probs (logit / scale each) and returns their new maximum. A
// penalised logit is divided by the penalty before the scale, whatever its
// sign, as niels-gpt's own sampler does.
func (s *sampler) adjust(logits []float32, scale float64) (maxv float64) {
	p := s.probs
	for _, id := range s.distinct {
		p[id] = float64(logits[id]) / s.penalty / scale
	}
	for _, id := range s.banned {
		p[id] = math.Inf(-1)
	}
	maxv = math.Inf(-1)
	for _, v := range p {
		maxv = max(maxv, v)
	}
	return maxv
}

// sample draws the next token and describes the distribution it came from.
// top aliases the sampler's own array: it is valid until the next call.
func (s *sampler) sample(logits []float32) (token int, entropy float64, top []Candidate) {
	if s.temperature == 0 {
		if s.adjusts() {
			for i, l := range logits {
				s.probs[i] = float64(l)
			}
			s.adjust(logits, 1)
			token = argmax(s.probs)
		} else {
			token = argmax(logits)
		}
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
	if s.adjusts() {
		maxv = s.adjust(logits, s.temperature)
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
// it included; of equal probabilities the lower ids first, as a stable sort
// would order them), zeroes the rest and renormalises, then describes the
// new distribution as normalise does.
func (s *sampler) keepNucleus() (entropy float64, n int) {
	p := s.probs
	xs := s.scratch[:0]
	for _, pi := range p {
		if pi > 0 {
			xs = append(xs, pi)
		}
	}
	last, ties := nucleusEnd(xs, s.topP)
	sum := 0.0
	for i, pi := range p {
		switch {
		case pi > last:
		case pi == last && ties > 0:
			ties--
		default:
			p[i] = 0
			continue
		}
		sum += pi
	}
	return s.describe(sum)
}

// nucleusEnd finds where top-p's nucleus ends in the probabilities xs
// (all > 0), reordering xs: sorted from the most likely down, the nucleus
// is the shortest prefix whose sum reaches topP, or all of xs when rounding
// leaves the total short. It returns the prefix's last value and how many
// of the values equal to it the prefix holds. A quickselect that carries
// the mass of everything above the part it looks at, three-way like
// kthLargest, so runs of equal values cost one pass.
func nucleusEnd(xs []float64, topP float64) (last float64, ties int) {
	lo, hi, above := 0, len(xs)-1, 0.0
	for lo <= hi {
		pivot := median3(xs[lo], xs[lo+(hi-lo)/2], xs[hi])
		gt, lt, sumGT := partition3(xs, lo, hi, pivot)
		equal := lt + 1 - gt
		switch {
		case above+sumGT >= topP && gt > lo:
			hi = gt - 1 // the nucleus ends among the larger values
		case above+sumGT+float64(equal)*pivot >= topP || lt == hi:
			// It ends among the values equal to the pivot (or nothing
			// smaller is left: all of them, the rounding case).
			for cum := above + sumGT; ties < equal && cum < topP; ties++ {
				cum += pivot
			}
			return pivot, max(ties, 1)
		default:
			above += sumGT + float64(equal)*pivot
			lo = lt + 1
		}
	}
	return 0, 0 // xs empty
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
			n = len(insertTop(s.top[:n], Candidate{TokenID: i, Prob: pi}))
		}
	}
	return entropy, n
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
		gt, lt, _ := partition3(xs, lo, hi, pivot)
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

// partition3 reorders xs[lo:hi+1] around pivot so that xs[lo:gt] > pivot,
// xs[gt:lt+1] == pivot and xs[lt+1:hi+1] < pivot (a NaN, neither larger nor
// smaller, stays in the middle), and returns the sum of the values above the
// pivot, added in the order the walk meets them.
func partition3(xs []float64, lo, hi int, pivot float64) (gt, lt int, sumGT float64) {
	gt, lt = lo, hi
	for i := lo; i <= lt; {
		switch v := xs[i]; {
		case v > pivot:
			sumGT += v
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
	return gt, lt, sumGT
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

// argmax returns the first index of the largest value.
func argmax[F float32 | float64](xs []F) int {
	best := 0
	for i, v := range xs {
		if v > xs[best] {
			best = i
		}
	}
	return best
}
