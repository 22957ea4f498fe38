package engine

// The scheduler: one goroutine owns the C model and every running sequence,
// and advances them all together. Each step is one ggml graph holding one
// new token for every decoding sequence plus prompt chunks for sequences
// still prefilling, so a long prompt never stalls running streams for more
// than a chunk. Callers talk to it through channels (see Generate).

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// stepTokenBudget bounds the tokens one step feeds in total: decode tokens
// always fit, prompt chunks share what is left, taking turns. It bounds how
// long running streams wait on other people's prompts (one step's worth).
const stepTokenBudget = 256

// defaultPrefillChunk is the largest prompt chunk one sequence feeds per step.
const defaultPrefillChunk = 128

// event is what the scheduler hands a waiting caller.
type event struct {
	step   *Step
	result *Result
	full   *FullAttn
	scores *Scores
	err    error
}

// sequence is one generation in flight. Only the scheduler goroutine touches
// its fields after submission, except events, which the caller reads.
type sequence struct {
	ctx     context.Context
	model   *Model
	tokens  []int32 // prompt + generated so far
	nPrompt int
	maxNew  int
	sampler *sampler
	trace   int // GenerateRequest.TraceLayer, or -1
	// traceLayers lists the distinct layers whose newest attention rows each
	// step reads: trace (when >= 0) first, then GenerateRequest.TraceLayers.
	// layerAt[k] is where TraceLayers[k] lies in it.
	traceLayers []int32
	layerAt     []int
	attnRows    []float32 // len(traceLayers) × H × T
	lens        []float32 // L × V when the request asked for the logit lens
	headMask    []float32 // L × H when it ablates heads
	full        *FullAttnRequest
	fullLayers  []int32 // full.Layers, read in the last pass only
	cache       *kvCache
	maxCache    int       // the most positions its window can reach
	waitEnds    time.Time // while it waits for room in the KV pool: when it gives up
	cacheAt     int       // index in tokens of the cache's position 0
	cached      int       // cache positions already written
	finished    bool
	stopped     bool   // the generated text holds a stop sequence, or ends at eot
	text        []byte // the generated tokens' bytes (Model.TokenBytes), eot left out
	stops       [][]byte
	eot         int32 // the id that ends a chat's reply (generation 2), or -1
	chat        bool  // the prompt is a chat's transcript: a reply to extract
	// logprobs is how many top log-probabilities each step reports, or -1
	// when the request asked for none.
	logprobs int
	// scoring makes the sequence one pass over its window that fills scores
	// (see score.go) instead of generating.
	scoring   bool
	scores    *Scores
	scoreTopN int
	logits    []float32
	// events has room for every step the scheduler may be ahead and the
	// final event, and the scheduler only feeds a sequence whose reader is
	// at most stepsAhead steps behind (readerReady): sending never blocks,
	// and a slow reader only slows itself.
	events chan event
	// sent counts the steps the scheduler has sent, done those whose onStep
	// has returned. They are atomics, not the channel's length, because the
	// scheduler reuses a step's ring slot once done says the reader is past
	// it: the atomic store and load order the reader's last use of a slot
	// before the scheduler's next write to it (len of a channel orders
	// nothing).
	sent, done atomic.Int64
	ring       stepRing // the Step values handed to the reader, reused
	// The window rule's state (windowStart): the hop, and where the window
	// now starts (-1 before the first).
	hop      int
	winStart int
}

type scheduler struct {
	m      *Model
	submit chan *sequence
	wake   chan struct{}
	quit   chan struct{}
	done   sync.WaitGroup
	active []*sequence
	// waiting sequences have been submitted but the KV pool has no room for
	// their caches yet; oldest first.
	waiting   []*sequence
	waitTimer *time.Timer
	turn      int // rotates who goes first in each step's plan
	// items and owners hold each step's plan; kept between steps so that
	// planning allocates nothing once they have grown to the batch.
	items  []stepItem
	owners []*sequence
}

func newScheduler(m *Model) *scheduler {
	s := &scheduler{
		m:      m,
		submit: make(chan *sequence),
		wake:   make(chan struct{}, 1),
		quit:   make(chan struct{}),
	}
	s.done.Add(1)
	go s.loop()
	return s
}

func (s *scheduler) stop() {
	close(s.quit)
	s.done.Wait()
}

