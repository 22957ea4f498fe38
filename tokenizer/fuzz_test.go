package tokenizer

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseModel: any bytes either parse into a model that encodes and decodes without
// trouble, or are refused with ErrModel. Never a panic, never an allocation beyond the
// caps. Seeds: testdata/fuzz/FuzzParseModel, plus the hostile table and the minimal model.
func FuzzParseModel(f *testing.F) {
	f.Add(minimalModel())
	for _, tc := range hostileModels() {
		f.Add(tc.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ParseModel(data)
		if err != nil {
			if !errors.Is(err, ErrModel) {
				t.Fatalf("error %v is not an ErrModel", err)
			}
			return
		}
		m, err := FromVocab(v)
		if err != nil {
			t.Fatalf("ParseModel accepted what FromVocab refuses: %v", err)
		}
		probe := string(data[:min(len(data), 48)])
		for _, text := range []string{"", "ab  ba", "\xff\x00 ﬁ\u3000x", probe} {
			ids := m.Encode(text)
			for _, id := range ids {
				if id < 0 || id >= m.VocabSize() {
					t.Fatalf("%q encodes to id %d of %d", text, id, m.VocabSize())
				}
			}
			m.Decode(ids)
		}
		all := make([]int, min(m.VocabSize(), 300))
		for i := range all {
			all[i] = i
		}
		m.Decode(all)
	})
}

// FuzzEncode: on both fixture models, any text encodes to ids that are in range, never
// control pieces, never two <unk>s in a row; under byte fallback never <unk>, and the
// decoded ids give back the normalised text exactly. Any ids decode to valid UTF-8.
func FuzzEncode(f *testing.F) {
	for _, s := range []string{"", "hello world", "  e\u0301cole\t\tﬁ ＡＢＣ ", "<|ngpt_sys_84a5023f67d74cf29cc4001becde983c|>hi",
		"\xff\xfe\xe2\x82", "👨‍👩‍👧 🇩🇪", "▁▁x▁", "\x00\x01\u0085\u2028"} {
		f.Add(s)
	}
	models := []*SentencePiece{fixture(f, "tiny"), fixture(f, "tiny_identity")}
	f.Fuzz(func(t *testing.T, text string) {
		for _, m := range models {
			checkEncode(t, m, text)
			// Arbitrary ids, some out of range, from the text's bytes.
			ids := make([]int, len(text))
			for i := range ids {
				ids[i] = int(text[i]) * 5
			}
			if d := m.Decode(ids); !utf8.ValidString(d) {
				t.Fatalf("ids %v decode to invalid UTF-8 %q", ids, d)
			}
		}
	})
}

func checkEncode(t *testing.T, m *SentencePiece, text string) {
	ids := m.Encode(text)
	for i, id := range ids {
		switch {
		case id < 0 || id >= m.VocabSize():
			t.Fatalf("%q: id %d out of range", text, id)
		case m.Type(id) == PieceControl:
			t.Fatalf("%q: control piece %d", text, id)
		case m.Type(id) == PieceUnknown && (m.vocab.ByteFallback || i > 0 && ids[i-1] == id):
			t.Fatalf("%q: <unk> at %d of %v", text, i, ids)
		}
	}
	decoded := m.Decode(ids)
	if !utf8.ValidString(decoded) {
		t.Fatalf("%q decodes to invalid UTF-8 %q", text, decoded)
	}
	norm := string(m.normalize(text))
	if m.vocab.ByteFallback && !strings.HasPrefix(norm, spaceSymbol) {
		if want := strings.ReplaceAll(norm, spaceSymbol, " "); decoded != want {
			t.Fatalf("%q decodes to %q, want the normalised %q", text, decoded, want)
		}
	}
}
