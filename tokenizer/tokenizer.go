// Package tokenizer turns text into niels-gpt's token ids and back, for both generations
// (docs/ARCHITECTURE.md): Bytes, where each UTF-8 byte is a token (generation 1), and
// SentencePiece, our own implementation of SentencePiece's unigram model (generation 2),
// read from a .model file or from a Vocab. SentencePiece's encoding and decoding equal
// sentencepiece 0.1.97's EncodeAsIds and DecodeIds; the conformance tests hold them to
// goldens that sentencepiece wrote (scripts/make_spm_fixture.py).
//
// The package imports nothing of ours, so the converter, the engine and the server can all
// use it.
package tokenizer

import (
	"fmt"
	"unicode/utf8"
)

// Tokenizer is what the rest of the server needs from either generation. Implementations
// are immutable after construction and safe for concurrent use.
type Tokenizer interface {
	// Encode turns text into ids. No BOS or EOS is added.
	Encode(text string) []int
	// Decode turns ids back into text. Ids outside [0, VocabSize()) are skipped. Text is
	// not the sum of its tokens' texts: SentencePiece drops the space of a leading U+2581
	// and a byte piece alone is rarely a character, so to stream a reply, decode all of
	// it so far and send what was added.
	Decode(ids []int) string
	// VocabSize is the number of ids.
	VocabSize() int
	// Piece is the vocabulary entry of an id as stored ("" if out of range); for
	// SentencePiece it keeps U+2581 for spaces and the <0xNN> spelling of byte pieces.
	Piece(id int) string
	// Display is the id shown to a person: printable text as itself, bytes as \xNN.
	Display(id int) string
	// TokenBytes is the id's share of the text, before decoding: a byte for a byte token,
	// the piece's text with spaces for U+2581 otherwise, nothing for a control piece (nil
	// if out of range). What OpenAI's logprobs call a token's bytes.
	TokenBytes(id int) []byte
}

// Bytes is generation 1's tokenizer: each UTF-8 byte of the text is one token, ids 0..255.
// Decode replaces each maximal invalid subpart with one U+FFFD, as Python's
// errors="replace" does (engine.DecodeBytes does the same for the engine today).
type Bytes struct{}

var _ Tokenizer = Bytes{}

func (Bytes) Encode(text string) []int {
	ids := make([]int, len(text))
	for i := 0; i < len(text); i++ {
		ids[i] = int(text[i])
	}
	return ids
}

func (Bytes) Decode(ids []int) string {
	b := make([]byte, 0, len(ids))
	for _, id := range ids {
		if id >= 0 && id < 256 {
			b = append(b, byte(id))
		}
	}
	out := make([]byte, 0, len(b))
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n <= 1 {
			n = maximalSubpart(b)
			out = append(out, replacementChar...)
		} else {
			out = append(out, b[:n]...)
		}
		b = b[n:]
	}
	return string(out)
}

// maximalSubpart is how many bytes of b, which starts with an invalid sequence, form the
// longest prefix that some well-formed sequence could still start with (at least 1).
// utf8.FullRune is false exactly for such an incomplete but so far valid prefix.
func maximalSubpart(b []byte) int {
	n := 1
	for n < len(b) && !utf8.FullRune(b[:n+1]) {
		n++
	}
	return n
}

func (Bytes) VocabSize() int { return 256 }

func (Bytes) TokenBytes(id int) []byte {
	if id < 0 || id >= 256 {
		return nil
	}
	return []byte{byte(id)}
}

func (Bytes) Piece(id int) string {
	if id < 0 || id >= 256 {
		return ""
	}
	return string([]byte{byte(id)})
}

// Display shows printable ASCII as itself and any other byte as \xNN.
func (Bytes) Display(id int) string {
	if id < 0 || id >= 256 {
		return ""
	}
	if id >= 0x20 && id < 0x7f {
		return string(rune(id))
	}
	return fmt.Sprintf("\\x%02x", id)
}
