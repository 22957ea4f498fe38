package server

// Streaming on the OpenAI routes: `data: {chunk}` per generated token, then a
// chunk with finish_reason, the usage chunk when stream_options asks for it,
// and `data: [DONE]`. As on /chat/stream, the engine calls back on the
// handler's goroutine and each chunk is written and flushed with a deadline;
// a client that goes away ends the generation at the next step.

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"nielsgpt/engine"
)

// oaiStream writes one stream's chunks.
type oaiStream struct {
	o       *oaiCall
	rc      *http.ResponseController
	text    *textStream
	buf     []byte
	object  string
	scores  *engine.Scores // the echoed prompt's, when asked for
	started bool           // the 200 and the first chunk have been sent
	failed  bool
}

func (o *oaiCall) stream() {
	scores, err := o.promptScores()
	if err != nil {
		o.fail(err)
		return
	}
	st := &oaiStream{o: o, rc: http.NewResponseController(unwrapWriter(o.c.Writer)), text: newTextStream(o.stops()), scores: scores}
	st.object = "text_completion"
	if o.req.chat {
		st.object = "chat.completion.chunk"
	}
	start := time.Now()
	o.s.metrics.StreamStarted()
	defer o.s.metrics.StreamEnded()
	result, genErr := o.eng.Generate(o.c.Request.Context(), o.req.gen, func(step *engine.Step) error {
		if !st.started {
			st.begin()
		}
		if o.steps == 0 {
			o.s.metrics.ObserveTimeToFirstToken(time.Since(start))
		}
		o.steps++
		st.step(step)
		if st.failed {
			return errClientGone
		}
		return nil
	})
	o.s.metrics.AddGeneratedTokens(o.steps)
	o.c.Set(ctxTokens, o.steps)
	if !st.started && genErr != nil {
		// Nothing is sent yet, so the failure can still be an HTTP status:
		// above all a full KV pool, which is 503 busy with Retry-After like
		// any other busy answer, not a 200 stream that holds an error.
		o.fail(genErr)
		return
	}
	if !st.started {
		st.begin()
	}
	st.end(result, genErr)
}

// stops are what the text stream holds back: the request's stop strings,
// and for a generation-1 chat the transcript's stop tags too (generation 2
// ends a reply with a token, not text).
func (o *oaiCall) stops() [][]byte {
	stops := o.req.gen.Stop
	if o.req.chat && o.eng.Config().Generation() == 1 {
		stops = append(append([][]byte{}, stops...), engine.StopTags...)
	}
	return stops
}

func (o *oaiCall) echoLogprobs(scores *engine.Scores) *oaiLegacyLogprobs {
	if scores == nil {
		return nil
	}
	lp := &oaiLegacyLogprobs{}
	lp.addPrompt(o.tokens, o.req.gen.Prompt, scores)
	return lp
}

// begin sends the 200 and the stream's first chunk: the assistant's role
// for chat, the echoed prompt for a completion that asked for it.
func (st *oaiStream) begin() {
	st.started = true
	o := st.o
	h := o.c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	o.c.Status(http.StatusOK)
	if o.req.chat {
		role := ""
		st.send(o.response(st.object, oaiChatChoice{Delta: &oaiMessage{Role: "assistant", Content: &role}}))
	} else if o.req.echo {
		st.sendText(engine.DecodeBytes(o.req.gen.Prompt), o.echoLogprobs(st.scores), nil)
	} else {
		_ = st.rc.SetWriteDeadline(o.s.writeDeadline())
		o.c.Writer.WriteHeaderNow()
		st.failed = st.rc.Flush() != nil
	}
}

// step sends one generated token: its text (possibly empty while held back),
// its log-probabilities and its trace.
func (st *oaiStream) step(step *engine.Step) {
	if st.o.endsTurn(step) {
		return // the reply's end: finish_reason says so
	}
	text := st.text.push(step.Text)
	var ext any
	if st.o.req.traced {
		ext = st.o.tokens.stepExtension(step)
	}
	if st.o.req.chat {
		choice := oaiChatChoice{Delta: &oaiMessage{Content: &text}, Nielsgpt: ext}
		if st.o.req.logprobs {
			choice.Logprobs = &oaiChatLogprobs{Content: st.o.tokens.chatLogprobs([]*engine.Step{step})}
		}
		st.send(st.o.response(st.object, choice))
		return
	}
	var lp *oaiLegacyLogprobs
	if st.o.req.logprobs {
		lp = &oaiLegacyLogprobs{}
		offset := st.text.emitted + len(st.text.pending) - len(step.Text)
		if st.o.req.echo {
			offset += len(st.o.req.gen.Prompt)
		}
		lp.addSteps(st.o.tokens, []*engine.Step{step}, offset)
	}
	st.sendText(text, lp, ext)
}

func (st *oaiStream) sendText(text string, lp *oaiLegacyLogprobs, ext any) {
	st.send(st.o.response(st.object, oaiTextChoice{Text: text, Logprobs: lp, Nielsgpt: ext}))
}

// end sends what the text stream still holds, the finish reason, the usage
// and [DONE]; or, when the generation failed, an error in OpenAI's shape.
func (st *oaiStream) end(result *engine.Result, genErr error) {
	o := st.o
	switch {
	case st.failed || (genErr != nil && o.c.Request.Context().Err() != nil && o.s.baseCtx.Err() == nil):
		return // the client is gone
	case genErr != nil:
		code, message := "engine_error", "Generation failed"
		if o.s.baseCtx.Err() != nil {
			code, message = "shutting_down", "Server is shutting down"
		} else {
			o.s.log.Error("completion failed", "error", genErr)
		}
		o.c.Set(ctxErrorCode, code)
		st.send(openAIErrorBody{Error: openAIError{Message: message, Type: "server_error", Code: &code}})
		return
	}
	reason := finishReason(result)
	rest := st.text.rest(result.Generated)
	if o.req.chat {
		choice := oaiChatChoice{Delta: &oaiMessage{}, FinishReason: &reason}
		if rest != "" {
			choice.Delta.Content = &rest
		}
		st.send(o.response(st.object, choice))
	} else {
		st.send(o.response(st.object, oaiTextChoice{Text: rest, FinishReason: &reason}))
	}
	if o.req.includeUsage {
		usage := o.usage(result)
		body := o.response(st.object)
		body.Usage = &usage
		st.send(body)
	}
	st.write([]byte("data: [DONE]\n\n"))
}

func (st *oaiStream) send(v any) {
	payload, err := json.Marshal(v)
	if err != nil { // only non-finite floats could do this; they are clamped
		st.o.s.log.Error("encoding a chunk", "error", err)
		st.failed = true
		return
	}
	st.buf = append(append(append(st.buf[:0], "data: "...), payload...), "\n\n"...)
	st.write(st.buf)
}

func (st *oaiStream) write(b []byte) {
	if st.failed {
		return
	}
	if err := st.o.s.writeEvent(st.o.c, st.rc, b); err != nil {
		st.failed = true
	}
}

// errClientGone ends a generation whose client stopped reading.
var errClientGone = errors.New("the client stopped reading")
