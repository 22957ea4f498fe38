package engine

// The caller's side of generation: submit a sequence to the scheduler, then
// relay its steps to the caller's callback until the end.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"nielsgpt/gguf"
)

var errClosed = errors.New("model closed")

// Generate produces up to req.MaxNewTokens tokens after the request's chat or
// text, calling onStep (on the caller's goroutine) for each one as soon as it
// exists. It stops within one step when ctx is done or onStep returns an error.
func (m *Model) Generate(ctx context.Context, req GenerateRequest, onStep func(*Step) error) (*Result, error) {
	prompt, chat, err := m.promptIDs(req.Messages, req.Prompt)
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
	if err := m.checkLayers("trace layers", req.TraceLayers); err != nil {
		return nil, err
	}
	mask, err := m.headMask(req.Ablate)
	if err != nil {
		return nil, err
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
	seq.traceLayers, seq.layerAt = traceList(req.TraceLayer, req.TraceLayers)
	if len(seq.traceLayers) > 0 {
		seq.attnRows = make([]float32, len(seq.traceLayers)*m.cfg.Heads*m.cfg.Context)
	}
	if req.LogitLens {
		seq.lens = make([]float32, m.cfg.Layers*m.cfg.Vocab)
	}
	seq.headMask = mask
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
// returns every head's attention matrices of req.Layers over the final window.
func (m *Model) FullAttention(ctx context.Context, req FullAttnRequest) (*FullAttn, error) {
	prompt, chat, err := m.promptIDs(req.Messages, req.Prompt)
	if err != nil {
		return nil, err
	}
	if err := m.check(prompt, req.MaxNewTokens, req.Sampling, req.WindowHop); err != nil {
		return nil, err
	}
	if len(req.Layers) == 0 {
		return nil, errors.New("no layers asked for")
	}
	if err := m.checkLayers("layers", req.Layers); err != nil {
		return nil, err
	}
	mask, err := m.headMask(req.Ablate)
	if err != nil {
		return nil, err
	}
	seq := m.newSequence(ctx, prompt, chat, req.MaxNewTokens, req.Sampling, req.WindowHop)
	seq.full = &req
	seq.fullLayers, _ = traceList(-1, req.Layers)
	seq.headMask = mask
	ev, err := m.relay(ctx, seq, nil)
	if err != nil {
		return nil, err
	}
	return ev.full, nil
}

// promptIDs is a request's prompt as token ids, and whether it is a chat,
// whose rules apply to what follows it (GenerateRequest.Messages and Prompt).
func (m *Model) promptIDs(messages []Message, prompt []byte) (ids []int32, chat bool, err error) {
	if len(messages) == 0 {
		return m.Encode(prompt), false, nil
	}
	if len(prompt) > 0 {
		return nil, false, errors.New("a request has messages or a prompt, not both")
	}
	ids, err = m.FormatChat(messages)
	return ids, true, err
}

// reply is the assistant's answer in a chat transcript of ids.
func (m *Model) reply(ids []int32) string {
	if m.cfg.Generation() == 1 {
		return ExtractReply(int32sToBytes(ids))
	}
	return m.gen2Reply(ids)
}

// checkLayers refuses a list of layers with one out of range or twice.
func (m *Model) checkLayers(what string, layers []int) error {
	if len(layers) > m.cfg.Layers {
		return fmt.Errorf("%s: %d of them, the model has %d", what, len(layers), m.cfg.Layers)
	}
	for i, l := range layers {
		if l < 0 || l >= m.cfg.Layers {
			return fmt.Errorf("%s: layer %d out of range [0, %d]", what, l, m.cfg.Layers-1)
		}
		if slices.Contains(layers[:i], l) {
			return fmt.Errorf("%s: layer %d listed twice", what, l)
		}
	}
	return nil
}

// headMask turns a list of ablated heads into the C side's mask (1 keeps a
// head, 0 ablates it, layer-major), or nil when nothing is ablated.
func (m *Model) headMask(ablate []Head) ([]float32, error) {
	if len(ablate) == 0 {
		return nil, nil
	}
	L, H := m.cfg.Layers, m.cfg.Heads
	if len(ablate) > L*H {
		return nil, fmt.Errorf("ablate: %d heads, the model has %d", len(ablate), L*H)
	}
	mask := make([]float32, L*H)
	for i := range mask {
		mask[i] = 1
	}
	for _, a := range ablate {
		if a.Layer < 0 || a.Layer >= L || a.Head < 0 || a.Head >= H {
			return nil, fmt.Errorf("ablate: layer %d head %d out of range (layers 0..%d, heads 0..%d)",
				a.Layer, a.Head, L-1, H-1)
		}
		if mask[a.Layer*H+a.Head] == 0 {
			return nil, fmt.Errorf("ablate: layer %d head %d listed twice", a.Layer, a.Head)
		}
		mask[a.Layer*H+a.Head] = 0
	}
	return mask, nil
}

// traceList is the distinct layers a sequence reads attention rows of: trace
// first (when >= 0), then layers; at[k] is where layers[k] lies in it.
func traceList(trace int, layers []int) (list []int32, at []int) {
	if trace >= 0 {
		list = append(list, int32(trace))
	}
	for _, l := range layers {
		k := slices.Index(list, int32(l))
		if k < 0 {
			k = len(list)
			list = append(list, int32(l))
		}
		at = append(at, k)
	}
	return list, at
}

func (m *Model) check(prompt []int32, maxNew int, s Sampling, hop int) error {
	switch {
	case hop < 0 || hop >= m.cfg.Context:
		return fmt.Errorf("window hop %d out of range [1, %d]", hop, m.cfg.Context-1)
	case len(prompt) == 0:
		return ErrEmptyPrompt
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
		stops = slices.Clip(StopTags) // a request's stops are appended: never into StopTags itself
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
		chat:     chat,
		stops:    stops,
		eot:      eot,
		logprobs: -1,
		cacheAt:  -1, // nothing cached yet
		hop:      max(hop, 1),
		winStart: -1, // the first window is cut when the sequence is first planned
		logits:   make([]float32, m.cfg.Vocab),
		// Room for every step the scheduler may run ahead (readerReady),
		// the one the reader has not yet taken, and the final event.
		events: make(chan event, stepsAhead+2),
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
			switch {
			case ev.err != nil:
				return event{}, ev.err
			case ev.step != nil:
				if ctx.Err() != nil {
					// select picks at random among ready cases: a step
					// already waiting must not outrun the caller's cancel.
					return event{}, context.Cause(ctx)
				}
				if onStep != nil {
					if err := onStep(ev.step); err != nil {
						cancel(err)
						return event{}, err
					}
				}
				seq.stepDone(m.sched)
			default:
				return ev, nil
			}
		case <-ctx.Done():
			return event{}, context.Cause(ctx)
		}
	}
}

// stepDone counts a step its reader has finished, and wakes the scheduler if
// it may be waiting for this reader: if the reader was one step more than
// stepsAhead behind. Otherwise it is not, and a poke would only cost it a
// spurious wake-up. done is counted before sent is read: read the other way
// round, a step the scheduler sent in between went unseen, and when it then
// skipped this reader (one too many behind) and had nothing else to run,
// scheduler and reader waited for each other for good (a bench stream
// stalled until its 30 s cap).
func (seq *sequence) stepDone(s *scheduler) {
	done := seq.done.Add(1)
	if handoffGap != nil {
		handoffGap()
	}
	if seq.sent.Load()-done == stepsAhead {
		s.poke()
	}
}

// handoffGap, when a test sets it, runs between counting a step done and
// reading sent in stepDone, widening the gap a stale read once fell into.
var handoffGap func()

// stepsAhead is how many computed steps may wait for a sequence's reader.
// Two, not one: with one, the scheduler finishing step n+1 found the reader
// not yet woken for it, so it blocked and had to be woken again when the
// reader took the step — two goroutine wake-ups (and, for the scheduler's
// locked thread, two OS thread hand-offs) per token. With two, a reader that
// keeps up never makes the scheduler wait, and a slow one still holds at
// most two steps' worth of memory.
const stepsAhead = 2

// readerReady reports whether the scheduler may compute the sequence's next
// step: at most stepsAhead of its steps are sent and not yet done (onStep
// returned), so of the ring's stepsAhead+1 slots the one the next step takes
// is one the reader has finished with.
func (seq *sequence) readerReady() bool { return seq.sent.Load()-seq.done.Load() <= stepsAhead }

// stepRing holds the Step values a sequence hands its reader, reused in
// turn so that a token costs no allocation. A reader owns a Step until its
// onStep returns and the scheduler is at most stepsAhead steps ahead, so the
// slot written next is always one the reader has finished with.
type stepRing struct {
	steps [stepsAhead + 1]Step
	cands [stepsAhead + 1][traceTopK]Candidate
	// Each slot's attention rows (len(traceLayers) × H × T) and the row
	// headers over them, the layers' and the lens's: allocated on first use.
	attn   [stepsAhead + 1][]float32
	rows   [stepsAhead + 1][][]float32
	layers [stepsAhead + 1][]LayerAttn
	lens   [stepsAhead + 1][]LensLayer
	next   int
}

// takeStep samples the token of a step that ended at the sequence's newest
// position (it carries its logits and trace rows), appends it, notes a stop
// tag, and returns the Step for the reader.
func (seq *sequence) takeStep(it *stepItem, cfg *gguf.ModelConfig) *Step {
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
	}
	if len(it.traceLayers) > 0 {
		rows := r.traceRows(slot, it.attnRows, len(it.traceLayers), cfg.Heads)
		if seq.trace >= 0 {
			step.Attn = rows[:cfg.Heads:cfg.Heads] // traceList put it first
		}
		if len(seq.layerAt) > 0 {
			if r.layers[slot] == nil {
				r.layers[slot] = make([]LayerAttn, len(seq.layerAt))
			}
			for k, at := range seq.layerAt {
				r.layers[slot][k] = LayerAttn{Layer: int(it.traceLayers[at]), Attn: rows[at*cfg.Heads : (at+1)*cfg.Heads : (at+1)*cfg.Heads]}
			}
			step.Layers = r.layers[slot]
		}
	}
	if it.lens != nil {
		if r.lens[slot] == nil {
			r.lens[slot] = newLensLayers(cfg.Layers)
		}
		step.Lens = r.lens[slot]
		describeLens(step.Lens, it.lens, cfg.Vocab)
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

// traceRows copies a step's attention rows (layers × heads rows of equal
// length) into the slot's storage and returns one row header per layer and
// head, over that copy.
func (r *stepRing) traceRows(slot int, attnRows []float32, layers, heads int) [][]float32 {
	if len(r.attn[slot]) < len(attnRows) {
		// the first step of a window is its longest until it moves: room
		// for a whole window at once
		r.attn[slot] = make([]float32, cap(attnRows))
	}
	if r.rows[slot] == nil {
		r.rows[slot] = make([][]float32, layers*heads)
	}
	data := r.attn[slot][:copy(r.attn[slot], attnRows)]
	t := len(attnRows) / (layers * heads)
	for i := range r.rows[slot] {
		r.rows[slot][i] = data[i*t : (i+1)*t : (i+1)*t]
	}
	return r.rows[slot]
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
