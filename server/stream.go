package server

// SSE streaming for POST /chat/stream.
//
// The engine calls back on the handler's own goroutine for each step, so
// the handler encodes and writes the step right there: no second goroutine,
// no queue between them, and no panic can escape on a goroutine the
// middleware does not guard. The engine keeps at most one step computed
// ahead of the writer (docs/ARCHITECTURE.md), so a slow reader costs a
// bounded amount of memory and only slows itself. Every write carries a
// deadline: a client that stops reading fails its write, the callback
// returns the error, and the engine drops the sequence at its next step.

import (
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"nielsgpt/engine"
)

func (s *Server) streamChat(c *gin.Context, eng Engine, req engine.GenerateRequest) {
	start := time.Now()
	s.metrics.StreamStarted()
	defer s.metrics.StreamEnded()

	// Flush through the net/http writer itself: gin's Flush drops the error,
	// and a failed flush is how a vanished client shows itself.
	rc := http.NewResponseController(unwrapWriter(c.Writer))
	// The stream's headers go out with its first event: until then the
	// engine may still turn the request away (engine.ErrKVFull; docs/API.md §10.4),
	// and that is a 503, not a stream.
	started := false
	start200 := func() {
		started = true
		h := c.Writer.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		// No chunked framing: net/http writes a chunk's header, body and
		// trailer through a 4 KiB buffer, which cut each step's events (~12 KiB
		// at the deployed size) into three write(2)s and three wake-ups of the
		// client. Unframed, each step is one write. The stream then ends when
		// the connection closes after `done`, as the Server-Sent Events
		// recommendation suggests for HTTP/1.1; the next request opens a new
		// connection (HTTP/2 frames as before).
		h.Set("Transfer-Encoding", "identity")
		c.Status(http.StatusOK)
	}

	// One buffer serves every step of this stream: a trace event for the
	// deployed model is around 12 KiB, and each is written before the next
	// is encoded.
	buf := make([]byte, 0, 16<<10)
	tokens := s.currentTokens()
	written, failed := 0, false
	var lastToken time.Time
	pace := newPacer(s.cfg.StreamPace)
	defer pace.stop()
	result, genErr := eng.Generate(c.Request.Context(), req, func(step *engine.Step) error {
		if !started {
			start200()
		}
		buf = tokens.appendTraceEvent(tokens.appendTokenEvent(buf[:0], step), step)
		if err := pace.wait(c.Request.Context()); err != nil {
			return err // the client left (or shutdown) during the pause
		}
		if err := s.writeEvent(c, rc, buf); err != nil {
			failed = true
			return err // the engine stops this sequence at its next step
		}
		pace.sent()
		now := time.Now()
		if written == 0 {
			s.metrics.ObserveTimeToFirstToken(now.Sub(start))
		} else {
			s.metrics.ObserveInterToken(now.Sub(lastToken))
		}
		lastToken = now
		written++
		return nil
	})
	s.metrics.AddGeneratedTokens(written)
	c.Set(ctxTokens, written)

	if !started && errors.Is(genErr, engine.ErrKVFull) {
		s.rejectBusy(c)
		return
	}
	var final []byte
	switch {
	case failed:
		return
	case genErr == nil && result != nil:
		final = appendJSONEvent(buf[:0], "done", struct {
			Reply string `json:"reply"`
		}{result.Reply})
	case s.baseCtx.Err() != nil:
		final = appendJSONEvent(buf[:0], "error", errorBody{Error: "Server is shutting down", Code: "shutting_down"})
	case c.Request.Context().Err() != nil:
		return // the client left; there is nobody to tell
	default:
		s.log.Error("generation failed", "error", genErr)
		c.Set(ctxErrorCode, "engine_error")
		final = appendJSONEvent(buf[:0], "error", errorBody{Error: "Generation failed", Code: "engine_error"})
	}
	if !started {
		start200()
	}
	if genErr == nil && pace.wait(c.Request.Context()) != nil {
		return // the client left before `done`
	}
	_ = s.writeEvent(c, rc, final)
}

// writeEvent writes one or more complete events and pushes them to the client
// before returning, within WRITE_TIMEOUT.
func (s *Server) writeEvent(c *gin.Context, rc *http.ResponseController, b []byte) error {
	if err := rc.SetWriteDeadline(s.writeDeadline()); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if _, err := c.Writer.Write(b); err != nil {
		return err
	}
	return rc.Flush()
}

// unwrapWriter peels gin's writer down to the one net/http gave us.
func unwrapWriter(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}
