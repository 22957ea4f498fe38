package server

// OpenAI's response shapes: chat completions and their chunks, legacy text
// completions and theirs, both kinds of log-probabilities, usage, and the
// nielsgpt extension that carries a step's entropy and attention.

import (
	"encoding/json"
	"math"
	"strconv"

	"nielsgpt/engine"
)

type oaiUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type oaiTopLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

type oaiTokenLogprob struct {
	Token       string          `json:"token"`
	Logprob     float64         `json:"logprob"`
	Bytes       []int           `json:"bytes"`
	TopLogprobs []oaiTopLogprob `json:"top_logprobs"`
}

type oaiChatLogprobs struct {
	Content []oaiTokenLogprob `json:"content"`
	Refusal *string           `json:"refusal"`
}

type oaiMessage struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
	Refusal *string `json:"refusal,omitempty"`
}

// oaiStep is the nielsgpt extension for one generated token: the fields the
// request asked for, in /chat/stream's trace event shapes.
type oaiStep struct {
	Entropy float64         `json:"entropy"`
	Attn    json.RawMessage `json:"attn,omitempty"`
	Layers  json.RawMessage `json:"layers,omitempty"`
	Lens    json.RawMessage `json:"lens,omitempty"`
}

type oaiChatChoice struct {
	Index        int              `json:"index"`
	Message      *oaiMessage      `json:"message,omitempty"`
	Delta        *oaiMessage      `json:"delta,omitempty"`
	Logprobs     *oaiChatLogprobs `json:"logprobs"`
	FinishReason *string          `json:"finish_reason"`
	Nielsgpt     any              `json:"nielsgpt,omitempty"`
}

type oaiLegacyLogprobs struct {
	Tokens        []string          `json:"tokens"`
	TokenLogprobs []*float64        `json:"token_logprobs"`
	TopLogprobs   []json.RawMessage `json:"top_logprobs"`
	TextOffset    []int             `json:"text_offset"`
}

type oaiTextChoice struct {
	Text         string             `json:"text"`
	Index        int                `json:"index"`
	Logprobs     *oaiLegacyLogprobs `json:"logprobs"`
	FinishReason *string            `json:"finish_reason"`
	Nielsgpt     any                `json:"nielsgpt,omitempty"`
}

// oaiResponse is a whole response or one chunk of a stream; Choices holds
// oaiChatChoice or oaiTextChoice values.
type oaiResponse struct {
	ID      string    `json:"id"`
	Object  string    `json:"object"`
	Created int64     `json:"created"`
	Model   string    `json:"model"`
	Choices []any     `json:"choices"`
	Usage   *oaiUsage `json:"usage,omitempty"`
}

func (o *oaiCall) response(object string, choices ...any) *oaiResponse {
	if choices == nil {
		choices = []any{}
	}
	return &oaiResponse{ID: o.id, Object: object, Created: o.created, Model: modelID, Choices: choices}
}

// chatBody is a whole chat completion; ext is the choice's nielsgpt object
// (nil to leave it out).
func (o *oaiCall) chatBody(result *engine.Result, steps []*engine.Step, ext any) *oaiResponse {
	content := engine.DecodeBytes(result.Generated)
	reason := finishReason(result)
	choice := oaiChatChoice{Message: &oaiMessage{Role: "assistant", Content: &content}, FinishReason: &reason}
	if o.req.logprobs {
		choice.Logprobs = &oaiChatLogprobs{Content: o.tokens.chatLogprobs(steps)}
	}
	choice.Nielsgpt = ext
	body := o.response("chat.completion", choice)
	usage := o.usage(result)
	body.Usage = &usage
	return body
}

func (o *oaiCall) completionBody(result *engine.Result, steps []*engine.Step, scores *engine.Scores, ext any) *oaiResponse {
	text := engine.DecodeBytes(result.Generated)
	reason := finishReason(result)
	choice := oaiTextChoice{Text: text, FinishReason: &reason}
	if o.req.echo {
		choice.Text = engine.DecodeBytes(o.req.gen.Prompt) + text
	}
	if o.req.logprobs {
		lp := &oaiLegacyLogprobs{}
		offset := 0
		if o.req.echo {
			offset = lp.addPrompt(o.tokens, o.req.gen.Prompt, scores)
		}
		lp.addSteps(o.tokens, steps, offset)
		choice.Logprobs = lp
	}
	choice.Nielsgpt = ext
	body := o.response("text_completion", choice)
	usage := o.usage(result)
	body.Usage = &usage
	return body
}

