package server

// A deterministic stand-in for the model, so the HTTP layer can be tested
// quickly and exactly: it "generates" a fixed reply byte by byte, with a
// configurable delay per step, and records what it was asked and how many
// steps it ran, which is how the tests see that a departed client stopped it.

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"nielsgpt/engine"
	"nielsgpt/gguf"
	"nielsgpt/tokenizer"
)

var fakeConfig = gguf.ModelConfig{Vocab: 256, Context: 64, Embd: 16, Layers: 4, Heads: 2, FF: 64, RopeTheta: 10000}

type fakeEngine struct {
	cfg    gguf.ModelConfig
	reply  string        // the bytes generated, in order; generation stops at its end
	delay  time.Duration // before each step
	failAt int           // step index at which Generate fails; -1 for never
	refuse error         // when set, what Generate and FullAttention return before any step
	// splitPrompt makes FullAttention read each prompt byte as two tokens,
	// as a tokenizer that makes more tokens than bytes would.
	splitPrompt bool

	steps   atomic.Int64 // steps run, over all requests
	running atomic.Int64 // Generate/FullAttention calls in progress

	closed             atomic.Int32
	closedWhileRunning atomic.Bool

	mu        sync.Mutex
	lastGen   engine.GenerateRequest
	lastFull  engine.FullAttnRequest
	lastScore engine.ScoreRequest
	// stepped receives each step index as it is produced (when non-nil).
	stepped chan int
}

func newFakeEngine() *fakeEngine {
	return &fakeEngine{cfg: fakeConfig, reply: "hi \"there\"\n\\ok", failAt: -1}
}

func (f *fakeEngine) Config() gguf.ModelConfig { return f.cfg }

func (f *fakeEngine) Tokenizer() tokenizer.Tokenizer { return tokenizer.Bytes{} }

// transcript is the request's prompt as the byte engine reads it: its
// messages formatted, or its text.
func transcript(messages []engine.Message, prompt []byte) []byte {
	if len(messages) > 0 {
		return engine.FormatTranscript(messages)
	}
	return prompt
}

func (f *fakeEngine) lastGenerate() engine.GenerateRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastGen
}

func (f *fakeEngine) lastScoreRequest() engine.ScoreRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastScore
}

func (f *fakeEngine) lastFullAttn() engine.FullAttnRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastFull
}

var errFakeEngine = errors.New("fake engine failure")

