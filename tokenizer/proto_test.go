package tokenizer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// pb builds protobuf wire format for the tests, field by field.
type pb []byte

func (b pb) varint(num int, v uint64) pb {
	b = binary.AppendUvarint(b, uint64(num)<<3|wireVarint)
	return binary.AppendUvarint(b, v)
}

func (b pb) bytes(num int, data []byte) pb {
	b = binary.AppendUvarint(b, uint64(num)<<3|wireBytes)
	b = binary.AppendUvarint(b, uint64(len(data)))
	return append(b, data...)
}

func (b pb) fixed32(num int, v uint32) pb {
	b = binary.AppendUvarint(b, uint64(num)<<3|wireFixed32)
	return binary.LittleEndian.AppendUint32(b, v)
}

func pieceMsg(text string, score float32, typ PieceType) []byte {
	return pb(nil).bytes(pieceFieldPiece, []byte(text)).
		fixed32(pieceFieldScore, math.Float32bits(score)).
		varint(pieceFieldType, uint64(typ))
}

// minimalPieces is a valid vocabulary of the smallest useful kind.
var minimalPieces = []Piece{
	{"<unk>", 0, PieceUnknown}, {"<s>", 0, PieceControl}, {"</s>", 0, PieceControl},
	{"▁", -1, PieceNormal}, {"a", -2, PieceNormal}, {"b", -3, PieceNormal}, {"ab", -2.5, PieceNormal},
}

// modelBytes encodes pieces and specs as a .model file would hold them.
func modelBytes(pieces []Piece, trainer, normalizer pb) []byte {
	var m pb
	for _, p := range pieces {
		m = m.bytes(fieldPieces, pieceMsg(p.Text, p.Score, p.Type))
	}
	if trainer != nil {
		m = m.bytes(fieldTrainerSpec, trainer)
	}
	if normalizer != nil {
		m = m.bytes(fieldNormalizerSpec, normalizer)
	}
	return m
}

func minimalModel() []byte {
	return modelBytes(minimalPieces, pb(nil).varint(trainerFieldModelType, trainerModelUnigram),
		pb(nil).bytes(normalizerFieldName, []byte("identity")).varint(normalizerFieldAddDummyPrefix, 0))
}

