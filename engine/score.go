package engine

// Scoring a text or a conversation as it stands: how likely the model found
// each token, given the ones before it in the window. The window (the last T tokens) is read from
// position 0 in one pass that returns every position's logits, sharing the
// scheduler's batched steps with every running stream.

import (
	"context"
	"errors"
	"fmt"
)

// Score reads the window of req's text or messages and scores every
// position after the first.
func (m *Model) Score(ctx context.Context, req ScoreRequest) (*Scores, error) {
	if len(req.Text) == 0 && len(req.Messages) == 0 {
		return nil, errors.New("nothing to score")
	}
	if req.TopN < 0 || req.TopN > MaxTopLogprobs {
		return nil, fmt.Errorf("top_n %d out of range [0, %d]", req.TopN, MaxTopLogprobs)
	}
	mask, err := m.headMask(req.Ablate)
	if err != nil {
		return nil, err
	}
	var ids []int32
	switch {
	case len(req.Messages) > 0 && len(req.Text) > 0:
		return nil, errors.New("score text or messages, not both")
	case len(req.Messages) > 0:
		if ids, err = m.FormatMessages(req.Messages); err != nil {
			return nil, err
		}
	default:
		ids = m.Encode(req.Text)
	}
	if len(ids) == 0 {
		return nil, ErrEmptyPrompt
	}
	offset := max(0, len(ids)-m.cfg.Context)
	window := ids[offset:]
	if len(window) == 1 {
		// nothing precedes the only token
		return &Scores{Offset: offset, TokenIDs: []int{int(window[0])}, Positions: make([]PositionScore, 1)}, nil
	}
	seq := m.newSequence(ctx, window, false, 0, Sampling{}, 1)
	seq.scoring, seq.scoreTopN, seq.headMask = true, req.TopN, mask
	seq.scores = &Scores{Offset: offset}
	ev, err := m.relay(ctx, seq, nil)
	if err != nil {
		return nil, err
	}
	return ev.scores, nil
}

// score judges each of the window's tokens after the first against the
// logits of the position before it. logits: one row of vocab per token.
func (seq *sequence) score(logits []float32, vocab int) *Scores {
	sc := seq.scores
	n := len(seq.tokens)
	sc.TokenIDs = make([]int, n)
	sc.Positions = make([]PositionScore, n)
	for i, tok := range seq.tokens {
		sc.TokenIDs[i] = int(tok)
		if i > 0 {
			sc.Positions[i] = positionScore(logits[(i-1)*vocab:i*vocab], int(tok), seq.scoreTopN)
		}
	}
	return sc
}