// stepExtension is the nielsgpt object of one generated token; a whole
// response carries {"steps": [...]} of them, one per token it returns.
func (t *tokenTable) stepExtension(step *engine.Step) oaiStep {
	ext := oaiStep{Entropy: step.Entropy}
	if step.Attn != nil {
		ext.Attn = appendMatrix(nil, step.Attn)
	}
	if len(step.Layers) > 0 {
		ext.Layers = appendLayers(nil, step.Layers)
	}
	if step.Lens != nil {
		ext.Lens = t.appendLens(nil, step.Lens)
	}
	return ext
}

// jsonBytes is a token's bytes as OpenAI's logprobs carry them: a list of
// integers.
func (t *tokenTable) jsonBytes(id int) []int {
	b := t.tokenBytes(id)
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(c)
	}
	return out
}

func (t *tokenTable) chatLogprobs(steps []*engine.Step) []oaiTokenLogprob {
	out := make([]oaiTokenLogprob, len(steps))
	for i, st := range steps {
		top := make([]oaiTopLogprob, len(st.TopLogprobs))
		for j, c := range st.TopLogprobs {
			top[j] = oaiTopLogprob{Token: t.tokenString(c.TokenID), Logprob: clampLogprob(c.Logprob), Bytes: t.jsonBytes(c.TokenID)}
		}
		out[i] = oaiTokenLogprob{Token: t.tokenString(st.TokenID), Logprob: clampLogprob(st.Logprob), Bytes: t.jsonBytes(st.TokenID), TopLogprobs: top}
	}
	return out
}

// addPrompt adds the echoed prompt's tokens (the prompt encoded as the model
// reads it): the first (and any the window did not reach) has no
// log-probability, as in OpenAI's API. It returns the byte offset where the
// generated text begins.
func (lp *oaiLegacyLogprobs) addPrompt(t *tokenTable, prompt []byte, scores *engine.Scores) int {
	offset := 0
	for i, id := range t.tok.Encode(string(prompt)) {
		lp.Tokens = append(lp.Tokens, t.tokenString(id))
		lp.TextOffset = append(lp.TextOffset, offset)
		offset += len(t.tokenBytes(id))
		w := i - scores.Offset // position in the scored window
		if w < 1 || w >= len(scores.Positions) {
			lp.TokenLogprobs = append(lp.TokenLogprobs, nil)
			lp.TopLogprobs = append(lp.TopLogprobs, json.RawMessage("null"))
			continue
		}
		p := scores.Positions[w]
		lp.TokenLogprobs = append(lp.TokenLogprobs, finite(p.Logprob))
		lp.TopLogprobs = append(lp.TopLogprobs, t.topObject(p.Top))
	}
	return offset
}

// addSteps adds generated tokens whose text starts at byte offset.
func (lp *oaiLegacyLogprobs) addSteps(t *tokenTable, steps []*engine.Step, offset int) {
	for _, st := range steps {
		lp.Tokens = append(lp.Tokens, t.tokenString(st.TokenID))
		lp.TextOffset = append(lp.TextOffset, offset)
		offset += len(st.Text)
		lp.TokenLogprobs = append(lp.TokenLogprobs, finite(st.Logprob))
		lp.TopLogprobs = append(lp.TopLogprobs, t.topObject(st.TopLogprobs))
	}
}

// topObject writes legacy top_logprobs: an object from token to
// log-probability, most likely first (encoding/json would sort the keys).
func (t *tokenTable) topObject(top []engine.TokenLogprob) json.RawMessage {
	b := []byte{'{'}
	for i, c := range top {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, t.tokenString(c.TokenID))
		b = append(b, ':')
		b = strconv.AppendFloat(b, clampLogprob(c.Logprob), 'g', -1, 64)
	}
	return append(b, '}')
}

// finite keeps a log-probability JSON can carry: a token of probability 0
// (impossible under the model, yet present in an echoed prompt) gets the
// most negative float64 rather than -Inf, which JSON has no word for.
func finite(x float64) *float64 {
	x = clampLogprob(x)
	return &x
}

func clampLogprob(x float64) float64 {
	if math.IsInf(x, -1) || math.IsNaN(x) {
		return -math.MaxFloat64
	}
	return x
}