func TestParseMinimalModel(t *testing.T) {
	v, err := ParseModel(minimalModel())
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Pieces) != len(minimalPieces) || v.Pieces[6] != minimalPieces[6] {
		t.Fatalf("pieces %v", v.Pieces)
	}
	// Absent fields take proto2's declared defaults.
	if !v.RemoveExtraWhitespaces || !v.EscapeWhitespaces || v.AddDummyPrefix || v.PadID != -1 ||
		v.UnkSurface != " ⁇ " || v.NormalizerName != "identity" {
		t.Fatalf("defaults: %+v", v)
	}
	m, err := FromVocab(v)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Encode("ab  ba c"); !equalInts(got, []int{6, 3, 5, 4, 3, 0}) {
		t.Fatalf("Encode = %v", got)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParseModelSkipsUnknownFields(t *testing.T) {
	unknown := pb(nil).varint(99, 7).bytes(98, []byte("xyz")).fixed32(97, 1)
	unknown = append(binary.AppendUvarint(unknown, 96<<3|wireFixed64), make([]byte, 8)...)
	data := append(append(pb(nil), unknown...), minimalModel()...)
	piece := append(pieceMsg("c", -4, PieceNormal), unknown...)
	data = pb(data).bytes(fieldPieces, piece).bytes(fieldTrainerSpec, unknown).bytes(fieldNormalizerSpec, unknown)
	v, err := ParseModel(data)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Pieces[len(v.Pieces)-1]; got != (Piece{"c", -4, PieceNormal}) {
		t.Fatalf("last piece %+v", got)
	}
}

// hostileModels are .model files that must be refused with an error naming the problem.
func hostileModels() []struct {
	name, want string
	data       []byte
} {
	unigram := pb(nil).varint(trainerFieldModelType, trainerModelUnigram)
	with := func(extra ...Piece) []byte {
		return modelBytes(append(append([]Piece(nil), minimalPieces...), extra...), unigram, nil)
	}
	charsmap := func(blob []byte) []byte {
		return modelBytes(minimalPieces, unigram, pb(nil).bytes(normalizerFieldCharsmap, blob))
	}
	huge := binary.AppendUvarint(binary.AppendUvarint(nil, fieldPieces<<3|wireBytes), 1<<62)
	return []struct {
		name, want string
		data       []byte
	}{
		{"empty file", "no pieces", nil},
		{"zero pieces", "no pieces", pb(nil).bytes(fieldTrainerSpec, unigram)},
		{"huge length", "exceeds the", huge},
		{"huge piece length", "exceeds the", pb(nil).bytes(fieldPieces, binary.AppendUvarint([]byte{pieceFieldPiece<<3 | wireBytes}, math.MaxUint64))},
		{"varint overflow", "overflows", bytes.Repeat([]byte{0xff}, 11)},
		{"truncated varint", "truncated varint", []byte{0x80}},
		{"field zero", "invalid field number", []byte{0x00, 0x01}},
		{"group", "wire type 3", []byte{fieldPieces<<3 | 3}},
		{"garbage in a piece", "", pb(nil).bytes(fieldPieces, []byte{0xff, 0xff, 0xff})},
		{"garbage in trainer spec", "", pb(nil).bytes(fieldTrainerSpec, []byte{0x0b, 0x0c})},
		{"score as varint", "wire type 0", pb(nil).bytes(fieldPieces, pb(nil).varint(pieceFieldScore, 1))},
		{"truncated score", "truncated fixed32", pb(nil).bytes(fieldPieces, []byte{pieceFieldScore<<3 | wireFixed32, 1, 2})},
		{"pieces as varint", "wire type 0", pb(nil).varint(fieldPieces, 1)},
		{"unknown piece type", "unknown type 9", with(Piece{"x", 0, 9})},
		{"bpe", "model type bpe is not supported", modelBytes(minimalPieces, pb(nil).varint(trainerFieldModelType, 2), nil)},
		{"char", "model type char", modelBytes(minimalPieces, pb(nil).varint(trainerFieldModelType, 4), nil)},
		{"suffix whitespace", "treat_whitespace_as_suffix", modelBytes(minimalPieces, pb(nil).varint(trainerFieldTreatWSAsSuffix, 1), nil)},
		{"denormalizer", "denormalizer", pb(minimalModel()).bytes(fieldDenormalizerSpec, pb(nil).bytes(normalizerFieldCharsmap, []byte{1, 2, 3, 4, 5}))},
		{"empty piece", "is empty", with(Piece{"", 0, PieceNormal})},
		{"long piece", "exceeds the limit", with(Piece{strings.Repeat("x", maxPieceBytes+1), 0, PieceNormal})},
		{"duplicate piece", "already defined", with(Piece{"ab", -1, PieceUserDefined})},
		{"duplicate control", "already defined", with(Piece{"<s>", 0, PieceControl})},
		{"two unknown", "both unknown", with(Piece{"<unk2>", 0, PieceUnknown})},
		{"no unknown", "no unknown piece", modelBytes(minimalPieces[1:], unigram, nil)},
		{"byte without fallback", "without byte_fallback", with(Piece{"<0x41>", 0, PieceByte})},
		{"bad byte piece", "not <0xNN>", modelBytes(append(append([]Piece(nil), minimalPieces...), Piece{"<0x4g>", 0, PieceByte}), pb(unigram).varint(trainerFieldByteFallback, 1), nil)},
		{"charsmap too short", "has no trie", charsmap([]byte{1, 0, 0})},
		{"charsmap size past end", "does not fit", charsmap([]byte{0xff, 0, 0, 0, 1, 2, 3, 4})},
		{"charsmap size not units", "does not fit", charsmap([]byte{3, 0, 0, 0, 1, 2, 3, 4})},
		{"long replacement", "over the limit 256", charsmap(append([]byte{4, 0, 0, 0, 0, 0, 0, 0, 0}, bytes.Repeat([]byte("x"), 300)...))},
		{"long unk surface", "exceeds the limit", modelBytes(minimalPieces, pb(nil).bytes(trainerFieldUnkSurface, make([]byte, maxStringBytes+1)), nil)},
	}
}

func TestParseModelRefusesHostileFiles(t *testing.T) {
	for _, tc := range hostileModels() {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseModel(tc.data)
			if err == nil {
				t.Fatal("parsed")
			}
			if !errors.Is(err, ErrModel) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want ErrModel containing %q", err, tc.want)
			}
		})
	}
}

