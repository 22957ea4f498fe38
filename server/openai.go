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
	"errors"
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

func (s *Server) serveOpenAI(c *gin.Context, parse func([]byte, limits) (oaiRequest, error)) {
	req, eng, release, ok := admit(s, c, parse, oaiRequest.prompt)
	if !ok {
		return
	}
	defer release()
	if len(req.ignored) > 0 {
		c.Set(ctxIgnoredFields, req.ignored)
	}
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
	return o.eng.Score(o.c.Request.Context(), engine.ScoreRequest{Tokens: o.req.gen.Prompt, TopN: o.req.topLogprobs})
}

// once answers with one JSON body after the whole generation.
func (o *oaiCall) once() {
	scores, err := o.promptScores()
	if err != nil {
		o.fail(err)
		return
	}
	var steps []*engine.Step
	result, err := o.eng.Generate(o.c.Request.Context(), o.req.gen, func(step *engine.Step) error {
		steps = append(steps, step.Clone()) // the engine reuses its Step values
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
	var body any
	if o.req.chat {
		body = o.chatBody(result, kept)
	} else {
		body = o.completionBody(result, kept, scores)
	}
	_ = http.NewResponseController(o.c.Writer).SetWriteDeadline(o.s.writeDeadline())
	o.c.JSON(http.StatusOK, body)
}

// fail answers an engine failure before anything was written.
func (o *oaiCall) fail(err error) {
	switch {
	case errors.Is(err, engine.ErrKVFull):
		o.s.rejectBusy(o.c) // as on /chat/stream (docs/API.md §10.4)
	case o.s.baseCtx.Err() != nil:
		writeError(o.c, o.s, http.StatusServiceUnavailable, "shutting_down", "Server is shutting down")
	case o.c.Request.Context().Err() != nil:
		// the client is gone: nobody to answer
	default:
		o.s.log.Error("completion failed", "error", err)
		writeError(o.c, o.s, http.StatusInternalServerError, "engine_error", "Generation failed")
	}
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
