package main

// nielsgpt chat --trace: one line per generated token with the entropy it was
// drawn with and the earlier tokens the traced layer attended to most.

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"nielsgpt/engine"
)

// traceWriter prints one line per generated token: the token, the entropy of
// the distribution it was drawn from, and the three window positions the
// traced layer attended to most (mean over heads) for the query that
// produced it.
type traceWriter struct {
	out    io.Writer
	model  chatModel // shows the tokens
	tokens []int32   // prompt + generated so far: the window is its tail
}

func newTraceWriter(out io.Writer, model chatModel, prompt []int32) *traceWriter {
	return &traceWriter{out: out, model: model, tokens: append([]int32(nil), prompt...)}
}

// attended is one window position and its attention weight.
type attended struct {
	distance int // 1 is the newest position, the token just before the new one
	token    int32
	weight   float64
}

func (w *traceWriter) step(s *engine.Step) error {
	top, err := topAttended(s.Attn, w.tokens, 3)
	w.tokens = append(w.tokens, int32(s.TokenID))
	if err != nil {
		return fmt.Errorf("step %d: %w", s.Index, err)
	}
	var sb strings.Builder
	for i, a := range top {
		if i > 0 {
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "%s@-%d(%.2f)", w.quote(int(a.token)), a.distance, a.weight)
	}
	_, err = fmt.Fprintf(w.out, "  %4d  %-8s  H=%.2f  ← %s\n", s.Index, w.quote(s.TokenID), s.Entropy, sb.String())
	return err
}

// topAttended averages the per-head attention rows over heads and returns the
// n heaviest window positions. The rows cover the last len(row) tokens of
// tokens (the window the model saw for this step).
func topAttended(attn [][]float32, tokens []int32, n int) ([]attended, error) {
	if len(attn) == 0 {
		return nil, errors.New("no attention rows (was a trace layer requested?)")
	}
	t := len(attn[0])
	if t == 0 || t > len(tokens) {
		return nil, fmt.Errorf("attention row of %d positions for a sequence of %d tokens", t, len(tokens))
	}
	mean := make([]float64, t)
	for h, row := range attn {
		if len(row) != t {
			return nil, fmt.Errorf("attention rows differ in length (head %d: %d, head 0: %d)", h, len(row), t)
		}
		for j, p := range row {
			mean[j] += float64(p)
		}
	}
	window := tokens[len(tokens)-t:]
	all := make([]attended, t)
	for j := range mean {
		all[j] = attended{distance: t - j, token: window[j], weight: mean[j] / float64(len(attn))}
	}
	// Ties go to the nearer position, so the listing is deterministic.
	sort.SliceStable(all, func(a, b int) bool {
		if all[a].weight != all[b].weight {
			return all[a].weight > all[b].weight
		}
		return all[a].distance < all[b].distance
	})
	top := all[:min(n, t)]
	// Positions that got (next to) nothing say nothing; keep the heaviest.
	for len(top) > 1 && top[len(top)-1].weight < minShownWeight {
		top = top[:len(top)-1]
	}
	return top, nil
}

// minShownWeight is the smallest weight --trace lists: anything less prints
// as 0.00.
const minShownWeight = 0.005

// quote shows a token as the API's token_display does (docs/API.md), in
// quotes: a byte as 'x' or '\xNN', a piece with its spaces.
func (w *traceWriter) quote(id int) string {
	return "'" + sanitize(w.model.TokenDisplay(id)) + "'"
}