func (f *fakeEngine) wait(ctx context.Context) error {
	if f.delay <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(f.delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (f *fakeEngine) Generate(ctx context.Context, req engine.GenerateRequest, onStep func(*engine.Step) error) (*engine.Result, error) {
	f.running.Add(1)
	defer f.running.Add(-1)
	f.mu.Lock()
	f.lastGen = req
	f.mu.Unlock()
	if f.refuse != nil {
		return nil, f.refuse
	}
	var generated []byte
	for i := 0; i < req.MaxNewTokens && i < len(f.reply); i++ {
		if err := f.wait(ctx); err != nil {
			return nil, err
		}
		if i == f.failAt {
			return nil, errFakeEngine
		}
		f.steps.Add(1)
		if f.stepped != nil {
			select {
			case f.stepped <- i:
			default:
			}
		}
		tok := f.reply[i]
		window := min(len(transcript(req.Messages, req.Prompt))+i, f.cfg.Context) // the newest query sees the prompt and the tokens so far
		var attn [][]float32                                                      // as the engine: none without a traced layer
		if req.TraceLayer >= 0 {
			attn = make([][]float32, f.cfg.Heads)
		}
		for h := range attn {
			attn[h] = make([]float32, window)
			for j := range attn[h] {
				attn[h][j] = 1 / float32(window)
			}
		}
		step := &engine.Step{
			Index:      i,
			TokenID:    int(tok),
			Text:       []byte{tok},
			Entropy:    fakeEntropy(req.Ablate),
			Candidates: []engine.Candidate{{TokenID: int(tok), Prob: 0.75}, {TokenID: 0xff, Prob: 0.25}},
			Attn:       attn,
			Layers:     f.layers(req.TraceLayers, window),
			Lens:       f.lens(req.LogitLens, tok),
		}
		if req.Logprobs {
			step.Logprob = math.Log(0.75)
			step.TopLogprobs = []engine.TokenLogprob{{TokenID: int(tok), Logprob: math.Log(0.75)}, {TokenID: 0xff, Logprob: math.Log(0.25)}}
			step.TopLogprobs = step.TopLogprobs[:min(req.TopLogprobs, 2)]
		}
		if err := onStep(step); err != nil {
			return nil, err
		}
		generated = append(generated, tok)
		if cut, ok := fakeCut(generated, req); ok {
			return f.result(req, cut, "stop_tag"), nil
		}
	}
	return f.result(req, generated, "max_new_tokens"), nil
}

// fakeEntropy is the fake's step entropy: each ablated head raises it by
// 0.125, so a test sees that ablation reached the engine and changed what
// it computes.
func fakeEntropy(ablate []engine.Head) float64 {
	return 0.5623351446188083 + 0.125*float64(len(ablate))
}

// layers is the fake's attention for each traced layer: head h of layer l
// puts all its weight on position (l+h) mod window, so every layer and head
// is told apart.
func (f *fakeEngine) layers(trace []int, window int) []engine.LayerAttn {
	if trace == nil {
		return nil
	}
	out := make([]engine.LayerAttn, len(trace))
	for i, l := range trace {
		out[i] = engine.LayerAttn{Layer: l, Attn: make([][]float32, f.cfg.Heads)}
		for h := range out[i].Attn {
			row := make([]float32, window)
			if window > 0 {
				row[(l+h)%window] = 1
			}
			out[i].Attn[h] = row
		}
	}
	return out
}

// lens is the fake's logit lens: layer l's entropy is l/8 and its top two
// candidates are the step's token shifted by l (probability 0.5) and 0xff.
func (f *fakeEngine) lens(on bool, tok byte) []engine.LensLayer {
	if !on {
		return nil
	}
	out := make([]engine.LensLayer, f.cfg.Layers)
	for l := range out {
		out[l] = engine.LensLayer{Layer: l, Entropy: float64(l) / 8,
			Candidates: []engine.Candidate{{TokenID: (int(tok) + l) % 256, Prob: 0.5}, {TokenID: 0xff, Prob: 0.125}}}
	}
	return out
}

// fakeCut applies the stop sequences the real engine would: the request's,
// and a chat's stop tags.
func fakeCut(generated []byte, req engine.GenerateRequest) ([]byte, bool) {
	stops := req.Stop
	if len(req.Messages) > 0 {
		stops = append(append([][]byte{}, stops...), engine.StopTags...)
	}
	return engine.CutAtStop(generated, stops)
}

func (f *fakeEngine) result(req engine.GenerateRequest, generated []byte, stopped string) *engine.Result {
	res := &engine.Result{Generated: generated, Stopped: stopped, PromptTokens: len(transcript(req.Messages, req.Prompt))}
	if len(req.Messages) > 0 {
		res.Reply = engine.ExtractReply(append(transcript(req.Messages, req.Prompt), generated...))
	}
	return res
}

// Score gives every position after the first a log-probability of
// log(1/(i+1)) and rank i, so tests can tell positions apart; each ablated
// head lowers every log-probability by 0.125.
func (f *fakeEngine) Score(ctx context.Context, req engine.ScoreRequest) (*engine.Scores, error) {
	f.mu.Lock()
	f.lastScore = req
	f.mu.Unlock()
	if f.refuse != nil {
		return nil, f.refuse
	}
	text := req.Text
	if len(req.Messages) > 0 {
		text = engine.FormatConversation(req.Messages) // what the byte engine's FormatMessages gives
	}
	offset := max(0, len(text)-f.cfg.Context)
	window := text[offset:]
	sc := &engine.Scores{Offset: offset, TokenIDs: make([]int, len(window)), Positions: make([]engine.PositionScore, len(window))}
	for i, b := range window {
		sc.TokenIDs[i] = int(b)
		if i > 0 {
			lp := math.Log(1/float64(i+1)) - 0.125*float64(len(req.Ablate))
			sc.Positions[i] = engine.PositionScore{Logprob: lp, Entropy: 1, Rank: i,
				Top: []engine.TokenLogprob{{TokenID: int(b), Logprob: lp}}[:min(req.TopN, 1)]}
		}
	}
	return sc, ctx.Err()
}

func (f *fakeEngine) FullAttention(ctx context.Context, req engine.FullAttnRequest) (*engine.FullAttn, error) {
	f.running.Add(1)
	defer f.running.Add(-1)
	f.mu.Lock()
	f.lastFull = req
	f.mu.Unlock()
	if f.refuse != nil {
		return nil, f.refuse
	}
	prompt := transcript(req.Messages, req.Prompt)
	tokens := append([]byte{}, prompt...)
	if f.splitPrompt {
		tokens = append(tokens, prompt...)
	}
	for i := 0; i < req.MaxNewTokens && i < len(f.reply); i++ {
		if err := f.wait(ctx); err != nil {
			return nil, err
		}
		f.steps.Add(1)
		tokens = append(tokens, f.reply[i])
	}
	if len(tokens) > f.cfg.Context {
		tokens = tokens[len(tokens)-f.cfg.Context:]
	}
	ids := make([]int, len(tokens))
	matrix := make([][]float32, len(tokens))
	for i, b := range tokens {
		ids[i] = int(b)
		matrix[i] = make([]float32, len(tokens))
		for j := 0; j <= i; j++ {
			matrix[i][j] = 1 / float32(i+1)
		}
	}
	attn := make([][][][]float32, len(req.Layers))
	for l := range attn {
		attn[l] = make([][][]float32, f.cfg.Heads)
		for h := range attn[l] {
			attn[l][h] = matrix
		}
	}
	return &engine.FullAttn{TokenIDs: ids, Attn: attn}, nil
}

// Close lets Run close the fake like the real model; closedWhileRunning
// records a Close that came while a generation was still in progress.
func (f *fakeEngine) Close() {
	if f.running.Load() != 0 {
		f.closedWhileRunning.Store(true)
	}
	f.closed.Add(1)
}
