package server

// POST /inspect/attention: every head of the chosen layers over the window,
// as JSON or as a NumPy .npz archive. The answer can be large (docs/API.md
// §17.2), so it is bounded by MAX_ATTENTION_FLOATS before any work and
// again once the window is known, and written in pieces, each within
// WRITE_TIMEOUT, rather than built whole in memory.

import (
	"io"
	"net/http"

	"github.com/gin-gonic/gin"

	"nielsgpt/engine"
)

func (s *Server) attention(c *gin.Context) {
	npz := false
	switch format := c.Query("format"); format {
	case "", "json":
	case "npz":
		npz = true
	default:
		s.writeValidation(c, invalidParam("format", `format must be "json" or "npz", not %q`, clip(format, 20)))
		return
	}
	req, eng, release, ok := admit(s, c, parseAttentionRequest, func(r engine.FullAttnRequest) []byte { return engine.FormatTranscript(r.Messages) })
	if !ok {
		return
	}
	defer release()

	answer, err := eng.FullAttention(c.Request.Context(), req)
	if err != nil {
		s.engineFailed(c, err, "Attention inspection failed")
		return
	}
	heads := eng.Config().Heads
	// A tokenizer can, rarely, make more tokens than the bytes the first
	// check counted.
	if err := checkAttentionSize(len(req.Layers), heads, len(answer.TokenIDs), s.cfg.MaxAttentionFloats); err != nil {
		s.writeValidation(c, err)
		return
	}
	if got, err := attentionShape(answer.Attn, len(req.Layers), len(answer.TokenIDs)); err != nil || got != heads {
		s.log.Error("attention answer has the wrong shape", "error", err, "heads", got)
		writeError(c, s, http.StatusInternalServerError, "engine_error", "Attention inspection failed")
		return
	}

	// A write that fails needs no answer: the status is out, and a client
	// that stopped reading has lost only its own answer.
	w := &deadlineWriter{w: c.Writer, rc: http.NewResponseController(c.Writer), s: s}
	if npz {
		c.Header("Content-Type", "application/zip")
		c.Header("Content-Disposition", `attachment; filename="attention.npz"`)
		c.Status(http.StatusOK)
		_ = writeNPZ(w, req.Layers, answer.TokenIDs, answer.Attn)
		return
	}
	c.Header("Content-Type", "application/json; charset=utf-8")
	c.Status(http.StatusOK)
	_ = s.currentTokens().writeAttentionJSON(w, req.Layers, answer.TokenIDs, answer.Attn)
}

// deadlineWriter gives every write of a long answer its own WRITE_TIMEOUT,
// as each event of a stream has: the answer may take longer than one
// timeout in all, but a client that stops reading is dropped within one.
type deadlineWriter struct {
	w  io.Writer
	rc *http.ResponseController
	s  *Server
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	_ = d.rc.SetWriteDeadline(d.s.writeDeadline())
	return d.w.Write(p)
}
