package tokenizer

// A bounded reader of SentencePiece's .model files: the ModelProto protobuf, decoded from
// the wire format by hand so that nothing is allocated before its length has been checked
// against the bytes that remain. The field numbers are those of sentencepiece_model.proto;
// fields this package does not need are skipped, as protobuf itself skips unknown fields.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// Caps on what a .model file may hold. A 16,000-piece model is about 0.5 MB, most of it the
// normaliser's charsmap; these leave two orders of magnitude of room and keep a hostile file
// from asking for more memory than it occupies.
const (
	MaxModelBytes      = 32 << 20
	maxPieces          = 1 << 20
	maxPieceBytes      = 4096    // one piece (user-defined pieces can be long)
	maxTotalPieceBytes = 4 << 20 // all pieces: bounds the matching trie (~20 bytes a byte)
	maxCharsmap        = 16 << 20
	maxStringBytes     = 4096 // other string fields: names, unk_surface
)

// ModelProto field numbers (sentencepiece_model.proto).
const (
	fieldPieces           = 1 // repeated SentencePiece
	fieldTrainerSpec      = 2
	fieldNormalizerSpec   = 3
	fieldDenormalizerSpec = 5

	pieceFieldPiece = 1
	pieceFieldScore = 2
	pieceFieldType  = 3

	trainerFieldModelType         = 3
	trainerFieldVocabSize         = 4
	trainerFieldTreatWSAsSuffix   = 24
	trainerFieldByteFallback      = 35
	trainerFieldUnkID             = 40
	trainerFieldBosID             = 41
	trainerFieldEosID             = 42
	trainerFieldPadID             = 43
	trainerFieldUnkSurface        = 44
	normalizerFieldName           = 1
	normalizerFieldCharsmap       = 2
	normalizerFieldAddDummyPrefix = 3
	normalizerFieldRemoveExtraWS  = 4
	normalizerFieldEscapeWS       = 5
)

// Protobuf wire types.
const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireFixed32 = 5
)

// trainerModelUnigram is TrainerSpec.ModelType UNIGRAM; the others are BPE 2, WORD 3, CHAR 4.
const trainerModelUnigram = 1

var modelTypeNames = map[uint64]string{1: "unigram", 2: "bpe", 3: "word", 4: "char"}

// ErrModel wraps every error about a .model file's contents.
var ErrModel = errors.New("sentencepiece model")

func modelErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrModel, fmt.Sprintf(format, args...))
}

// wireReader walks one protobuf message. Every read checks the bytes that remain.
type wireReader struct {
	buf []byte
	off int
}

func (r *wireReader) done() bool { return r.off >= len(r.buf) }

func (r *wireReader) varint() (uint64, error) {
	v, n := binary.Uvarint(r.buf[r.off:])
	if n <= 0 {
		if n == 0 {
			return 0, modelErr("truncated varint at byte %d", r.off)
		}
		return 0, modelErr("varint overflows 64 bits at byte %d", r.off)
	}
	r.off += n
	return v, nil
}

// field reads the next tag: the field number and its wire type.
func (r *wireReader) field() (num int, wire int, err error) {
	tag, err := r.varint()
	if err != nil {
		return 0, 0, err
	}
	if tag>>3 == 0 || tag>>3 > math.MaxInt32 {
		return 0, 0, modelErr("invalid field number %d", tag>>3)
	}
	return int(tag >> 3), int(tag & 7), nil
}

// bytes reads a length-delimited value, refusing lengths past the message or over limit.
// The result aliases the input: callers copy what they keep.
func (r *wireReader) bytes(limit int, what string) ([]byte, error) {
	n, err := r.varint()
	if err != nil {
		return nil, err
	}
	if n > uint64(len(r.buf)-r.off) {
		return nil, modelErr("%s: length %d exceeds the %d bytes left", what, n, len(r.buf)-r.off)
	}
	if n > uint64(limit) {
		return nil, modelErr("%s: length %d exceeds the limit %d", what, n, limit)
	}
	b := r.buf[r.off : r.off+int(n)]
	r.off += int(n)
	return b, nil
}

func (r *wireReader) fixed32() (uint32, error) {
	if len(r.buf)-r.off < 4 {
		return 0, modelErr("truncated fixed32 at byte %d", r.off)
	}
	v := binary.LittleEndian.Uint32(r.buf[r.off:])
	r.off += 4
	return v, nil
}

