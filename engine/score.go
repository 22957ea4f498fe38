package engine

// Scoring a text: how likely the model found each token, given the ones
// before it in the window. The window (the last T tokens) is read from
// position 0 one token at a time through the KV cache, the way a generation
// decodes, except that each next token is the text's own instead of a
// sampled one; so scoring shares the scheduler's batched steps with every
// running stream and sees exactly what one causal pass over the window sees.

import (
	"context"
	"errors"
	"fmt"
)

// Score reads req.Tokens' window and scores every position after the first.
func (m *Model) Score(ctx context.Context, req ScoreRequest) (*Scores, error) {
	if len(req.Tokens) == 0 {
		return nil, errors.New("nothing to score")
	}
	if len(req.Ablate) > 0 {
		return nil, errors.New("ablate is not supported by this engine yet")
	}
	if req.TopN < 0 || req.TopN > MaxTopLogprobs {
		return nil, fmt.Errorf("top_n %d out of range [0, %d]", req.TopN, MaxTopLogprobs)
	}
	ids := m.Encode(req.Tokens)
	if len(ids) == 0 {
		return nil, errors.New("nothing to score: the text encodes to no tokens")
	}
	offset := max(0, len(ids)-m.cfg.Context)
	forced := ids[offset:]
	scores := &Scores{Offset: offset, TokenIDs: make([]int, len(forced)), Positions: make([]PositionScore, 1, len(forced))}
	for i, id := range forced {
		scores.TokenIDs[i] = int(id)
	}
	if len(forced) == 1 {
		return scores, nil // nothing precedes the only token
	}
	seq := m.newSequence(ctx, forced[:1], false, len(forced)-1, Sampling{}, 1) // the window never outgrows T
	seq.forced, seq.scores, seq.scoreTopN = forced, scores, req.TopN
	ev, err := m.relay(ctx, seq, nil)
	if err != nil {
		return nil, err
	}
	return ev.scores, nil
}

// scoreNext takes the distribution over the token after seq's last one:
// it scores the text's own next token and reads it in.
func (s *scheduler) scoreNext(seq *sequence, logits []float32) {
	next := seq.forced[len(seq.tokens)]
	seq.scores.Positions = append(seq.scores.Positions, positionScore(logits, int(next), seq.scoreTopN))
	seq.tokens = append(seq.tokens, next)
	if len(seq.tokens) == len(seq.forced) {
		s.finish(seq, event{scores: seq.scores})
	}
}
