package tokenizer

// Encoding speed on the conformance corpus (docs/BENCHMARKS.md):
//
//	go test -run '^$' -bench . -benchtime 3s ./tokenizer/

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// benchTexts are the conformance corpus's inputs: all of them (mixed scripts, emoji,
// controls, random code points), or only the plain-ASCII ones (the primer's chat lines).
func benchTexts(b *testing.B, asciiOnly bool) []string {
	var texts []string
	for _, r := range readGolden(b, "tiny.encode.jsonl.gz") {
		text := r.input(b)
		if asciiOnly && strings.IndexFunc(text, func(c rune) bool { return c >= utf8.RuneSelf }) >= 0 {
			continue
		}
		texts = append(texts, text)
	}
	return texts
}

func benchEncode(b *testing.B, texts []string) {
	m := fixture(b, "tiny")
	total := 0
	for _, t := range texts {
		total += len(t)
	}
	b.SetBytes(int64(total))
	b.ResetTimer()
	for b.Loop() {
		for _, t := range texts {
			m.Encode(t)
		}
	}
}

// BenchmarkEncodeLines encodes the corpus line by line, as chat messages arrive.
func BenchmarkEncodeLines(b *testing.B) {
	b.Run("ascii", func(b *testing.B) { benchEncode(b, benchTexts(b, true)) })
	b.Run("mixed", func(b *testing.B) { benchEncode(b, benchTexts(b, false)) })
}

// BenchmarkEncodeLong encodes one long prompt: the ASCII lines joined, about 0.5 MB.
func BenchmarkEncodeLong(b *testing.B) {
	benchEncode(b, []string{strings.Join(benchTexts(b, true), "\n")})
}

// BenchmarkDecode decodes the corpus's ids line by line; bytes are the decoded text's.
func BenchmarkDecode(b *testing.B) {
	m := fixture(b, "tiny")
	rows := readGolden(b, "tiny.encode.jsonl.gz")
	total := 0
	for _, r := range rows {
		total += len(r.Decoded)
	}
	b.SetBytes(int64(total))
	b.ResetTimer()
	for b.Loop() {
		for _, r := range rows {
			m.Decode(r.IDs)
		}
	}
}
