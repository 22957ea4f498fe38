package main

// Sanitising for nielsgpt chat: model output and echoed input are shown with
// control characters made visible, so neither can drive the terminal.

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"nielsgpt/engine"
)

// sanitize shows control characters (other than newline and tab) as \xNN or
// \uNNNN, so that model output or echoed input cannot drive the terminal.
func sanitize(s string) string {
	if !utf8.ValidString(s) {
		s = engine.DecodeBytes([]byte(s)) // typed input may be any bytes
	}
	clean := true
	for _, r := range s {
		if isUnsafeControl(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var sb strings.Builder
	for _, r := range s {
		switch {
		case !isUnsafeControl(r):
			sb.WriteRune(r)
		case r < 0x100:
			fmt.Fprintf(&sb, "\\x%02x", r)
		default:
			fmt.Fprintf(&sb, "\\u%04x", r)
		}
	}
	return sb.String()
}

func isUnsafeControl(r rune) bool {
	if r == '\n' || r == '\t' {
		return false
	}
	// Cc covers C0, DEL and C1; the bidi controls can reorder what follows.
	return unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Bidi_Control, r)
}
