package engine

// The logit lens: what each layer's residual stream would predict if the
// model stopped there (the final norm and the LM head applied early). The C
// side computes the logits; here each layer's softmax is described by its
// entropy and its LensTop most likely tokens, in one pass and without
// sorting, as the sampler describes its distribution.

import "math"

// logFloor is ln 1e-12, the floor on p in the entropy (as the sampler's).
var logFloor = math.Log(1e-12)

// newLensLayers makes a step's lens entries, each with room for LensTop
// candidates, so that later steps refill them without allocating.
func newLensLayers(layers int) []LensLayer {
	out := make([]LensLayer, layers)
	cands := make([]Candidate, layers*LensTop)
	for l := range out {
		out[l] = LensLayer{Layer: l, Candidates: cands[l*LensTop : l*LensTop : (l+1)*LensTop]}
	}
	return out
}

// describeLens fills out[l] from layer l's logits, lens[l·vocab : (l+1)·vocab]:
// softmax at temperature 1, no filtering; entropy in nats as the sampler
// reports it.
func describeLens(out []LensLayer, lens []float32, vocab int) {
	for l := range out {
		out[l].Entropy, out[l].Candidates = describeLogits(lens[l*vocab:(l+1)*vocab], out[l].Candidates[:0])
	}
}

// describeLogits returns the entropy of softmax(logits) and its most likely
// tokens, appended to top (up to cap(top) of them, most likely first, ties
// by lower id). Two passes over the logits: the normaliser, then each
// probability once. ln max(p, 1e-12) is taken as max(ln p, ln 1e-12) from
// the log-probability itself, which saves a logarithm per token.
func describeLogits(logits []float32, top []Candidate) (entropy float64, _ []Candidate) {
	d := newDistribution(logits)
	for i := range logits {
		logp := d.logprob(i)
		p := math.Exp(logp)
		if p == 0 {
			continue
		}
		entropy -= p * max(logp, logFloor)
		if len(top) < cap(top) || p > top[len(top)-1].Prob {
			top = insertTop(top, Candidate{TokenID: i, Prob: p})
		}
	}
	return entropy, top
}

// insertTop puts c into top, which is sorted by probability (highest first)
// and full at cap(top): the last entry falls off. Ids arrive in increasing
// order and only a strictly higher probability moves ahead, so ties stay
// ordered by id.
func insertTop(top []Candidate, c Candidate) []Candidate {
	j := len(top)
	if len(top) < cap(top) {
		top = top[:len(top)+1]
	} else {
		j--
	}
	for j > 0 && c.Prob > top[j-1].Prob {
		top[j] = top[j-1]
		j--
	}
	top[j] = c
	return top
}
