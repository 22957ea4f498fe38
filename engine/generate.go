package engine

// The caller's side of generation: submit a sequence to the scheduler, then
// relay its steps to the caller's callback until the end.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"

	"nielsgpt/gguf"
)

var errClosed = errors.New("model closed")

// Generate produces up to req.MaxNewTokens tokens after req.Prompt, calling
// onStep (on the caller's goroutine) for each one as soon as it exists. It
// stops within one step when ctx is done or onStep returns an error.
func (m *Model) Generate(ctx context.Context, req GenerateRequest, onStep func(*Step) error) (*Result, error) {
	prompt, chat, err := m.promptIDs(req.Messages, req.Prompt, req.Raw)
	if err != nil {
		return nil, err
	}
	if err := m.check(prompt, req.MaxNewTokens, req.Sampling, req.WindowHop); err != nil {
		return nil, err
	}
	if req.TraceLayer < -1 || req.TraceLayer >= m.cfg.Layers {
		return nil, fmt.Errorf("trace layer %d out of range [0, %d]", req.TraceLayer, m.cfg.Layers-1)
	}
	if req.TopLogprobs < 0 || req.TopLogprobs > MaxTopLogprobs {
		return nil, fmt.Errorf("top logprobs %d out of range [0, %d]", req.TopLogprobs, MaxTopLogprobs)
	}
	if len(req.TraceLayers) > 0 || req.LogitLens || len(req.Ablate) > 0 {
		return nil, errors.New("trace_layers, logit_lens and ablate are not supported by this engine yet")
	}
	if req.MaxNewTokens == 0 {
		res := &Result{Generated: []byte{}, Stopped: "max_new_tokens", PromptTokens: len(prompt)}
		if chat {
			res.Reply = m.reply(prompt)
		}
		return res, nil
	}
	seq := m.newSequence(ctx, prompt, chat, req.MaxNewTokens, req.Sampling, req.WindowHop)
	seq.trace = req.TraceLayer
	seq.stops = append(seq.stops, req.Stop...)
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
	prompt, chat, err := m.promptIDs(req.Messages, req.Prompt, false)
	if err != nil {
		return nil, err
	}
	if err := m.check(prompt, req.MaxNewTokens, req.Sampling, req.WindowHop); err != nil {
		return nil, err
	}
	if req.Layer < 0 || req.Layer >= m.cfg.Layers || req.Head < 0 || req.Head >= m.cfg.Heads {
		return nil, fmt.Errorf("layer %d head %d out of range", req.Layer, req.Head)
	}
	seq := m.newSequence(ctx, prompt, chat, req.MaxNewTokens, req.Sampling, req.WindowHop)
	seq.full = &req
	ev, err := m.relay(ctx, seq, nil)
	if err != nil {
		return nil, err
	}
	return ev.full, nil
}

// promptIDs is a request's prompt as token ids, and whether the chat's rules
// apply to what follows it (GenerateRequest.Messages and Prompt).
func (m *Model) promptIDs(messages []Message, prompt []byte, raw bool) (ids []int32, chat bool, err error) {
	switch {
	case len(messages) > 0 && (len(prompt) > 0 || raw):
		return nil, false, errors.New("a request has messages or a prompt, not both")
	case len(messages) > 0:
		ids, err = m.FormatChat(messages)
		return ids, true, err
	case !raw && m.cfg.Generation() != 1:
		return nil, false, errors.New("a generation-2 chat is given as messages, not as a transcript")
	}
	return m.Encode(prompt), !raw, nil
}

// reply is the assistant's answer in a chat transcript of ids.
func (m *Model) reply(ids []int32) string {
	if m.cfg.Generation() == 1 {
		return ExtractReply(int32sToBytes(ids))
	}
	return m.gen2Reply(ids)
}

func (m *Model) check(prompt []int32, maxNew int, s Sampling, hop int) error {
	switch {
	case hop < 0 || hop >= m.cfg.Context:
		return fmt.Errorf("window hop %d out of range [1, %d]", hop, m.cfg.Context-1)
	case len(prompt) == 0:
		return errors.New("empty prompt")
	case maxNew < 0:
		return errors.New("max_new_tokens must not be negative")
	case math.IsNaN(s.Temperature) || math.IsInf(s.Temperature, 0) || s.Temperature < 0:
		return errors.New("temperature must be finite and >= 0")
	case math.IsNaN(s.RepetitionPenalty) || math.IsInf(s.RepetitionPenalty, 0) || s.RepetitionPenalty < 0:
		return errors.New("repetition_penalty must be finite and > 0 (0 means off)")
	case s.TopK < 0:
		return errors.New("top_k must not be negative")
	case math.IsNaN(s.TopP) || s.TopP < 0 || s.TopP > 1:
		return errors.New("top_p must be in [0, 1]")
	}
	return nil
}

