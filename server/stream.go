package server

// SSE streaming for POST /chat/stream.
//
// The engine runs on its own goroutine and hands each step, already encoded,
// through a short queue to the handler goroutine, which alone writes to the
// client. The queue decouples the two for a moment of network slowness but is
// small, so a slow reader costs a bounded amount of memory: once it is full
// the engine waits, and every write carries a deadline, so a client that
// stops reading fails its write, which cancels the generation within one
// step. The handler waits for the engine goroutine before returning, so the
// generation slot is only freed once the engine has really stopped.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"nielsgpt/engine"
)

// streamQueue is how many encoded steps may wait for the client.
const streamQueue = 8

// eventBuffers recycles the per-step event buffers; a trace event for the
// deployed model is around 12 KiB.
var eventBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, 16<<10)
	return &b
}}

func (s *Server) streamChat(c *gin.Context, eng Engine, req engine.GenerateRequest) {
	start := time.Now()
	s.metrics.StreamStarted()
	defer s.metrics.StreamEnded()

	// Flush through the net/http writer itself: gin's Flush drops the error,
	// and a failed flush is how a vanished client shows itself.
	rc := http.NewResponseController(unwrapWriter(c.Writer))
	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	c.Status(http.StatusOK)
	_ = rc.SetWriteDeadline(s.writeDeadline())
	c.Writer.WriteHeaderNow()
	if err := rc.Flush(); err != nil {
		return
	}

	ctx, cancel := context.WithCancel(c.Request.Context())
	defer cancel()
	events := make(chan *[]byte, streamQueue)
	var (
		result *engine.Result
		genErr error
	)
	go func() {
		defer close(events)
		defer func() {
			if p := recover(); p != nil {
				genErr = fmt.Errorf("engine panic: %v", p)
				s.log.Error("panic in engine", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			}
		}()
		result, genErr = eng.Generate(ctx, req, func(step *engine.Step) error {
			buf := eventBuffers.Get().(*[]byte)
			*buf = appendTraceEvent(appendTokenEvent((*buf)[:0], step), step)
			select {
			case events <- buf:
				return nil
			case <-ctx.Done():
				eventBuffers.Put(buf)
				return ctx.Err()
			}
		})
	}()

	written, failed := 0, false
	var lastToken time.Time
	for buf := range events {
		if !failed {
			if err := s.writeEvent(c, rc, *buf); err != nil {
				failed = true
				cancel() // stop the engine at its next step; keep draining so it is never blocked
			} else {
				now := time.Now()
				if written == 0 {
					s.metrics.ObserveTimeToFirstToken(now.Sub(start))
				} else {
					s.metrics.ObserveInterToken(now.Sub(lastToken))
				}
				lastToken = now
				written++
			}
		}
		eventBuffers.Put(buf)
	}
	s.metrics.AddGeneratedTokens(written)
	c.Set(ctxTokens, written)

	// Events are read after close(events), which orders them after the
	// engine goroutine's writes to result and genErr.
	var final []byte
	switch {
	case failed:
		return
	case genErr == nil && result != nil:
		final = appendJSONEvent(nil, "done", struct {
			Reply string `json:"reply"`
		}{result.Reply})
	case s.baseCtx.Err() != nil:
		final = appendJSONEvent(nil, "error", errorBody{Error: "Server is shutting down", Code: "shutting_down"})
	case c.Request.Context().Err() != nil:
		return // the client left; there is nobody to tell
	default:
		s.log.Error("generation failed", "error", genErr)
		c.Set(ctxErrorCode, "engine_error")
		final = appendJSONEvent(nil, "error", errorBody{Error: "Generation failed", Code: "engine_error"})
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
