package tokenizer

// Conformance: our encoder and decoder against goldens that sentencepiece 0.1.97 wrote
// (scripts/make_spm_fixture.py) for two models: tiny, trained with niels-gpt generation 2's
// settings, and tiny_identity, which takes the other branches (no charsmap, a dummy
// prefix, extra whitespace kept, no byte fallback).

import (
	"bufio"
	"compress/gzip"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

var spmDir = filepath.Join("..", "testdata", "spm")

var fixtureModels = []string{"tiny", "tiny_identity"}

var loaded sync.Map // model name → *SentencePiece

// fixture loads testdata/spm/<name>.model once per test binary.
func fixture(t testing.TB, name string) *SentencePiece {
	t.Helper()
	if m, ok := loaded.Load(name); ok {
		return m.(*SentencePiece)
	}
	m, err := LoadModel(filepath.Join(spmDir, name+".model"))
	if err != nil {
		t.Fatal(err)
	}
	loaded.Store(name, m)
	return m
}

// goldenRow is one line of a <model>.encode or <model>.decode golden.
type goldenRow struct {
	Text    *string `json:"text"`
	Hex     string  `json:"hex"`
	IDs     []int   `json:"ids"`
	Decoded string  `json:"decoded"`
}

func (r goldenRow) input(t testing.TB) string {
	if r.Text != nil {
		return *r.Text
	}
	b, err := hex.DecodeString(r.Hex)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func readGolden(t testing.TB, file string) []goldenRow {
	t.Helper()
	f, err := os.Open(filepath.Join(spmDir, file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var rows []goldenRow
	sc := bufio.NewScanner(gz)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r goldenRow
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s line %d: %v", file, len(rows)+1, err)
		}
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// pieces spells ids as pieces, for failure messages.
func pieces(m *SentencePiece, ids []int) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprintf("%d:%q", id, m.Piece(id))
	}
	return strings.Join(s, " ")
}

func TestEncodeMatchesSentencePiece(t *testing.T) {
	for _, name := range fixtureModels {
		t.Run(name, func(t *testing.T) {
			m := fixture(t, name)
			rows := readGolden(t, name+".encode.jsonl.gz")
			if len(rows) < 5000 {
				t.Fatalf("only %d golden lines", len(rows))
			}
			failed := 0
			for i, r := range rows {
				text := r.input(t)
				ids := m.Encode(text)
				decoded := m.Decode(ids)
				if slices.Equal(ids, r.IDs) && decoded == r.Decoded {
					continue
				}
				if failed++; failed <= 5 {
					t.Errorf("line %d %q:\n got  %s\n want %s\n decoded %q, want %q", i+1, text,
						pieces(m, ids), pieces(m, r.IDs), decoded, r.Decoded)
				}
			}
			if failed > 0 {
				t.Errorf("%d of %d lines differ", failed, len(rows))
			}
			t.Logf("%d lines, all equal to sentencepiece's", len(rows))
		})
	}
}

func TestDecodeMatchesSentencePiece(t *testing.T) {
	for _, name := range fixtureModels {
		t.Run(name, func(t *testing.T) {
			m := fixture(t, name)
			rows := readGolden(t, name+".decode.jsonl.gz")
			failed := 0
			for i, r := range rows {
				if got := m.Decode(r.IDs); got != r.Decoded {
					if failed++; failed <= 5 {
						t.Errorf("line %d %s:\n got  %q\n want %q", i+1, pieces(m, r.IDs), got, r.Decoded)
					}
				}
			}
			if failed > 0 {
				t.Errorf("%d of %d id sequences differ", failed, len(rows))
			}
		})
	}
}
