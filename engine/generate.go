package engine

// The caller's side of generation: submit a sequence to the scheduler, then
// relay its steps to the caller's callback until the end.

import (
	"context"
	"errors"
	"fmt"
	"math"
)

var errClosed = errors.New("model closed")

// Generate produces up to req.MaxNewTokens tokens after req.Prompt, calling
// onStep (on the caller's goroutine) for each one as soon as it exists. It
// stops within one step when ctx is done or onStep returns an error.
func (m *Model) Generate(ctx context.Context, req GenerateRequest, onStep func(*Step) error) (*Result, error) {
	if err := m.check(req.Prompt, req.MaxNewTokens, req.Sampling); err != nil {
		return nil, err
	}
	if req.TraceLayer < -1 || req.TraceLayer >= m.cfg.Layers {
		return nil, fmt.Errorf("trace layer %d out of range [0, %d]", req.TraceLayer, m.cfg.Layers-1)
	}
	if req.TopLogprobs < 0 || req.TopLogprobs > MaxTopLogprobs {
		return nil, fmt.Errorf("top logprobs %d out of range [0, %d]", req.TopLogprobs, MaxTopLogprobs)
	}
	if req.MaxNewTokens == 0 {
		res := &Result{Generated: []byte{}, Stopped: "max_new_tokens"}
		if !req.Raw {
			res.Reply = ExtractReply(req.Prompt)
		}
		return res, nil
	}
	seq := m.newSequence(ctx, req.Prompt, req.MaxNewTokens, req.Sampling)
	seq.trace = req.TraceLayer
	seq.raw = req.Raw
	seq.stops = append(seq.stops[:0:0], req.Stop...)
	if !req.Raw {
		seq.stops = append(seq.stops, StopTags...)
	}
	if req.Logprobs {
		seq.logprobs = req.TopLogprobs
	}
	ev, err := m.relay(ctx, seq, onStep)
	if err != nil {
		return nil, err
	}
	return ev.result, nil
}

// FullAttention generates req.MaxNewTokens tokens (without tracing), then
// returns one layer and head's attention matrix over the final window.
func (m *Model) FullAttention(ctx context.Context, req FullAttnRequest) (*FullAttn, error) {
	if err := m.check(req.Prompt, req.MaxNewTokens, req.Sampling); err != nil {
		return nil, err
	}
	if req.Layer < 0 || req.Layer >= m.cfg.Layers || req.Head < 0 || req.Head >= m.cfg.Heads {
		return nil, fmt.Errorf("layer %d head %d out of range", req.Layer, req.Head)
	}
	seq := m.newSequence(ctx, req.Prompt, req.MaxNewTokens, req.Sampling)
	seq.full = &req
	ev, err := m.relay(ctx, seq, nil)
	if err != nil {
		return nil, err
	}
	return ev.full, nil
}

func (m *Model) check(prompt []byte, maxNew int, s Sampling) error {
	switch {
	case len(prompt) == 0:
		return errors.New("empty prompt")
	case maxNew < 0:
		return errors.New("max_new_tokens must not be negative")
	case math.IsNaN(s.Temperature) || math.IsInf(s.Temperature, 0) || s.Temperature < 0:
		return errors.New("temperature must be finite and >= 0")
	case s.TopK < 0:
		return errors.New("top_k must not be negative")
	case math.IsNaN(s.TopP) || s.TopP < 0 || s.TopP > 1:
		return errors.New("top_p must be in [0, 1]")
	}
	return nil
}

func (m *Model) newSequence(ctx context.Context, prompt []byte, maxNew int, s Sampling) *sequence {
	tokens := make([]int32, len(prompt), len(prompt)+maxNew)
	for i, b := range prompt {
		tokens[i] = int32(b)
	}
	return &sequence{
		ctx:      ctx,
		tokens:   tokens,
		nPrompt:  len(prompt),
		maxNew:   maxNew,
		sampler:  newSampler(s, m.cfg.Vocab),
		trace:    -1,
		stops:    StopTags,
		logprobs: -1,
		cacheAt:  -1, // nothing cached yet
		logits:   make([]float32, m.cfg.Vocab),
		attnRow:  make([]float32, m.cfg.Heads*m.cfg.Context),
		events:   make(chan event, 2),
	}
}

// relay submits seq and passes its steps to onStep until the final event.
func (m *Model) relay(ctx context.Context, seq *sequence, onStep func(*Step) error) (event, error) {
	// Whatever ends this call, tell the scheduler so it drops the sequence at
	// its next step instead of waiting on a reader that is gone.
	ctx, cancel := context.WithCancelCause(ctx)
	seq.ctx = ctx
	defer m.sched.poke()
	defer cancel(nil)
	if err := m.sched.join(ctx, seq); err != nil {
		return event{}, err
	}
	for {
		select {
		case ev := <-seq.events:
			m.sched.poke()
			switch {
			case ev.err != nil:
				return event{}, ev.err
			case ev.step != nil:
				if onStep != nil {
					if err := onStep(ev.step); err != nil {
						cancel(err)
						return event{}, err
					}
				}
			default:
				return ev, nil
			}
		case <-ctx.Done():
			return event{}, context.Cause(ctx)
		}
	}
}