// skip passes over a field this reader does not use. Groups (wire types 3 and 4) are
// deprecated and never written by sentencepiece, so they are refused rather than walked.
func (r *wireReader) skip(wire int) error {
	switch wire {
	case wireVarint:
		_, err := r.varint()
		return err
	case wireFixed64:
		if len(r.buf)-r.off < 8 {
			return modelErr("truncated fixed64 at byte %d", r.off)
		}
		r.off += 8
		return nil
	case wireBytes:
		_, err := r.bytes(len(r.buf), "unknown field")
		return err
	case wireFixed32:
		_, err := r.fixed32()
		return err
	}
	return modelErr("unsupported wire type %d at byte %d", wire, r.off)
}

// expect checks a known field's wire type: a mismatch means a corrupt file.
func expect(num, wire, want int, msg string) error {
	if wire != want {
		return modelErr("%s field %d has wire type %d, want %d", msg, num, wire, want)
	}
	return nil
}

// ParseModel decodes a .model file's bytes into a Vocab and checks it (Vocab.Check).
func ParseModel(data []byte) (Vocab, error) {
	if len(data) > MaxModelBytes {
		return Vocab{}, modelErr("%d bytes exceeds the limit %d", len(data), MaxModelBytes)
	}
	v := defaultVocab()
	r := &wireReader{buf: data}
	for !r.done() {
		num, wire, err := r.field()
		if err != nil {
			return Vocab{}, err
		}
		if err := v.readModelField(r, num, wire); err != nil {
			return Vocab{}, err
		}
	}
	if err := v.Check(); err != nil {
		return Vocab{}, err
	}
	return v, nil
}

// ReadModel reads a .model file of at most MaxModelBytes from r and parses it.
func ReadModel(r io.Reader) (Vocab, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxModelBytes+1))
	if err != nil {
		return Vocab{}, err
	}
	return ParseModel(data)
}

// defaultVocab holds proto2's declared defaults for the fields that have one: a field
// absent from the file takes them, exactly as sentencepiece sees it.
func defaultVocab() Vocab {
	return Vocab{
		UnkID: 0, BosID: 1, EosID: 2, PadID: -1,
		UnkSurface:             defaultUnkSurface,
		AddDummyPrefix:         true,
		RemoveExtraWhitespaces: true,
		EscapeWhitespaces:      true,
	}
}

// defaultUnkSurface is TrainerSpec.unk_surface's default: what <unk> decodes to.
const defaultUnkSurface = " \u2047 "

func (v *Vocab) readModelField(r *wireReader, num, wire int) error {
	switch num {
	case fieldPieces:
		if err := expect(num, wire, wireBytes, "ModelProto"); err != nil {
			return err
		}
		if len(v.Pieces) >= maxPieces {
			return modelErr("more than %d pieces", maxPieces)
		}
		msg, err := r.bytes(len(r.buf), "piece")
		if err != nil {
			return err
		}
		return v.readPiece(msg)
	case fieldTrainerSpec, fieldNormalizerSpec, fieldDenormalizerSpec:
		if err := expect(num, wire, wireBytes, "ModelProto"); err != nil {
			return err
		}
		msg, err := r.bytes(len(r.buf), "spec")
		if err != nil {
			return err
		}
		return v.readSpec(num, msg)
	}
	return r.skip(wire)
}

// readPiece decodes one ModelProto.SentencePiece.
func (v *Vocab) readPiece(msg []byte) error {
	p := Piece{Type: PieceNormal} // the declared default of SentencePiece.type
	r := &wireReader{buf: msg}
	for !r.done() {
		num, wire, err := r.field()
		if err != nil {
			return err
		}
		switch num {
		case pieceFieldPiece:
			if err := expect(num, wire, wireBytes, "SentencePiece"); err != nil {
				return err
			}
			b, err := r.bytes(maxPieceBytes, "piece text")
			if err != nil {
				return err
			}
			p.Text = string(b)
		case pieceFieldScore:
			if err := expect(num, wire, wireFixed32, "SentencePiece"); err != nil {
				return err
			}
			bits, err := r.fixed32()
			if err != nil {
				return err
			}
			p.Score = math.Float32frombits(bits)
		case pieceFieldType:
			if err := expect(num, wire, wireVarint, "SentencePiece"); err != nil {
				return err
			}
			t, err := r.varint()
			if err != nil {
				return err
			}
			if t < uint64(PieceNormal) || t > uint64(PieceByte) {
				return modelErr("piece %d has unknown type %d", len(v.Pieces), t)
			}
			p.Type = PieceType(t)
		default:
			if err := r.skip(wire); err != nil {
				return err
			}
		}
	}
	v.Pieces = append(v.Pieces, p)
	return nil
}

