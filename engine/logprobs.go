package engine

// Log-probabilities of the model's own distribution: softmax(logits) at
// temperature 1 with no filtering, whatever the request samples with. This is
// what OpenAI's logprobs report and what scoring a text means; it is computed
// in float64 from the step's logits, apart from the sampling distribution.

import "math"

// distribution is softmax(logits) in log space: logp(i) = logits[i] − lse.
type distribution struct {
	logits []float32
	lse    float64
}

func newDistribution(logits []float32) distribution {
	maxv := math.Inf(-1)
	for _, l := range logits {
		maxv = math.Max(maxv, float64(l))
	}
	sum := 0.0
	for _, l := range logits {
		sum += math.Exp(float64(l) - maxv)
	}
	return distribution{logits: logits, lse: maxv + math.Log(sum)}
}

func (d distribution) logprob(token int) float64 { return float64(d.logits[token]) - d.lse }

// entropy in nats, with the same floor on p as the sampler's entropy.
func (d distribution) entropy() float64 {
	h := 0.0
	for i := range d.logits {
		p := math.Exp(d.logprob(i))
		h -= p * math.Log(math.Max(p, 1e-12))
	}
	return h
}

// rank of token: 1 plus how many tokens are strictly more likely.
func (d distribution) rank(token int) int {
	r := 1
	for _, l := range d.logits {
		if l > d.logits[token] {
			r++
		}
	}
	return r
}

// top lists the n most likely tokens, most likely first, ties by id. n is
// at most MaxTopLogprobs, so a selection pass per entry is cheap.
func (d distribution) top(n int) []TokenLogprob {
	n = min(n, len(d.logits))
	out := make([]TokenLogprob, 0, n)
	for len(out) < n {
		best := -1
		for i, l := range d.logits {
			if (best < 0 || l > d.logits[best]) && !listed(out, i) {
				best = i
			}
		}
		out = append(out, TokenLogprob{TokenID: best, Logprob: d.logprob(best)})
	}
	return out
}

func listed(top []TokenLogprob, id int) bool {
	for _, t := range top {
		if t.TokenID == id {
			return true
		}
	}
	return false
}

// positionScore judges token against the distribution the model gave it.
func positionScore(logits []float32, token, topN int) PositionScore {
	d := newDistribution(logits)
	return PositionScore{Logprob: d.logprob(token), Entropy: d.entropy(), Rank: d.rank(token), Top: d.top(topN)}
}
