package tokenizer

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestBytesRoundTrip(t *testing.T) {
	var b Bytes
	text := "héllo, 世界 👋\x00"
	ids := b.Encode(text)
	if len(ids) != len(text) || ids[1] != 0xc3 {
		t.Fatalf("Encode = %v", ids)
	}
	if got := b.Decode(ids); got != text {
		t.Fatalf("Decode = %q", got)
	}
	if b.VocabSize() != 256 || b.Piece(0x41) != "A" || b.Piece(256) != "" {
		t.Fatal("VocabSize or Piece")
	}
	if b.Display('A') != "A" || b.Display(0x0a) != `\x0a` || b.Display(0xff) != `\xff` {
		t.Fatal("Display")
	}
}

// TestBytesDecodeLikePython: each maximal invalid subpart is one U+FFFD, as Python's
// bytes.decode("utf-8", "replace") gives (the wants were printed by Python 3.11).
func TestBytesDecodeLikePython(t *testing.T) {
	for in, want := range map[string]string{
		"\xe2\x82A":                         "\ufffdA",
		"\xed\xa0\x80":                      "\ufffd\ufffd\ufffd",
		"\xf0\x9f\x98":                      "\ufffd",
		"\xc0\xaf":                          "\ufffd\ufffd",
		"\xf4\x90\x80\x80":                  "\ufffd\ufffd\ufffd\ufffd",
		"\xe0\x80\x80":                      "\ufffd\ufffd\ufffd",
		"\xf0\x9f\x98\x80\xff":              "😀\ufffd",
		"a\xe2\x82":                         "a\ufffd",
		"\xe1\x80\xe2\xf0\x91\x92\xf1\xbfA": "\ufffd\ufffd\ufffd\ufffdA",
	} {
		ids := Bytes{}.Encode(in)
		if got := (Bytes{}).Decode(append(ids, -1, 256)); got != want {
			t.Errorf("%q decodes to %q, want %q", in, got, want)
		}
	}
}

// TestFixtureLayout checks the fixture has generation 2's layout, which the engine's chat
// code relies on: specials 3..6, byte pieces 7..262.
func TestFixtureLayout(t *testing.T) {
	m := fixture(t, "tiny")
	want := map[int]string{0: "<unk>", 1: "<s>", 2: "</s>", 7: "<0x00>", 262: "<0xFF>",
		3: "<|ngpt_sys_84a5023f67d74cf29cc4001becde983c|>", 6: "<|ngpt_eot_84a5023f67d74cf29cc4001becde983c|>"}
	for id, piece := range want {
		if m.Piece(id) != piece {
			t.Errorf("piece %d is %q, want %q", id, m.Piece(id), piece)
		}
	}
	types := map[int]PieceType{0: PieceUnknown, 1: PieceControl, 2: PieceControl, 3: PieceUserDefined,
		6: PieceUserDefined, 7: PieceByte, 262: PieceByte, 263: PieceNormal}
	for id, typ := range types {
		if m.Type(id) != typ {
			t.Errorf("piece %d has type %d, want %d", id, m.Type(id), typ)
		}
	}
	v := m.Export()
	if !v.ByteFallback || v.AddDummyPrefix || !v.RemoveExtraWhitespaces || v.NormalizerName != "nmt_nfkc" ||
		v.UnkID != 0 || v.BosID != 1 || v.EosID != 2 || v.PadID != -1 || m.VocabSize() != 1000 {
		t.Errorf("vocab settings %+v", v)
	}
	if id, ok := m.PieceID("<|ngpt_asst_84a5023f67d74cf29cc4001becde983c|>"); !ok || id != 5 {
		t.Errorf("PieceID(asst) = %d, %v", id, ok)
	}
	if id, ok := m.PieceID("no such piece"); ok || id != 0 {
		t.Errorf("PieceID(missing) = %d, %v", id, ok)
	}
}

func TestDisplay(t *testing.T) {
	m := fixture(t, "tiny")
	the, _ := m.PieceID("▁the")
	for id, want := range map[int]string{7 + 0x41: `\x41`, 7 + 0xe2: `\xe2`, the: " the", 1: "<s>", -1: "", 1000: ""} {
		if got := m.Display(id); got != want {
			t.Errorf("Display(%d) = %q, want %q", id, got, want)
		}
	}
}

