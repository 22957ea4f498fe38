package server

// The endpoints of docs/API.md. Each handler binds and validates, takes a
// generation slot, calls the engine and writes the answer; the streaming and
// the encoding live in stream.go and encode.go.

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"nielsgpt/engine"
	"nielsgpt/metrics"
)

func (s *Server) health(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"ok": true, "model_ready": s.currentEngine() != nil})
}

// livez answers while the process can answer at all: an orchestrator that
// gets no answer restarts it. It depends on nothing (not the model, not
// Redis), so a slow model load or a Redis outage never restarts a replica.
func (s *Server) livez(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"ok": true})
}

// readyz says whether this replica should get traffic: 200 once the model
// is loaded and until shutdown begins, 503 otherwise, so a load balancer
// sends nothing to a replica still loading and stops sending to one that
// is draining. Redis is not consulted: without it a replica still serves.
func (s *Server) readyz(c *gin.Context) {
	modelReady, draining := s.currentEngine() != nil, s.draining.Load()
	status := http.StatusOK
	if !modelReady || draining {
		status = http.StatusServiceUnavailable
	}
	c.JSON(status, gin.H{"ready": status == http.StatusOK, "model_ready": modelReady, "draining": draining})
}

func (s *Server) chatStream(c *gin.Context) {
	req, eng, release, ok := admit(s, c, parseChatRequest, func(r engine.GenerateRequest) []byte { return engine.FormatTranscript(r.Messages) })
	if !ok {
		return
	}
	defer release()
	s.streamChat(c, eng, req)
}

func (s *Server) fullAttn(c *gin.Context) {
	req, eng, release, ok := admit(s, c, parseFullAttnRequest, func(r fullAttnRequest) []byte { return engine.FormatTranscript(r.Messages) })
	if !ok {
		return
	}
	defer release()

	full, err := eng.FullAttention(c.Request.Context(), req.FullAttnRequest)
	if err != nil {
		s.engineFailed(c, err, "Attention inspection failed")
		return
	}
	// Generated tokens are not counted here: the engine may stop before
	// max_new_tokens at a stop tag and does not say where, and a guess
	// would skew nielsgpt_generated_tokens_total.
	t := len(full.TokenIDs)
	out := s.currentTokens().appendFullAttn(make([]byte, 0, 64+t*t*8), req.Layers[0], req.head, full)
	_ = http.NewResponseController(c.Writer).SetWriteDeadline(s.writeDeadline())
	c.Data(http.StatusOK, "application/json; charset=utf-8", out)
}

func (s *Server) score(c *gin.Context) {
	req, eng, release, ok := admit(s, c, parseScoreRequest, func(r engine.ScoreRequest) []byte {
		if len(r.Messages) > 0 {
			return engine.FormatConversation(r.Messages)
		}
		return r.Text
	})
	if !ok {
		return
	}
	defer release()
	scores, err := eng.Score(c.Request.Context(), req)
	if err != nil {
		s.engineFailed(c, err, "Scoring failed")
		return
	}
	// Per position: the fields, up to 20 candidates of about 80 bytes.
	out := s.currentTokens().appendScores(make([]byte, 0, 256+len(scores.Positions)*(120+req.TopN*80)), scores)
	_ = http.NewResponseController(c.Writer).SetWriteDeadline(s.writeDeadline())
	c.Data(http.StatusOK, "application/json; charset=utf-8", out)
}

// engineFailed answers an engine call that failed before anything was
// written: 503 busy when the KV pool had no room, 503 shutting_down when
// SHUTDOWN_TIMEOUT cut the work short, nothing when the client is gone, and
// otherwise a 500 with message (the cause goes to the log, not the client).
func (s *Server) engineFailed(c *gin.Context, err error, message string) {
	switch {
	case errors.Is(err, engine.ErrKVFull):
		s.rejectBusy(c)
	case errors.Is(err, engine.ErrEmptyPrompt):
		// Only the model's tokenizer can tell (a text of nothing but
		// whitespace, for generation 2): bad input, not a failure.
		s.writeValidation(c, invalidf("%s (a text of only whitespace has no tokens)", err))
	case s.baseCtx.Err() != nil:
		writeError(c, s, http.StatusServiceUnavailable, "shutting_down", "Server is shutting down")
	case c.Request.Context().Err() != nil:
		// the client is gone: nobody to answer
	default:
		s.log.Error("engine call failed", "route", c.FullPath(), "error", err)
		writeError(c, s, http.StatusInternalServerError, "engine_error", message)
	}
}

