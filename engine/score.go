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
	offset := max(0, len(req.Tokens)-m.cfg.Context)
	window := req.Tokens[offset:]
	scores := &Scores{Offset: offset, TokenIDs: make([]int, len(window)), Positions: make([]PositionScore, 1, len(window))}
	forced := make([]int32, len(window))
	for i, b := range window {
		scores.TokenIDs[i] = int(b)
		forced[i] = int32(b)
	}
	if len(window) == 1 {
		return scores, nil // nothing precedes the only token
	}
	seq := m.newSequence(ctx, forced[:1], false, len(window)-1, Sampling{}, 1) // the window never outgrows T
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