// topLevelBounds are the byte offsets where a .model file's top-level fields start and end.
func topLevelBounds(t *testing.T, data []byte) map[int]bool {
	bounds := map[int]bool{0: true}
	r := &wireReader{buf: data}
	for !r.done() {
		_, wire, err := r.field()
		if err == nil {
			err = r.skip(wire)
		}
		if err != nil {
			t.Fatal(err)
		}
		bounds[r.off] = true
	}
	return bounds
}

// TestParseModelRefusesTruncatedFiles cuts the fixture models everywhere but between two
// top-level fields (where the prefix is itself a well-formed, smaller model).
func TestParseModelRefusesTruncatedFiles(t *testing.T) {
	for _, name := range fixtureModels {
		data, err := os.ReadFile(filepath.Join(spmDir, name+".model"))
		if err != nil {
			t.Fatal(err)
		}
		bounds := topLevelBounds(t, data)
		step := max(1, len(data)/3000)
		for cut := 1; cut < len(data); cut += step {
			if bounds[cut] {
				continue
			}
			if _, err := ParseModel(data[:cut]); err == nil {
				t.Fatalf("%s cut at %d of %d parsed", name, cut, len(data))
			}
		}
	}
}

func TestReadModelRefusesOversizedFiles(t *testing.T) {
	_, err := ReadModel(io.LimitReader(zeros{}, MaxModelBytes+10))
	if err == nil || !strings.Contains(err.Error(), "exceeds the limit") {
		t.Fatalf("err = %v", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// handCharsmap is a charsmap whose trie holds the one key "a" with the given value,
// followed by the strings "x\0".
func handCharsmap(value uint32) []byte {
	units := make([]uint32, 0x62)
	units[0] = 1 << 10               // root: children at offset 1, so 'a' lands on 1^0x61
	units[0x60] = 1<<10 | 1<<8 | 'a' // label 'a', has a value, reached at 0x60^1
	units[0x61] = 1<<31 | value      // the value unit
	blob := binary.LittleEndian.AppendUint32(nil, uint32(4*len(units)))
	for _, u := range units {
		blob = binary.LittleEndian.AppendUint32(blob, u)
	}
	return append(blob, "x\x00"...)
}

// TestCharsmapLookup checks the double-array walk on a hand-made trie, and that a trie or
// value pointing outside the blob neither panics nor matches.
func TestCharsmapLookup(t *testing.T) {
	c, err := parseCharsmap(handCharsmap(0))
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[string]int{"a": 1, "ab": 1, "b": 0, "": 0, "\x00": 0} {
		if repl, n := c.longestMatch(s); n != want || (n > 0 && repl != "x") {
			t.Errorf("%q matched %q, %d; want x, %d", s, repl, n, want)
		}
	}
	c, _ = parseCharsmap(handCharsmap(500))
	if _, n := c.longestMatch("a"); n != 0 {
		t.Errorf("a value past the strings matched")
	}
	far := binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, 4), 0x7fff_fc00)
	c, _ = parseCharsmap(far)
	for _, s := range []string{"a", "\x00\x01", "\xff\xfe"} {
		if _, n := c.longestMatch(s); n != 0 {
			t.Errorf("%q matched through an offset past the trie", s)
		}
	}
}
