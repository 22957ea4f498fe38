package engine

// The engine's public vocabulary: what callers (the server, the terminal chat,
// the benchmarks) ask for and what they get back. Nothing here touches C.

import "errors"

// ErrKVFull: the KV pool had no room for a new sequence's window (prompt +
// max_new_tokens, at most T positions) within Options.KVWait. Nothing has
// been generated; retrying later can succeed.
var ErrKVFull = errors.New("engine busy: no room in the KV cache")

// ErrEmptyPrompt: the prompt (or the text to score) is no tokens at all, as
// the model's tokenizer reads it; generation 2's normaliser drops a text of
// nothing but whitespace entirely. The caller's input is at fault.
var ErrEmptyPrompt = errors.New("the prompt is empty once the model's tokenizer has read it")

// Sampling selects how each next token is drawn (docs/API.md, Generation).
type Sampling struct {
	Temperature float64 // 0 means greedy
	TopK        int     // 0 means no filtering
	// TopP keeps the smallest set of most likely tokens whose probability
	// reaches it (after TopK); 0 or 1 means no nucleus filtering.
	TopP float64
	// RepetitionPenalty divides the logit of every distinct token already in
	// the prompt or generated (whatever its sign), before temperature; 0 or 1
	// means off.
	RepetitionPenalty float64
	Seed              int64
}

// Head names one attention head.
type Head struct{ Layer, Head int }

// LensTop is how many candidates each layer of the logit lens reports.
const LensTop = 5

// GenerateRequest asks for up to MaxNewTokens tokens after Messages or
// Prompt: exactly one of the two is given.
type GenerateRequest struct {
	// Messages is a chat to continue: the engine writes its transcript as the
	// model's generation was trained (Model.FormatChat) and applies that
	// chat's rules (its stop, its reply, for generation 2 the role pieces
	// banned).
	Messages []Message
	// Prompt is plain text to continue, read as the model's tokenizer encodes
	// it: no chat rules apply (only Stop ends it early) and no reply is
	// extracted. A chat is given as Messages, never as a transcript here.
	Prompt       []byte
	MaxNewTokens int
	Sampling     Sampling
	TraceLayer   int // layer whose attention rows are reported; -1 for none
	// TraceLayers are more layers (distinct, any order) whose attention rows
	// every Step reports in Step.Layers, in this order.
	TraceLayers []int
	// LogitLens asks every Step for Step.Lens: what each layer's residual
	// stream would predict through the final norm and the LM head.
	LogitLens bool
	// Ablate zeroes these heads' attention outputs (before the projection)
	// at every position, prompt included. Distinct, at most L·H.
	Ablate []Head
	// WindowHop is how the window moves once the sequence outgrows the
	// context (docs/API.md, window_hop): 1 (or 0) re-cuts it for every token,
	// as the original did; k > 1 jumps k tokens at a time, so the cache is
	// rebuilt once per k tokens. At most T-1.
	WindowHop int
	// Stop ends the generation once the generated text (the tokens' bytes)
	// contains one of these (besides generation 1's chat stop tags);
	// Result.Generated is cut before it.
	Stop [][]byte
	// Logprobs asks every Step for its token's log-probability under the
	// model's own distribution (temperature 1, no filtering), and for the
	// TopLogprobs most likely tokens' (0..MaxTopLogprobs).
	Logprobs    bool
	TopLogprobs int
}

// MaxTopLogprobs bounds GenerateRequest.TopLogprobs and ScoreRequest.TopN.
const MaxTopLogprobs = 20

// TokenLogprob is a token and its log-probability.
type TokenLogprob struct {
	TokenID int
	Logprob float64
}

// Candidate is one entry of a step's top-10.
type Candidate struct {
	TokenID int
	Prob    float64
}

// Step is what one generated token carries back to the caller. It and the
// slices it holds belong to the caller only until its onStep returns (the
// engine reuses them for later steps): copy what must outlive the call.
type Step struct {
	Index   int // 0-based step number
	TokenID int
	// Text is the bytes the token added to the generated text
	// (Result.Generated before any cut): Model.TokenBytes, or nothing for the
	// eot that ends a generation-2 reply.
	Text       []byte
	Entropy    float64     // nats, of the sampling distribution
	Candidates []Candidate // at most 10, by probability, highest first
	// Attn holds the traced layer's attention probabilities for the newest
	// query position: one row per head, each as long as the current window.
	// Nil when TraceLayer < 0.
	Attn [][]float32
	// Logprob and TopLogprobs are set when the request asked for Logprobs:
	// the model's own distribution, whatever the sampling settings.
	Logprob     float64
	TopLogprobs []TokenLogprob
	// Layers holds one entry per GenerateRequest.TraceLayers, in its order.
	Layers []LayerAttn
	// Lens holds one entry per layer (0..L-1) when the request asked for
	// LogitLens; the last is the model's own distribution (temperature 1).
	Lens []LensLayer
}

