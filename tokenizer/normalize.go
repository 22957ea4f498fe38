package tokenizer

// The normaliser: a model's precompiled charsmap (its rules, e.g. NFKC plus nmt's
// whitespace and control-character rules, compiled into a trie of byte strings) applied by
// longest match, then sentencepiece's whitespace handling.
//
// The charsmap's layout is sentencepiece's: a little-endian uint32 giving the trie's size
// in bytes, the trie (a darts-clone double array of little-endian uint32 units), then the
// replacement strings, each NUL-terminated; a key's value is the offset of its replacement.

import (
	"bytes"
	"encoding/binary"
	"strings"
)

// spaceSymbol stands for a space inside pieces (U+2581 LOWER ONE EIGHTH BLOCK).
const spaceSymbol = "\u2581"

// replacementChar is what a byte that is not UTF-8 normalises to.
const replacementChar = "\uFFFD"

// maxReplacementBytes caps one replacement string: a charsmap rule turns one key into at
// most this many bytes, so normalising cannot blow text up more than that. nmt_nfkc's
// longest is 33 bytes (U+FDFA spelled out).
const maxReplacementBytes = 256

// maxCharsmapResults mirrors sentencepiece, which keeps the first 32 prefix matches of a
// charsmap lookup and takes the longest of those. No real rule set comes near it.
const maxCharsmapResults = 32

// charsmap is a parsed precompiled charsmap.
type charsmap struct {
	units       []uint32 // the double array
	replacement string   // the NUL-terminated replacement strings
}

// parseCharsmap splits a charsmap blob. An empty blob is no charsmap (nil, nil).
func parseCharsmap(blob []byte) (*charsmap, error) {
	if len(blob) == 0 {
		return nil, nil
	}
	if len(blob) <= 4 {
		return nil, modelErr("charsmap of %d bytes has no trie", len(blob))
	}
	size := binary.LittleEndian.Uint32(blob)
	rest := blob[4:]
	if uint64(size) > uint64(len(rest)) || size%4 != 0 {
		return nil, modelErr("charsmap trie size %d does not fit its %d bytes", size, len(rest))
	}
	for strs := rest[size:]; len(strs) > 0; {
		n := bytes.IndexByte(strs, 0)
		if n < 0 {
			n = len(strs)
		}
		if n > maxReplacementBytes {
			return nil, modelErr("a charsmap replacement of %d bytes is over the limit %d", n, maxReplacementBytes)
		}
		strs = strs[min(n+1, len(strs)):]
	}
	units := make([]uint32, size/4)
	for i := range units {
		units[i] = binary.LittleEndian.Uint32(rest[4*i:])
	}
	return &charsmap{units: units, replacement: string(rest[size:])}, nil
}

// The fields of a double-array unit (darts-clone's documented layout): bit 8 says the node
// has a value (held by the child reached with label 0); bits 10..30 are the offset to the
// children, scaled by 256 when bit 9 is set; a leaf unit has bit 31 set and the value in
// the low 31 bits, so it never equals a label byte.
func unitHasLeaf(u uint32) bool  { return u>>8&1 == 1 }
func unitValue(u uint32) uint32  { return u & (1<<31 - 1) }
func unitLabel(u uint32) uint32  { return u & (1<<31 | 0xFF) }
func unitOffset(u uint32) uint32 { return u >> 10 << ((u & (1 << 9)) >> 6) }

// longestMatch finds the longest key that s starts with (among the first
// maxCharsmapResults prefixes found) and returns its replacement and length; n is 0 when
// no key matches. A trie or value that points outside the blob ends the search instead of
// reading past it.
func (c *charsmap) longestMatch(s string) (repl string, n int) {
	if len(c.units) == 0 {
		return "", 0
	}
	pos := unitOffset(c.units[0])
	found := 0
	value := uint32(0)
	for i := 0; i < len(s); i++ {
		pos ^= uint32(s[i])
		if uint64(pos) >= uint64(len(c.units)) {
			break
		}
		u := c.units[pos]
		if unitLabel(u) != uint32(s[i]) {
			break
		}
		pos ^= unitOffset(u)
		if !unitHasLeaf(u) {
			continue
		}
		if uint64(pos) >= uint64(len(c.units)) {
			break
		}
		if found < maxCharsmapResults {
			n, value = i+1, unitValue(c.units[pos])
		}
		found++
	}
	if n == 0 || uint64(value) >= uint64(len(c.replacement)) {
		return "", 0
	}
	repl = c.replacement[value:]
	if end := strings.IndexByte(repl, 0); end >= 0 {
		repl = repl[:end]
	}
	return repl, n
}

// normalizePrefix normalises the text s starts with: a user-defined piece passes through
// as it is, then the longest charsmap rule applies, else one character is copied (a byte
// that is not UTF-8 becomes U+FFFD). It returns the output and the input bytes consumed.
func (m *SentencePiece) normalizePrefix(s string) (string, int) {
	if n := m.userDefined.longestPrefix(s); n > 0 {
		return s[:n], n
	}
	if m.charsmap != nil {
		if repl, n := m.charsmap.longestMatch(s); n > 0 {
			return repl, n
		}
	}
	n := validUTF8Prefix(s)
	if n == 0 {
		return replacementChar, 1
	}
	return s[:n], n
}

// normalize is sentencepiece's Normalizer::Normalize without the alignment: text through
// normalizePrefix piece by piece; with RemoveExtraWhitespaces, input that normalises to a
// space is dropped at the start, a space after a space is dropped, and trailing spaces go;
// with AddDummyPrefix a space is put in front; with EscapeWhitespaces spaces become U+2581.
func (m *SentencePiece) normalize(s string) []byte {
	v := &m.vocab
	if v.RemoveExtraWhitespaces {
		for len(s) > 0 {
			out, n := m.normalizePrefix(s)
			if out != " " {
				break
			}
			s = s[n:]
		}
	}
	if s == "" {
		return nil
	}
	space := " "
	if v.EscapeWhitespaces {
		space = spaceSymbol
	}
	out := make([]byte, 0, len(s)+len(s)/2+len(space))
	if v.AddDummyPrefix {
		out = append(out, space...)
	}
	prevSpace := v.RemoveExtraWhitespaces
	for len(s) > 0 {
		piece, n := m.normalizePrefix(s)
		s = s[n:]
		if prevSpace {
			piece = strings.TrimLeft(piece, " ")
		}
		if piece != "" {
			for i := 0; i < len(piece); i++ {
				if piece[i] == ' ' {
					out = append(out, space...)
				} else {
					out = append(out, piece[i])
				}
			}
			prevSpace = piece[len(piece)-1] == ' '
		}
		if !v.RemoveExtraWhitespaces {
			prevSpace = false
		}
	}
	if v.RemoveExtraWhitespaces {
		for len(out) >= len(space) && string(out[len(out)-len(space):]) == space {
			out = out[:len(out)-len(space)]
		}
	}
	return out
}
