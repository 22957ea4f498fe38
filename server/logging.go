package server

// The process's structured logger: one format for the access log and the
// lifecycle messages, so a log shipper parses every line the same way.

import (
	"io"
	"log/slog"
)

// NewLogger writes JSON lines (format "json") or logfmt-style text ("text")
// to w.
func NewLogger(format string, w io.Writer) *slog.Logger {
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, nil))
	}
	return slog.New(slog.NewJSONHandler(w, nil))
}