// LayerAttn is one layer's attention probabilities for the newest query
// position: Attn[head] is as long as the current window.
type LayerAttn struct {
	Layer int
	Attn  [][]float32
}

// LensLayer is the logit lens at one layer: the distribution
// softmax(LN_f(h_l) · tok_embᵀ) at the newest position.
type LensLayer struct {
	Layer      int
	Entropy    float64     // nats
	Candidates []Candidate // at most LensTop, highest first
}

// Clone is a deep copy of the step, for callers that keep steps beyond
// their onStep call.
func (s *Step) Clone() *Step {
	c := *s
	c.Candidates = append([]Candidate(nil), s.Candidates...)
	c.Text = append([]byte(nil), s.Text...)
	c.TopLogprobs = append([]TokenLogprob(nil), s.TopLogprobs...)
	c.Attn = cloneRows(s.Attn)
	if s.Layers != nil {
		c.Layers = make([]LayerAttn, len(s.Layers))
		for i, l := range s.Layers {
			c.Layers[i] = LayerAttn{Layer: l.Layer, Attn: cloneRows(l.Attn)}
		}
	}
	if s.Lens != nil {
		c.Lens = make([]LensLayer, len(s.Lens))
		for i, l := range s.Lens {
			c.Lens[i] = LensLayer{Layer: l.Layer, Entropy: l.Entropy, Candidates: append([]Candidate(nil), l.Candidates...)}
		}
	}
	return &c
}

func cloneRows(rows [][]float32) [][]float32 {
	if rows == nil {
		return nil
	}
	c := make([][]float32, len(rows))
	for i, row := range rows {
		c[i] = append([]float32(nil), row...)
	}
	return c
}

// Result is the end of a generation.
type Result struct {
	// Generated is the generated tokens' bytes (Model.TokenBytes) joined, cut
	// before any stop (a chat stop tag, a Stop string, generation 2's eot):
	// raw bytes, which may end inside a character.
	Generated []byte
	Reply     string // a chat's reply (docs/API.md) over prompt + generated; empty after a Prompt
	Stopped   string // "stop_tag" (a chat stop tag, a Stop string or eot) or "max_new_tokens"
	// PromptTokens is how many token ids the prompt (the chat's transcript,
	// or the encoded text) has.
	PromptTokens int
}

// FullAttnRequest asks for every head's full attention matrix of Layers
// (distinct, any order) over the window after generating MaxNewTokens tokens
// with Sampling (and Ablate, as in GenerateRequest).
type FullAttnRequest struct {
	Messages     []Message // as in GenerateRequest: a chat, or
	Prompt       []byte    // plain text, as in GenerateRequest
	MaxNewTokens int
	Sampling     Sampling
	Layers       []int
	Ablate       []Head
	WindowHop    int // as in GenerateRequest
}

// FullAttn holds causal attention matrices over the window TokenIDs:
// Attn[i][h] is the t × t matrix of head h of the request's Layers[i].
type FullAttn struct {
	TokenIDs []int
	Attn     [][][][]float32
}

// ScoreRequest asks how the model reads Text or Messages (exactly one of
// them): the distribution after each prefix, in one pass over the window
// (the last T tokens).
type ScoreRequest struct {
	Text []byte // the text to score, as the model's tokenizer encodes it (bytes for generation 1)
	// Messages, instead of Text, scores a conversation as it stands
	// (Model.FormatMessages: its transcript without the generation prompt).
	Messages []Message
	TopN     int    // candidates per position, 0..MaxTopLogprobs
	Ablate   []Head // as in GenerateRequest
}

// PositionScore is the model's distribution (temperature 1, no filtering)
// after reading the tokens before one position, judged against the token
// that is really there.
type PositionScore struct {
	Logprob float64 // of the token at this position
	Entropy float64 // nats
	Rank    int     // of the token at this position; 1 is the most likely
	Top     []TokenLogprob
}

// Scores is a ScoreRequest's answer. Offset tokens fell before the window;
// Positions[i] scores TokenIDs[i] and Positions[0] is the zero value (no
// token precedes it in the window).
type Scores struct {
	Offset    int
	TokenIDs  []int
	Positions []PositionScore
}