// newSequence makes the sequence that continues prompt. A chat follows its
// generation's rules: generation 1 stops at a chat stop tag, generation 2 at
// end-of-turn and never draws a role piece.
func (m *Model) newSequence(ctx context.Context, prompt []int32, chat bool, maxNew int, s Sampling, hop int) *sequence {
	tokens := make([]int32, len(prompt), len(prompt)+maxNew)
	copy(tokens, prompt)
	var banned []int
	var stops [][]byte
	eot := int32(-1)
	switch {
	case chat && m.cfg.Generation() == 1:
		stops = StopTags
	case chat:
		banned, eot = gen2RoleIDs, gguf.ChatEndOfTurnID
	}
	smp := newSampler(s, m.cfg.Vocab, banned...)
	for _, id := range prompt {
		smp.observe(int(id))
	}
	return &sequence{
		ctx:      ctx,
		model:    m,
		text:     make([]byte, 0, maxNew),
		tokens:   tokens,
		nPrompt:  len(prompt),
		maxNew:   maxNew,
		sampler:  smp,
		trace:    -1,
		raw:      !chat,
		stops:    stops,
		eot:      eot,
		logprobs: -1,
		cacheAt:  -1, // nothing cached yet
		hop:      max(hop, 1),
		winStart: -1, // the first window is cut when the sequence is first planned
		logits:   make([]float32, m.cfg.Vocab),
		attnRow:  make([]float32, m.cfg.Heads*m.cfg.Context),
		// Room for every step the scheduler may run ahead, and the final event.
		events: make(chan event, stepsAhead+1),
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
			if len(seq.events) == stepsAhead-1 {
				// The channel was full, so the scheduler may be waiting for
				// this reader; otherwise it is not, and a poke would only
				// cost it a spurious wake-up.
				m.sched.poke()
			}
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

// stepsAhead is how many computed steps may wait for a sequence's reader.
// Two, not one: with one, the scheduler finishing step n+1 found the reader
// not yet woken for it, so it blocked and had to be woken again when the
// reader took the step — two goroutine wake-ups (and, for the scheduler's
// locked thread, two OS thread hand-offs) per token. With two, a reader that
// keeps up never makes the scheduler wait, and a slow one still holds at
// most two steps' worth of memory.
const stepsAhead = 2

// readerReady reports whether the scheduler may compute the sequence's next
// step: fewer than stepsAhead steps are waiting for its reader.
func (seq *sequence) readerReady() bool { return len(seq.events) < stepsAhead }

// stepRing holds the Step values a sequence hands its reader, reused in
// turn so that a token costs no allocation. A reader owns a Step until its
// onStep returns and the scheduler is at most stepsAhead steps ahead, so the
// slot written next is always one the reader has finished with.
type stepRing struct {
	steps [stepsAhead + 1]Step
	cands [stepsAhead + 1][traceTopK]Candidate
	attn  [stepsAhead + 1][]float32 // H × T each, allocated on first use
	next  int
}

// takeStep samples the token of a step that ended at the sequence's newest
// position (it carries its logits and trace row), appends it, notes a stop
// tag, and returns the Step for the reader.
func (seq *sequence) takeStep(it *stepItem, heads int) *Step {
	token, entropy, top := seq.sampler.sample(it.logits)
	r := &seq.ring
	slot := r.next
	r.next = (r.next + 1) % len(r.steps)
	step := &r.steps[slot]
	*step = Step{
		Index:      len(seq.tokens) - seq.nPrompt,
		TokenID:    token,
		Entropy:    entropy,
		Candidates: r.cands[slot][:copy(r.cands[slot][:], top)],
		Attn:       step.Attn[:0],
	}
	if it.traceLayer >= 0 {
		if r.attn[slot] == nil {
			r.attn[slot] = make([]float32, len(seq.attnRow))
			step.Attn = make([][]float32, 0, heads)
		}
		t := len(it.attnRow) / heads
		rows := r.attn[slot][:copy(r.attn[slot], it.attnRow)]
		for h := range heads {
			step.Attn = append(step.Attn, rows[h*t:(h+1)*t:(h+1)*t])
		}
	} else {
		step.Attn = nil
	}
	if seq.logprobs >= 0 {
		d := newDistribution(it.logits)
		step.Logprob, step.TopLogprobs = d.logprob(token), d.top(seq.logprobs)
	}
	seq.tokens = append(seq.tokens, int32(token))
	seq.sampler.observe(token)
	before := len(seq.text)
	if int32(token) == seq.eot {
		seq.stopped = true // the reply's end, not a part of its text
	} else {
		seq.stopped = seq.appendText(token)
	}
	// Later appends never change these bytes, so the slice stays valid for
	// the reader even when the text moves.
	step.Text = seq.text[before:len(seq.text):len(seq.text)]
	return step
}

// appendText adds the token's bytes to the generated text and reports
// whether the text now holds one of seq.stops. A stop not there before can
// only end within the bytes just added.
func (seq *sequence) appendText(token int) bool {
	before := len(seq.text)
	seq.text = append(seq.text, seq.model.TokenBytes(token)...)
	for _, stop := range seq.stops {
		from := max(0, before-len(stop)+1)
		if bytes.Contains(seq.text[from:], stop) {
			return true
		}
	}
	return false
}