// TestExportRoundTrip: a vocabulary carried out and back (as through a GGUF) gives the
// same model, and the copy is the caller's own.
func TestExportRoundTrip(t *testing.T) {
	for _, name := range fixtureModels {
		m := fixture(t, name)
		v := m.Export()
		m2, err := FromVocab(v)
		if err != nil {
			t.Fatal(err)
		}
		v.Pieces[10].Text, v.Charsmap = "changed", nil
		for _, text := range []string{"ﬁnal Ｈｅｌｌｏ e\u0301cole  tabs\t", "<|ngpt_eot_84a5023f67d74cf29cc4001becde983c|>x"} {
			ids := m.Encode(text)
			if got := m2.Encode(text); !slices.Equal(got, ids) {
				t.Errorf("%s: %q encodes to %v after the round trip, %v before", name, text, got, ids)
			}
		}
		if m.Piece(10) == "changed" || m2.Piece(10) == "changed" {
			t.Error("Export shares its pieces with the model")
		}
	}
	if _, err := FromVocab(Vocab{Pieces: []Piece{{"a", 0, PieceNormal}}}); err == nil {
		t.Error("FromVocab accepted a vocabulary without <unk>")
	}
}

func TestEncodeEmptyAndDecodeOutOfRange(t *testing.T) {
	m := fixture(t, "tiny")
	for _, s := range []string{"", " ", "\t\n  ", "\x01\x02"} {
		if ids := m.Encode(s); len(ids) != 0 {
			t.Errorf("%q encodes to %v", s, ids)
		}
	}
	if got := m.Decode([]int{-5, 7 + 'h', 1000, 7 + 'i', 1 << 40}); got != "hi" {
		t.Errorf("Decode skipping out-of-range ids = %q", got)
	}
}

func ExampleSentencePiece_Encode() {
	m, err := LoadModel("../testdata/spm/tiny.model")
	if err != nil {
		panic(err)
	}
	ids := m.Encode("user: hi  there<|ngpt_eot_84a5023f67d74cf29cc4001becde983c|>")
	shown := make([]string, len(ids))
	for i, id := range ids {
		shown[i] = fmt.Sprintf("%d:%s", id, m.Display(id))
	}
	fmt.Println(strings.Join(shown, " "))
	fmt.Printf("%q\n", m.Decode(ids))
	// Output:
	// 267:u 292:ser 266:: 411: hi 473: the 317:re 6:<|ngpt_eot_84a5023f67d74cf29cc4001becde983c|>
	// "user: hi there<|ngpt_eot_84a5023f67d74cf29cc4001becde983c|>"
}

// TokenBytes: a byte token's byte, a piece's text with spaces, nothing for control pieces;
// joined over the ids of a text that starts with no space, they are its decoding.
func TestTokenBytes(t *testing.T) {
	var b Bytes
	if string(b.TokenBytes(0xe2)) != "\xe2" || b.TokenBytes(256) != nil || b.TokenBytes(-1) != nil {
		t.Fatal("Bytes.TokenBytes")
	}
	sp, err := LoadModel("../testdata/spm/tiny.model")
	if err != nil {
		t.Fatal(err)
	}
	if got := sp.TokenBytes(7 + 0x0a); string(got) != "\n" {
		t.Fatalf("byte piece <0x0A>: %q", got)
	}
	if got := sp.TokenBytes(1); got == nil || len(got) != 0 {
		t.Fatalf("control piece <s>: %q", got)
	}
	if sp.TokenBytes(sp.VocabSize()) != nil {
		t.Fatal("an id out of range has bytes")
	}
	for _, text := range []string{"hello there, how are you?", "why so terse? tell me about São Paulo", "ünïcödé 😀 ok", "a\tb\nc"} {
		ids := sp.Encode(text)
		var joined []byte
		for _, id := range ids {
			joined = append(joined, sp.TokenBytes(id)...)
		}
		if want := sp.Decode(ids); string(joined) != want {
			t.Errorf("%q: joined token bytes %q, decoded %q", text, joined, want)
		}
	}
}