// readSpec decodes the TrainerSpec, NormalizerSpec or denormalizer NormalizerSpec fields
// that encoding and decoding depend on. A submessage that appears twice merges, as in
// protobuf: later fields overwrite earlier ones.
func (v *Vocab) readSpec(which int, msg []byte) error {
	r := &wireReader{buf: msg}
	for !r.done() {
		num, wire, err := r.field()
		if err != nil {
			return err
		}
		var handled bool
		switch which {
		case fieldTrainerSpec:
			handled, err = v.readTrainerField(r, num, wire)
		case fieldNormalizerSpec:
			handled, err = v.readNormalizerField(r, num, wire)
		case fieldDenormalizerSpec:
			handled, err = v.readDenormalizerField(r, num, wire)
		}
		if err != nil {
			return err
		}
		if !handled {
			if err := r.skip(wire); err != nil {
				return err
			}
		}
	}
	return nil
}

// varintField reads a varint field after checking its wire type.
func varintField(r *wireReader, num, wire int, msg string) (uint64, error) {
	if err := expect(num, wire, wireVarint, msg); err != nil {
		return 0, err
	}
	return r.varint()
}

func (v *Vocab) readTrainerField(r *wireReader, num, wire int) (bool, error) {
	const msg = "TrainerSpec"
	var ints = map[int]*int{
		trainerFieldUnkID: &v.UnkID, trainerFieldBosID: &v.BosID,
		trainerFieldEosID: &v.EosID, trainerFieldPadID: &v.PadID,
	}
	switch num {
	case trainerFieldModelType:
		t, err := varintField(r, num, wire, msg)
		if err != nil {
			return true, err
		}
		if t != trainerModelUnigram {
			name, ok := modelTypeNames[t]
			if !ok {
				name = fmt.Sprintf("type %d", t)
			}
			return true, modelErr("model type %s is not supported: only unigram models are", name)
		}
		return true, nil
	case trainerFieldTreatWSAsSuffix:
		b, err := varintField(r, num, wire, msg)
		if err == nil && b != 0 {
			err = modelErr("treat_whitespace_as_suffix is not supported")
		}
		return true, err
	case trainerFieldByteFallback:
		b, err := varintField(r, num, wire, msg)
		v.ByteFallback = b != 0
		return true, err
	case trainerFieldUnkSurface:
		if err := expect(num, wire, wireBytes, msg); err != nil {
			return true, err
		}
		b, err := r.bytes(maxStringBytes, "unk_surface")
		v.UnkSurface = string(b)
		return true, err
	}
	if dst, ok := ints[num]; ok {
		x, err := varintField(r, num, wire, msg)
		// int32 fields: negative values are sign-extended to 64 bits on the wire.
		*dst = int(int32(x))
		return true, err
	}
	return false, nil
}

func (v *Vocab) readNormalizerField(r *wireReader, num, wire int) (bool, error) {
	const msg = "NormalizerSpec"
	flags := map[int]*bool{
		normalizerFieldAddDummyPrefix: &v.AddDummyPrefix,
		normalizerFieldRemoveExtraWS:  &v.RemoveExtraWhitespaces,
		normalizerFieldEscapeWS:       &v.EscapeWhitespaces,
	}
	switch num {
	case normalizerFieldName:
		if err := expect(num, wire, wireBytes, msg); err != nil {
			return true, err
		}
		b, err := r.bytes(maxStringBytes, "normalizer name")
		v.NormalizerName = string(b)
		return true, err
	case normalizerFieldCharsmap:
		if err := expect(num, wire, wireBytes, msg); err != nil {
			return true, err
		}
		b, err := r.bytes(maxCharsmap, "precompiled_charsmap")
		v.Charsmap = append([]byte(nil), b...)
		return true, err
	}
	if dst, ok := flags[num]; ok {
		b, err := varintField(r, num, wire, msg)
		*dst = b != 0
		return true, err
	}
	return false, nil
}

// readDenormalizerField refuses a denormaliser with rules: decoding would have to apply
// it, and niels-gpt's models have none.
func (v *Vocab) readDenormalizerField(r *wireReader, num, wire int) (bool, error) {
	if num != normalizerFieldCharsmap {
		return false, nil
	}
	if err := expect(num, wire, wireBytes, "denormalizer NormalizerSpec"); err != nil {
		return true, err
	}
	b, err := r.bytes(maxCharsmap, "denormalizer charsmap")
	if err == nil && len(b) > 0 {
		err = modelErr("a denormalizer is not supported")
	}
	return true, err
}
