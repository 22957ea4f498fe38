package server

// Turning a model's tokens into OpenAI's text deltas. Each token adds its
// bytes to the text (one byte for generation 1, a piece's for generation 2).
// A delta must be valid UTF-8 (it travels as a JSON string) and must never
// contain a stop sequence or a piece of one that the generation will cut. So
// new bytes wait while they could still be the start of a stop sequence or of
// a multi-byte character; everything before that goes out at once.

import (
	"bytes"
	"unicode/utf8"

	"nielsgpt/engine"
)

// textStream holds back what cannot be sent yet. emitted counts the raw
// bytes already sent, which are always a prefix of the final generated text.
type textStream struct {
	stops   [][]byte
	pending []byte
	emitted int
}

func newTextStream(stops [][]byte) *textStream { return &textStream{stops: stops} }

// push takes the next token's bytes and returns the text that can be sent.
func (t *textStream) push(b []byte) string {
	t.pending = append(t.pending, b...)
	keep := max(t.stopPrefix(), engine.PendingUTF8(t.pending))
	ready := t.pending[:len(t.pending)-keep]
	if len(ready) == 0 {
		return ""
	}
	out := engine.DecodeBytes(ready)
	t.emitted += len(ready)
	t.pending = append(t.pending[:0], t.pending[len(ready):]...)
	return out
}

// rest is what remains to send once the generation has ended with generated
// (already cut before any stop sequence).
func (t *textStream) rest(generated []byte) string {
	if t.emitted >= len(generated) {
		return ""
	}
	return engine.DecodeBytes(generated[t.emitted:])
}

// stopPrefix is how many bytes at the end of pending must wait: from the
// start of a complete stop sequence (the generation ends there and the
// text is cut), or else the longest end that begins a stop sequence.
func (t *textStream) stopPrefix() int {
	longest := 0
	for _, stop := range t.stops {
		if i := bytes.Index(t.pending, stop); i >= 0 {
			longest = max(longest, len(t.pending)-i)
			continue
		}
		for n := min(len(stop)-1, len(t.pending)); n > longest; n-- {
			if bytes.HasSuffix(t.pending, stop[:n]) {
				longest = n
				break
			}
		}
	}
	return longest
}

// tokenString names a token the way OpenAI names tokens: its bytes as text
// when they are UTF-8 on their own, otherwise "bytes:" and each byte as \xNN
// (a byte token >= 0x80, a byte piece). Every byte token gets a distinct
// name, so legacy top_logprobs (an object keyed by token) never merges two
// byte candidates.
func (t *tokenTable) tokenString(id int) string {
	b := t.tokenBytes(id)
	if utf8.Valid(b) {
		return string(b)
	}
	const hexDigits = "0123456789abcdef"
	out := []byte("bytes:")
	for _, c := range b {
		out = append(out, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
	}
	return string(out)
}

// tokenBytes is the token's bytes (nil for an id outside the vocabulary).
func (t *tokenTable) tokenBytes(id int) []byte {
	if id < 0 || id >= len(t.bytes) {
		return nil
	}
	return t.bytes[id]
}
