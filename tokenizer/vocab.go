package tokenizer

import (
	"fmt"
	"unicode/utf8"
)

// PieceType is ModelProto.SentencePiece.Type; the values are the protobuf enum's (llama.cpp's
// GGUF token types use the same numbers).
type PieceType int32

const (
	PieceNormal      PieceType = 1 // an ordinary piece with a learned score
	PieceUnknown     PieceType = 2 // <unk>: exactly one per model
	PieceControl     PieceType = 3 // <s>, </s>: never produced by encoding, decoded as nothing
	PieceUserDefined PieceType = 4 // matched in the raw text before normalisation, never split
	PieceUnused      PieceType = 5 // kept in the vocabulary, never produced by encoding
	PieceByte        PieceType = 6 // <0xNN>: byte fallback
)

// Piece is one vocabulary entry.
type Piece struct {
	Text  string // the piece, with U+2581 standing for a space
	Score float32
	Type  PieceType
}

// Vocab is everything a SentencePiece model needs to encode and decode, and nothing from
// training: the pieces in id order, the precompiled charsmap and the normaliser's flags.
// It is what a .model file reduces to, and what a GGUF stores (see Export and FromVocab).
type Vocab struct {
	Pieces []Piece

	// ByteFallback spells characters outside the vocabulary as <0xNN> pieces instead of
	// <unk> (TrainerSpec.byte_fallback).
	ByteFallback bool
	// The TrainerSpec's special ids, for the engine's information: encoding itself finds
	// <unk> by its piece type. -1 means none.
	UnkID, BosID, EosID, PadID int
	// UnkSurface is what <unk> decodes to (TrainerSpec.unk_surface, default " ⁇ ").
	UnkSurface string

	// NormalizerName is informational (e.g. "nmt_nfkc"): the rules are all in Charsmap.
	NormalizerName string
	// Charsmap is NormalizerSpec.precompiled_charsmap: a little-endian uint32 size, a
	// double-array trie of that many bytes, then NUL-terminated replacement strings.
	// Empty means no rules (the identity normaliser).
	Charsmap []byte
	// The NormalizerSpec flags (proto2 defaults: all true).
	AddDummyPrefix         bool // prepend U+2581 to non-empty input
	RemoveExtraWhitespaces bool // drop leading and trailing spaces, collapse runs
	EscapeWhitespaces      bool // spaces become U+2581
}

// Check refuses vocabularies that sentencepiece would refuse to load, and those over this
// package's caps. It mirrors sentencepiece's own checks: non-empty pieces, no text twice
// among the pieces encoding can produce (normal, user-defined, unused) nor twice among the
// others, exactly one unknown piece, byte pieces only with byte fallback and spelled
// <0xNN>.
func (v *Vocab) Check() error {
	if len(v.Pieces) == 0 {
		return modelErr("no pieces")
	}
	if len(v.Pieces) > maxPieces {
		return modelErr("%d pieces exceeds the limit %d", len(v.Pieces), maxPieces)
	}
	if len(v.UnkSurface) > maxStringBytes || len(v.NormalizerName) > maxStringBytes {
		return modelErr("unk_surface or normalizer name over %d bytes", maxStringBytes)
	}
	if len(v.Charsmap) > maxCharsmap {
		return modelErr("charsmap of %d bytes exceeds the limit %d", len(v.Charsmap), maxCharsmap)
	}
	if _, err := parseCharsmap(v.Charsmap); err != nil {
		return err
	}
	encodable := make(map[string]struct{}, len(v.Pieces))
	reserved := make(map[string]struct{})
	unk := -1
	total := 0
	for id, p := range v.Pieces {
		if err := v.checkPiece(id, p); err != nil {
			return err
		}
		if total += len(p.Text); total > maxTotalPieceBytes {
			return modelErr("pieces hold more than %d bytes", maxTotalPieceBytes)
		}
		set := reserved
		if p.Type.encodable() {
			set = encodable
		}
		if _, dup := set[p.Text]; dup {
			return modelErr("piece %d %q is already defined", id, p.Text)
		}
		set[p.Text] = struct{}{}
		if p.Type == PieceUnknown {
			if unk >= 0 {
				return modelErr("pieces %d and %d are both unknown pieces", unk, id)
			}
			unk = id
		}
	}
	if unk < 0 {
		return modelErr("no unknown piece")
	}
	return nil
}

func (v *Vocab) checkPiece(id int, p Piece) error {
	if p.Text == "" {
		return modelErr("piece %d is empty", id)
	}
	if len(p.Text) > maxPieceBytes {
		return modelErr("piece %d is %d bytes, over the limit %d", id, len(p.Text), maxPieceBytes)
	}
	if p.Type < PieceNormal || p.Type > PieceByte {
		return modelErr("piece %d has unknown type %d", id, p.Type)
	}
	if p.Type == PieceByte {
		if !v.ByteFallback {
			return modelErr("byte piece %d %q without byte_fallback", id, p.Text)
		}
		if _, ok := pieceByte(p.Text); !ok {
			return modelErr("byte piece %d is %q, not <0xNN>", id, p.Text)
		}
	}
	return nil
}

// encodable says whether encoding can produce the piece from text: these are the pieces
// sentencepiece keeps in its matching trie; the others are only reached by id.
func (t PieceType) encodable() bool {
	return t == PieceNormal || t == PieceUserDefined || t == PieceUnused
}

// bytePiece spells a byte the way sentencepiece names byte pieces.
func bytePiece(b byte) string { return fmt.Sprintf("<0x%02X>", b) }

// pieceByte is bytePiece's inverse; only the exact spelling counts (upper-case hex).
func pieceByte(s string) (byte, bool) {
	const hex = "0123456789ABCDEF"
	if len(s) != 6 || s[:3] != "<0x" || s[5] != '>' {
		return 0, false
	}
	var b byte
	for _, c := range []byte(s[3:5]) {
		d := byte(0)
		for d < 16 && hex[d] != c {
			d++
		}
		if d == 16 {
			return 0, false
		}
		b = b<<4 | d
	}
	return b, true
}

// validUTF8Prefix is the length of the one valid UTF-8 character s starts with, or 0 if it
// starts with a byte that is not one. sentencepiece's decoder accepts exactly what Go's
// does (no surrogates, nothing above U+10FFFF, no overlong forms).
func validUTF8Prefix(s string) int {
	r, n := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError && n <= 1 {
		return 0
	}
	return n
}
