package engine

import (
	"bytes"
	"context"
	"math"
	"testing"
)

const logprobTol = 1e-4

// Scoring the golden window: every position's log-probability, rank and
// top candidates against PyTorch's logits for the prefix before it.
func TestScoreMatchesPyTorch(t *testing.T) {
	forEachFixture(t, func(t *testing.T, m *Model, g *golden) {
		tokens := g.Prefill.Tokens
		scores, err := m.Score(context.Background(), ScoreRequest{Text: int32sToBytes(tokens), TopN: 5})
		if err != nil {
			t.Fatal(err)
		}
		if scores.Offset != 0 || len(scores.Positions) != len(tokens) || len(scores.TokenIDs) != len(tokens) {
			t.Fatalf("offset %d, %d positions, %d ids for %d tokens", scores.Offset, len(scores.Positions), len(scores.TokenIDs), len(tokens))
		}
		worst := 0.0
		for i := 1; i < len(tokens); i++ {
			want := logSoftmax(g.Prefill.Logits[i-1], nil)
			p := scores.Positions[i]
			worst = math.Max(worst, math.Abs(p.Logprob-want[tokens[i]]))
			if len(p.Top) != 5 || math.Abs(p.Top[0].Logprob-want[p.Top[0].TokenID]) > logprobTol {
				t.Fatalf("position %d: top %v", i, p.Top)
			}
			better := 0
			for _, lp := range want {
				if lp > want[tokens[i]]+logprobTol {
					better++
				}
			}
			if p.Rank < better+1 {
				t.Fatalf("position %d: rank %d, but %d tokens are clearly more likely", i, p.Rank, better)
			}
		}
		t.Logf("max |Δlogprob| %.2e over %d positions", worst, len(tokens)-1)
		if worst > logprobTol {
			t.Fatalf("log-probabilities differ by %.2e", worst)
		}
	})
}

// A greedy generation's per-step log-probabilities are the model's own
// distribution, equal to PyTorch's across the window slides.
func TestGenerateLogprobsMatchPyTorch(t *testing.T) {
	forEachFixture(t, func(t *testing.T, m *Model, g *golden) {
		gr := g.Greedy
		worst, i := 0.0, 0
		_, err := m.Generate(context.Background(), GenerateRequest{
			Prompt: int32sToBytes(gr.Prompt), MaxNewTokens: gr.Steps, Sampling: Sampling{Temperature: 0},
			TraceLayer: -1, Logprobs: true, TopLogprobs: 3,
		}, func(s *Step) error {
			want := logSoftmax(gr.Logits[i], nil)
			worst = math.Max(worst, math.Abs(s.Logprob-want[s.TokenID]))
			if len(s.TopLogprobs) != 3 || s.TopLogprobs[0].TokenID != s.TokenID {
				t.Fatalf("step %d: greedy token %d is not first in %v", i, s.TokenID, s.TopLogprobs)
			}
			i++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if i != gr.Steps || worst > logprobTol {
			t.Fatalf("%d steps, max |Δlogprob| %.2e", i, worst)
		}
	})
}

// A plain-text prompt, even one that reads like a transcript, is no chat:
// no chat stop tags, no reply. Stop strings end either kind, cut before the
// string.
func TestStopStringsAndPlainText(t *testing.T) {
	m, _ := loadFixture(t, fixtureNames[0])
	run := func(req GenerateRequest) *Result {
		res, err := m.Generate(context.Background(), req, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	base := GenerateRequest{Prompt: []byte("user: hi\nassistant: "), MaxNewTokens: 40, Sampling: Sampling{Temperature: 0}, TraceLayer: -1}
	full := run(base)
	if len(full.Generated) < 4 || full.Reply != "" {
		t.Fatalf("plain-text generation %q (reply %q)", full.Generated, full.Reply)
	}
	stop := full.Generated[2:4]
	base.Stop = [][]byte{stop}
	cut := run(base)
	want := full.Generated[:bytes.Index(full.Generated, stop)]
	if string(cut.Generated) != string(want) || cut.Stopped != "stop_tag" {
		t.Fatalf("stop %q: generated %q (%s), want %q", stop, cut.Generated, cut.Stopped, want)
	}
}
