package server

// The OpenAI-compatible API (docs/API.md, OpenAI API): GET /v1/models,
// POST /v1/chat/completions and POST /v1/completions, streaming and not, in
// OpenAI's shapes, so its SDKs, chat front ends and evaluation harnesses work
// unchanged. They share the original endpoints' admission (API keys, model
// ready, rate limit, body and prompt limits, generation slots) and the same
// engine; only the dialect differs.

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"nielsgpt/engine"
	"nielsgpt/gguf"
)

// modelID is the one model this server serves, as /v1/models lists it.
// Requests may name any model: clients often send the name of the model
// they were written for, and there is no other model to choose.
const modelID = "niels-gpt"

func (s *Server) openAIRoutes(r *gin.Engine) {
	v1 := r.Group("/v1", openAIErrors, s.requireAPIKey)
	v1.GET("/models", s.listModels)
	generation := v1.Group("", s.requireModel, s.rateLimit)
	generation.POST("/chat/completions", s.chatCompletions)
	generation.POST("/completions", s.completions)
}

func (s *Server) listModels(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"object": "list", "data": []gin.H{{
		"id": modelID, "object": "model", "created": s.started.Unix(), "owned_by": "nielsgpt",
	}}})
}

func (s *Server) chatCompletions(c *gin.Context) {
	s.serveOpenAI(c, parseChatCompletion)
}

func (s *Server) completions(c *gin.Context) {
	s.serveOpenAI(c, parseCompletion)
}

func (s *Server) serveOpenAI(c *gin.Context, parse func([]byte, limits) (oaiRequest, []string, error)) {
	req, eng, release, ok := admit(s, c, parse, oaiRequest.prompt)
	if !ok {
		return
	}
	defer release()
	call := &oaiCall{s: s, c: c, eng: eng, tokens: s.currentTokens(), req: req, id: newCompletionID(req.chat), created: time.Now().Unix()}
	if req.stream {
		call.stream()
	} else {
		call.once()
	}
}

// oaiCall is one /v1 completion in progress.
type oaiCall struct {
	s       *Server
	c       *gin.Context
	eng     Engine
	tokens  *tokenTable // the model's tokens
	req     oaiRequest
	id      string
	created int64
	steps   int
}

// promptScores scores the prompt for echo with logprobs; nil otherwise.
func (o *oaiCall) promptScores() (*engine.Scores, error) {
	if o.req.chat || !o.req.echo || !o.req.logprobs {
		return nil, nil
	}
	return o.eng.Score(o.c.Request.Context(), engine.ScoreRequest{Text: o.req.gen.Prompt, TopN: o.req.topLogprobs, Ablate: o.req.gen.Ablate})
}

// once answers with one JSON body after the whole generation.
func (o *oaiCall) once() {
	scores, err := o.promptScores()
	if err != nil {
		o.fail(err)
		return
	}
	var steps []*engine.Step
	var exts []oaiStep
	result, err := o.eng.Generate(o.c.Request.Context(), o.req.gen, func(step *engine.Step) error {
		steps = append(steps, step.Clone()) // the engine reuses its Step values
		if o.req.traced {
			// Encoded now, while the step's attention and lens are still this
			// step's: the engine reuses those slices too.
			exts = append(exts, o.tokens.stepExtension(step))
		}
		return nil
	})
	if err != nil {
		o.fail(err)
		return
	}
	o.steps = len(steps)
	o.s.metrics.AddGeneratedTokens(len(steps))
	o.c.Set(ctxTokens, len(steps))
	kept := o.keptSteps(steps, result)
	var ext any
	if o.req.traced {
		ext = map[string]any{"steps": exts[:len(kept)]}
	}
	var body any
	if o.req.chat {
		body = o.chatBody(result, kept, ext)
	} else {
		body = o.completionBody(result, kept, scores, ext)
	}
	_ = http.NewResponseController(o.c.Writer).SetWriteDeadline(o.s.writeDeadline())
	o.c.JSON(http.StatusOK, body)
}

// fail answers an engine failure before anything was written, in OpenAI's
// error shape (writeError picks it on /v1).
func (o *oaiCall) fail(err error) {
	o.s.engineFailed(o.c, err, "Generation failed")
}

// keptSteps are the steps whose tokens the answer returns: those whose text
// lies within result.Generated (the tokens of a stop sequence are not
// returned), and never the eot that ended a generation-2 reply.
func (o *oaiCall) keptSteps(steps []*engine.Step, result *engine.Result) []*engine.Step {
	n := 0
	for i, st := range steps {
		n += len(st.Text)
		if n > len(result.Generated) || o.endsTurn(st) {
			return steps[:i]
		}
	}
	return steps
}

// endsTurn reports whether the step is the end-of-turn piece that ended a
// generation-2 chat reply: it is no part of the answer.
func (o *oaiCall) endsTurn(step *engine.Step) bool {
	return o.req.chat && o.eng.Config().Generation() == 2 && step.TokenID == gguf.ChatEndOfTurnID
}

func (o *oaiCall) usage(result *engine.Result) oaiUsage {
	return oaiUsage{PromptTokens: result.PromptTokens, CompletionTokens: o.steps, TotalTokens: result.PromptTokens + o.steps}
}

func finishReason(result *engine.Result) string {
	if result.Stopped == "max_new_tokens" {
		return "length"
	}
	return "stop"
}

// newCompletionID is an id in OpenAI's style: a prefix and random hex.
func newCompletionID(chat bool) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	prefix := "cmpl-"
	if chat {
		prefix = "chatcmpl-"
	}
	return prefix + hex.EncodeToString(b[:])
}