// poke wakes the scheduler if it is waiting for a reader.
func (s *scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// join hands a sequence to the scheduler, or fails if the model is closed.
func (s *scheduler) join(ctx context.Context, seq *sequence) error {
	select {
	case s.submit <- seq:
		return nil
	case <-s.quit:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *scheduler) loop() {
	defer s.done.Done()
	// One OS thread runs every step, so steps stay on one core with its
	// caches warm and nothing has to pick the loop up after each one. When
	// the loop yielded its P after each step instead (so the readers it woke
	// ran at once on this core), every step waited ~0.07 ms for another
	// thread to take the loop over, and steps ran on alternating cores: a
	// single stream lost about a quarter of its rate to that, which the few
	// context switches per token that locking costs do not come near.
	// ggml's Metal backend keeps per-thread state and needs the one thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer func() {
		for _, seq := range append(s.active, s.waiting...) {
			s.finish(seq, event{err: errClosed})
		}
	}()
	for {
		if len(s.active) == 0 && len(s.waiting) == 0 {
			select {
			case seq := <-s.submit:
				s.admit(seq)
			case <-s.quit:
				return
			}
		}
		for more := true; more; {
			select {
			case seq := <-s.submit:
				s.admit(seq)
			case <-s.quit:
				return
			default:
				more = false
			}
		}
		s.dropCancelled()
		s.admitWaiting()
		items, owners := s.plan()
		if len(items) == 0 {
			// Everyone is waiting on a reader or for room in the KV pool
			// (or there is no one left).
			select {
			case seq := <-s.submit:
				s.admit(seq)
			case <-s.wake:
			case <-s.waitEnd():
			case <-s.quit:
				return
			}
			continue
		}
		s.run(items, owners)
	}
}

// admit takes a submitted sequence. Its cache is taken from the KV pool
// whole, for the most positions its window can reach, so a running sequence
// never runs out of room mid-reply. When the pool cannot hold it yet it
// waits, oldest first, for others to finish, at most KVWait.
func (s *scheduler) admit(seq *sequence) {
	seq.maxCache = min(len(seq.tokens)+seq.maxNew, s.m.cfg.Context)
	if total, _ := s.m.kvPositions(); seq.maxCache > total {
		seq.events <- event{err: ErrKVFull} // it could never fit
		return
	}
	seq.waitEnds = time.Now().Add(s.m.opts.KVWait)
	s.waiting = append(s.waiting, seq)
	s.admitWaiting()
}

// admitWaiting starts waiting sequences in order while the pool has room.
// Nobody overtakes the oldest, so a long window is not starved by short
// ones. A sequence whose caller left is dropped; one that has waited KVWait
// fails with ErrKVFull.
func (s *scheduler) admitWaiting() {
	now := time.Now()
	kept := s.waiting[:0]
	blocked := false
	for _, seq := range s.waiting {
		if err := seq.ctx.Err(); err != nil {
			s.finish(seq, event{err: err})
			continue
		}
		if !blocked {
			cache, err := s.m.newKVCache(seq.maxCache)
			switch {
			case err == nil:
				seq.cache = cache
				s.active = append(s.active, seq)
				continue
			case !errors.Is(err, errNoRoom):
				s.finish(seq, event{err: fmt.Errorf("allocating a KV cache: %w", err)})
				continue
			}
			blocked = true
		}
		if !now.Before(seq.waitEnds) {
			s.finish(seq, event{err: ErrKVFull})
			continue
		}
		kept = append(kept, seq)
	}
	clear(s.waiting[len(kept):])
	s.waiting = kept
}

// waitEnd fires when the oldest waiting sequence's wait is over; nil (never)
// when nobody waits.
func (s *scheduler) waitEnd() <-chan time.Time {
	if len(s.waiting) == 0 {
		return nil
	}
	d := time.Until(s.waiting[0].waitEnds)
	if s.waitTimer == nil {
		s.waitTimer = time.NewTimer(d)
	} else {
		s.waitTimer.Reset(d)
	}
	return s.waitTimer.C
}

// finish ends a sequence: its cache is freed at once.
func (s *scheduler) finish(seq *sequence, last event) {
	seq.finished = true
	seq.cache.free()
	select {
	case seq.events <- last:
	default: // the reader is gone and its channel full; nobody will read it
	}
}

func (s *scheduler) dropCancelled() {
	kept := s.active[:0]
	for _, seq := range s.active {
		if seq.finished {
			continue
		}
		if err := seq.ctx.Err(); err != nil {
			s.finish(seq, event{err: err})
			continue
		}
		kept = append(kept, seq)
	}
	clear(s.active[len(kept):])
	s.active = kept
}

// windowStart is where the part of the sequence the model sees begins
// (docs/API.md, window_hop). The first window is the prompt's last T tokens.
// It then stays put while the window still fits, and when a new token makes
// it longer than T it jumps to leave T-hop+1 tokens: with hop 1 that is the
// last T tokens every time, the original rule; with a larger hop the model
// reads a shorter window that the KV cache extends for hop-1 more tokens
// before the next jump. Calling it again for the same length changes nothing.
func (seq *sequence) windowStart(T int) int {
	n := len(seq.tokens)
	switch {
	case seq.winStart < 0:
		seq.winStart = max(0, n-T)
	case n-seq.winStart > T:
		seq.winStart = n - T + seq.hop - 1
	}
	return seq.winStart
}

// plan picks this step's work: every ready decoder, then prompt chunks. It
// only chooses; syncWindow and reserve keep each chosen sequence's cache in
// step with what it is about to be fed.
func (s *scheduler) plan() ([]stepItem, []*sequence) {
	clear(s.items)
	clear(s.owners)
	items, owners := s.items[:0], s.owners[:0]
	defer func() { s.items, s.owners = items, owners }()
	budget := stepTokenBudget
	candidates := s.active
	if s.m.opts.Baseline && len(candidates) > 1 {
		candidates = candidates[:1] // the others queue, as they did in the original
	}
	// Prompt chunks take turns, so sequences that recompute their whole
	// window for every token (past T) cannot starve one another.
	s.turn++
	// Two passes: single-token decodes first, so prefills never starve them.
	for pass := 0; pass < 2; pass++ {
		for k := range candidates {
			seq := candidates[(k+s.turn)%len(candidates)]
			if !seq.readerReady() {
				continue // its reader is stepsAhead steps behind
			}
			start, pending, whole := s.syncWindow(seq)
			if (pass == 0) != (pending == 1) || pending == 0 {
				continue
			}
			if pass == 1 && budget <= 0 && len(items) > 0 {
				continue
			}
			n := pending
			if pass == 1 && !whole {
				n = min(pending, s.m.opts.PrefillChunk, max(budget, 1))
			}
			if !s.reserve(seq, n) {
				continue
			}
			budget -= n
			items = append(items, s.item(seq, start, n))
			owners = append(owners, seq)
		}
	}
	return items, owners
}

// syncWindow lines the sequence's cache up with the window the model must
// see now, and says where that window starts, how many of its tokens are not
// in the cache yet, and whether they must all go in one pass.
func (s *scheduler) syncWindow(seq *sequence) (start, pending int, whole bool) {
	start = seq.windowStart(s.m.cfg.Context)
	// The baseline mode forgets the cache for every token, and the
	// full-attention matrices and scores want one pass over the whole
	// window: they start again from position 0.
	whole = s.m.opts.Baseline || seq.scoring || (seq.full != nil && seq.isDone())
	if whole {
		seq.cached = 0
	}
	if start != seq.cacheAt {
		// The window moved: every position shifted, so the cached keys and
		// values no longer describe it. Recompute from position 0.
		seq.cacheAt, seq.cached = start, 0
	}
	return start, len(seq.tokens) - start - seq.cached, whole
}

// reserve checks that the sequence's cache has room for n more positions.
// It always has (admit sized it for the whole window); a cache that did not
// would be a bug, which ends that sequence rather than the process.
func (s *scheduler) reserve(seq *sequence, n int) bool {
	if need := seq.cached + n; need > seq.cache.capacity {
		s.finish(seq, event{err: fmt.Errorf("KV cache of %d positions cannot take %d", seq.cache.capacity, need)})
		return false
	}
	return true
}

// isDone reports whether the sequence has generated all it will.
func (seq *sequence) isDone() bool {
	return seq.stopped || len(seq.tokens)-seq.nPrompt >= seq.maxNew
}

func (s *scheduler) item(seq *sequence, start, n int) stepItem {
	cfg := s.m.cfg
	if seq.scoring || (seq.full != nil && seq.isDone()) {
		// plan started this pass from position 0
		t := len(seq.tokens) - start
		it := stepItem{cache: seq.cache, tokens: seq.tokens[start:], headMask: seq.headMask}
		if seq.scoring {
			it.allLogits = make([]float32, t*cfg.Vocab)
		} else {
			it.fullLayers = seq.fullLayers
			it.fullAttn = make([]float32, len(it.fullLayers)*cfg.Heads*t*t)
		}
		return it
	}
	from := start + seq.cached
	it := stepItem{cache: seq.cache, tokens: seq.tokens[from : from+n], nPast: seq.cached, headMask: seq.headMask}
	if from+n == len(seq.tokens) {
		// The chunk reaches the newest token: this step yields the next one.
		it.logits = seq.logits
		it.lens = seq.lens
		if len(seq.traceLayers) > 0 {
			it.traceLayers = seq.traceLayers
			it.attnRows = seq.attnRows[:len(seq.traceLayers)*cfg.Heads*(seq.cached+n)]
		}
	}
	return it
}

func (s *scheduler) run(items []stepItem, owners []*sequence) {
	began := time.Now()
	err := s.m.step(items)
	if s.m.opts.OnStep != nil {
		s.m.opts.OnStep(phaseOf(items), time.Since(began).Seconds(), tokensIn(items))
	}
	for i, seq := range owners {
		if err != nil {
			s.finish(seq, event{err: fmt.Errorf("engine step: %w", err)})
			continue
		}
		s.advance(seq, &items[i])
	}
	if err != nil {
		s.active = s.active[:0]
	}
	s.dropFinished()
}

func (s *scheduler) dropFinished() {
	kept := s.active[:0]
	for _, seq := range s.active {
		if !seq.finished {
			kept = append(kept, seq)
		}
	}
	clear(s.active[len(kept):])
	s.active = kept
}

// advance takes one sequence's step outputs: cache bookkeeping, then either
// the next token or, for a full-attention or scoring pass, its answer.
func (s *scheduler) advance(seq *sequence, it *stepItem) {
	cfg := s.m.cfg
	switch {
	case it.fullLayers != nil:
		s.finish(seq, event{full: fullAttn(it, cfg.Heads)})
		return
	case it.allLogits != nil:
		s.finish(seq, event{scores: seq.score(it.allLogits, cfg.Vocab)})
		return
	}
	seq.cached += len(it.tokens)
	if it.logits == nil {
		return // a prompt chunk; the next one follows in a later step
	}
	seq.events <- event{step: seq.takeStep(it, &cfg)}
	seq.sent.Add(1)
	if !seq.isDone() {
		return
	}
	if seq.full != nil {
		return // one more pass takes the matrices
	}
	s.finish(seq, event{result: seq.result()})
}

// fullAttn slices a full-attention pass's probabilities into matrices.
func fullAttn(it *stepItem, heads int) *FullAttn {
	t := len(it.tokens)
	full := &FullAttn{TokenIDs: make([]int, t), Attn: make([][][][]float32, len(it.fullLayers))}
	for i, tok := range it.tokens {
		full.TokenIDs[i] = int(tok)
	}
	for k := range it.fullLayers {
		full.Attn[k] = make([][][]float32, heads)
		for h := range heads {
			rows := make([][]float32, t)
			at := (k*heads + h) * t * t
			for r := range t {
				rows[r] = it.fullAttn[at+r*t : at+(r+1)*t : at+(r+1)*t]
			}
			full.Attn[k][h] = rows
		}
	}
	return full
}

// result is the generation's end: its text cut before any stop (a chat
// stop tag or a request's stop string), or before eot; the reply read from
// the chat's transcript of ids.
func (seq *sequence) result() *Result {
	generated, cut := CutAtStop(seq.text, seq.stops)
	ids := seq.tokens
	atEOT := seq.eot >= 0 && len(ids) > seq.nPrompt && ids[len(ids)-1] == seq.eot
	res := &Result{Generated: generated, Stopped: stopReason(cut || atEOT), PromptTokens: seq.nPrompt}
	if !seq.chat {
		return res
	}
	if seq.model.cfg.Generation() == 1 {
		// The reply is read from the text, which the stop tag cut.
		res.Reply = ExtractReply(append(int32sToBytes(ids[:seq.nPrompt]), generated...))
	} else {
		res.Reply = seq.model.reply(ids)
	}
	return res
}

func stopReason(stopped bool) string {
	if stopped {
		return "stop_tag"
	}
	return "max_new_tokens"
}

func phaseOf(items []stepItem) string {
	decode, prefill := false, false
	for _, it := range items {
		if len(it.tokens) == 1 {
			decode = true
		} else {
			prefill = true
		}
	}
	switch {
	case decode && prefill:
		return "mixed"
	case prefill:
		return "prefill"
	default:
		return "decode"
	}
}

func tokensIn(items []stepItem) int {
	n := 0
	for _, it := range items {
		n += len(it.tokens)
	}
	return n
}

func int32sToBytes(ids []int32) []byte {
	b := make([]byte, len(ids))
	for i, id := range ids {
		b[i] = byte(id)
	}
	return b
}