// admit is what every POST endpoint does before the engine: read and
// validate the body (naming the fields it ignored in the request's log
// line), check the transcript's size, and take a generation slot. When ok is
// false the answer has been written; otherwise release frees the slot.
func admit[R any](s *Server, c *gin.Context,
	parse func([]byte, limits) (R, []string, error), prompt func(R) []byte,
) (req R, eng Engine, release func(), ok bool) {
	eng = s.currentEngine()
	body, ok := s.readBody(c)
	if !ok {
		return req, nil, nil, false
	}
	req, ignored, err := parse(body, limits{model: eng.Config(), maxNewTokens: s.cfg.MaxNewTokens, windowHop: s.cfg.WindowHop,
		maxAttentionFloats: s.cfg.MaxAttentionFloats})
	if err != nil {
		s.writeValidation(c, err)
		return req, nil, nil, false
	}
	if len(ignored) > 0 {
		c.Set(ctxIgnoredFields, ignored)
	}
	if !s.checkPromptSize(c, len(prompt(req))) {
		return req, nil, nil, false
	}
	release, ok = s.acquireSlot()
	if !ok {
		s.rejectBusy(c)
		return req, nil, nil, false
	}
	s.metrics.AddPromptTokens(len(prompt(req)))
	return req, eng, release, true
}

// readBody reads the request body within MAX_BODY_BYTES and READ_TIMEOUT.
// A declared length over the limit is refused before a byte is read.
func (s *Server) readBody(c *gin.Context) ([]byte, bool) {
	limit := s.cfg.MaxBodyBytes
	if c.Request.ContentLength > limit {
		s.rejectBodyTooLarge(c)
		return nil, false
	}
	if ct := strings.ToLower(c.ContentType()); ct != "" && !isJSONType(ct) {
		s.writeValidation(c, invalidf("Content-Type must be application/json, not %q", clip(ct, 100)))
		return nil, false
	}
	rc := http.NewResponseController(c.Writer)
	_ = rc.SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, limit))
	// Clear the deadline: net/http keeps reading the connection in the
	// background to notice a client leaving, and an expired deadline there
	// would cancel a stream that is merely long.
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			s.rejectBodyTooLarge(c)
			return nil, false
		}
		s.metrics.Reject(metrics.RejectInvalid)
		writeError(c, s, http.StatusBadRequest, "bad_request", "Could not read the request body")
		return nil, false
	}
	return body, true
}

// isJSONType accepts what the original accepted: application/json and any
// application/*+json. A missing Content-Type is read as JSON too.
func isJSONType(ct string) bool {
	return ct == "application/json" || strings.HasPrefix(ct, "application/") && strings.HasSuffix(ct, "+json")
}

// clip shortens client-supplied text before it is echoed in a message.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// rejectBodyTooLarge answers 413 and closes the connection once the rest of
// the body has been drained (drainRefusedBody): the connection cannot carry
// another request when the body was not read to its end.
func (s *Server) rejectBodyTooLarge(c *gin.Context) {
	c.Header("Connection", "close")
	s.reject(c, http.StatusRequestEntityTooLarge, metrics.RejectBodyTooLarge,
		fmt.Sprintf("Request body too large (max %d bytes)", s.cfg.MaxBodyBytes))
	s.drainRefusedBody(c)
}

// How much of a refused body is read and thrown away, at most, so that its
// client can read the 413 (drainRefusedBody).
const (
	drainMaxBytes = 64 << 20
	drainMaxTime  = 10 * time.Second
)

// drainRefusedBody sends the 413 now, then reads and discards what is left
// of the body, up to drainMaxBytes and for at most drainMaxTime (or
// READ_TIMEOUT when shorter), before the connection closes.
//
// Many clients (Python's http.client and requests among them) write the
// whole body before they read anything. Closing a connection while its
// body is still arriving makes the kernel answer with a reset, and on the
// client's side a reset discards the 413 waiting to be read: the client
// reports "connection reset" instead of the answer. Reading the rest lets
// it finish writing and find the 413. A body declared longer than the bound
// is not drained (its client would be reset anyway, after costing us the
// bound), nor is one whose client waits for "100 Continue" before sending:
// it has the 413 instead and sends nothing. Reading stops at the bounds
// whatever the client sends, so a refused body costs at most drainMaxBytes
// of reading, never memory.
func (s *Server) drainRefusedBody(c *gin.Context) {
	r := c.Request
	if r.ContentLength > drainMaxBytes || strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		return
	}
	rc := http.NewResponseController(unwrapWriter(c.Writer))
	if err := rc.Flush(); err != nil {
		return // the client is gone
	}
	_ = rc.SetReadDeadline(time.Now().Add(min(drainMaxTime, s.cfg.ReadTimeout)))
	_, _ = io.CopyN(io.Discard, r.Body, drainMaxBytes)
}

// checkPromptSize applies MAX_PROMPT_BYTES to the formatted transcript.
func (s *Server) checkPromptSize(c *gin.Context, n int) bool {
	if n > s.cfg.MaxPromptBytes {
		s.reject(c, http.StatusRequestEntityTooLarge, metrics.RejectPromptTooLarge,
			fmt.Sprintf("Prompt too large: %d bytes (max %d)", n, s.cfg.MaxPromptBytes))
		return false
	}
	return true
}

func (s *Server) rejectBusy(c *gin.Context) {
	c.Header("Retry-After", "1")
	s.reject(c, http.StatusServiceUnavailable, metrics.RejectBusy, "Server busy, please retry")
}
