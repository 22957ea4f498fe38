package engine

import (
	"math"
	"slices"
	"testing"
)

func TestFormatTranscript(t *testing.T) {
	cases := []struct {
		msgs []Message
		want string
		conv string // FormatConversation: the conversation as it stands
	}{
		{[]Message{{"user", "hi"}}, "user: hi\nassistant: ", "user: hi\n"},
		{[]Message{{"system", "be terse"}, {"user", "hi"}, {"assistant", "no."}, {"user", "why"}},
			"system: be terse\nuser: hi\nassistant: no.\nuser: why\nassistant: ",
			"system: be terse\nuser: hi\nassistant: no.\nuser: why\n"},
		// a trailing empty assistant turn is the generation prompt itself,
		// and a message of the conversation
		{[]Message{{"user", "hi"}, {"assistant", ""}}, "user: hi\nassistant: ", "user: hi\nassistant: "},
		// an empty assistant turn elsewhere is an ordinary line
		{[]Message{{"assistant", ""}, {"user", "x"}}, "assistant: \nuser: x\nassistant: ", "assistant: \nuser: x\n"},
		{nil, "assistant: ", ""},
	}
	for _, c := range cases {
		if got := string(FormatTranscript(c.msgs)); got != c.want {
			t.Errorf("FormatTranscript(%v) = %q, want %q", c.msgs, got, c.want)
		}
		if got := string(FormatConversation(c.msgs)); got != c.conv {
			t.Errorf("FormatConversation(%v) = %q, want %q", c.msgs, got, c.conv)
		}
	}
}

func TestStopTags(t *testing.T) {
	cases := []struct {
		gen, want string
		stop      bool
	}{
		{"fine.", "fine.", false},
		{"fine.\nuser: more", "fine.", true},
		{"a\nsystem: x\nuser: y", "a", true},
		{"a\nuser:", "a\nuser:", false}, // the tag needs its space
		{"\nuser: ", "", true},
	}
	for _, c := range cases {
		got, stop := CutAtStop([]byte(c.gen), StopTags)
		if string(got) != c.want || stop != c.stop {
			t.Errorf("CutAtStop(%q) = %q, %v; want %q, %v", c.gen, got, stop, c.want, c.stop)
		}
	}
}

func TestExtractReply(t *testing.T) {
	cases := []struct{ all, want string }{
		{"user: hi\nassistant: go away.", "go away."},
		{"user: hi\nassistant:   spaced  \n", "spaced"},
		{"user: a\nassistant: first\nuser: b\nassistant: second\nuser: c", "second"},
		// the last non-empty candidate wins over a trailing empty one
		{"user: a\nassistant: kept\nuser: b\nassistant: ", "kept"},
		{"user: a\nassistant: x\nassistant: y", "y"},
		{"no prompt here", ""},
		{"assistant: assistant: nested", "nested"},
	}
	for _, c := range cases {
		if got := ExtractReply([]byte(c.all)); got != c.want {
			t.Errorf("ExtractReply(%q) = %q, want %q", c.all, got, c.want)
		}
	}
}

// Python's bytes.decode("utf-8", errors="replace") replaces each maximal
// invalid subpart with one U+FFFD; these expectations are what it prints.
func TestDecodeBytesLikePython(t *testing.T) {
	cases := []struct {
		in   []byte
		want string
	}{
		{[]byte("héllo"), "héllo"},
		{[]byte{0xff}, "\ufffd"},
		{[]byte{0xff, 0xfe}, "\ufffd\ufffd"},
		{[]byte{0xe2, 0x82}, "\ufffd"},                   // truncated 3-byte sequence: one
		{[]byte{0xe2, 0x82, 'a'}, "\ufffda"},             // ...followed by ASCII
		{[]byte{0xe0, 0x80, 0x80}, "\ufffd\ufffd\ufffd"}, // overlong: E0 needs A0..BF
		{[]byte{0xed, 0xa0, 0x80}, "\ufffd\ufffd\ufffd"}, // surrogate
		{[]byte{0xf0, 0x9f, 0x98}, "\ufffd"},             // truncated emoji
		{[]byte{0xf0, 0x9f, 0x98, 0x80}, "😀"},
		{[]byte{0xc0, 0xaf}, "\ufffd\ufffd"},
		{[]byte("\xef\xbf\xbd"), "\ufffd"}, // a real U+FFFD passes through
	}
	for _, c := range cases {
		if got := DecodeBytes(c.in); got != c.want {
			t.Errorf("DecodeBytes(% x) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestTokenTextAndDisplay(t *testing.T) {
	cases := []struct {
		id            int
		text, display string
	}{
		{'a', "a", "a"}, {' ', " ", " "}, {'~', "~", "~"},
		{'\n', "\n", `\x0a`}, {0, "\x00", `\x00`}, {127, "\x7f", `\x7f`},
		{0x80, "\ufffd", `\x80`}, {0xff, "\ufffd", `\xff`},
	}
	for _, c := range cases {
		if got := TokenText(c.id); got != c.text {
			t.Errorf("TokenText(%d) = %q, want %q", c.id, got, c.text)
		}
		if got := TokenDisplay(c.id); got != c.display {
			t.Errorf("TokenDisplay(%d) = %q, want %q", c.id, got, c.display)
		}
	}
}

func TestSamplerGreedyAndEntropy(t *testing.T) {
	logits := make([]float32, 256)
	logits[7], logits[9] = 3, 3 // a tie: the first index wins
	s := newSampler(Sampling{Temperature: 0}, 256)
	tok, h, top := s.sample(logits)
	if tok != 7 || h != 0 || len(top) != 1 || top[0] != (Candidate{7, 1}) {
		t.Fatalf("greedy: token %d entropy %v top %v", tok, h, top)
	}
	// uniform logits at any temperature: entropy ln(256), ten candidates
	s = newSampler(Sampling{Temperature: 0.7, Seed: 1}, 256)
	_, h, top = s.sample(make([]float32, 256))
	if math.Abs(h-math.Log(256)) > 1e-9 || len(top) != 10 {
		t.Fatalf("uniform: entropy %v (want %v), %d candidates", h, math.Log(256), len(top))
	}
}

func TestSamplerTopKAndSeed(t *testing.T) {
	logits := make([]float32, 256)
	for i := range logits {
		logits[i] = float32(i % 17)
	}
	draw := func(seed int64) []int {
		s := newSampler(Sampling{Temperature: 1.3, TopK: 5, Seed: seed}, 256)
		var toks []int
		for range 200 {
			tok, h, top := s.sample(logits)
			toks = append(toks, tok)
			nonzero := 0
			for _, p := range s.probs {
				if p > 0 {
					nonzero++
				}
			}
			if nonzero != 5 || len(top) != 5 || !(h > 0 && h <= math.Log(5)+1e-12) {
				t.Fatalf("top_k 5: %d tokens kept, %d candidates, entropy %v", nonzero, len(top), h)
			}
			if logits[tok] != 16 {
				t.Fatalf("drew token %d (logit %v) outside the top 5", tok, logits[tok])
			}
		}
		return toks
	}
	a, b, c := draw(42), draw(42), draw(43)
	same := func(x, y []int) bool {
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	if !same(a, b) {
		t.Fatal("the same seed drew different tokens")
	}
	if same(a, c) {
		t.Fatal("different seeds drew the same 200 tokens")
	}
}

func TestPendingUTF8(t *testing.T) {
	cases := []struct {
		in   string
		want int
	}{
		{"", 0}, {"a", 0}, {"é", 0}, {"a\xc3", 1}, {"\xe2\x82", 2}, {"\xe2", 1},
		{"\xf0\x9f\x98", 3}, {"\xf0\x9f", 2}, {"\xf0\x9f\x98\x80", 0},
		{"\xe0\x80", 0}, // E0 needs A0..BF next: never completes
		{"\xed\xa0", 0}, // a surrogate: never completes
		{"\xff", 0}, {"\xc0", 0}, {"\x80", 0}, {"\xe2\x82\xac", 0},
	}
	for _, c := range cases {
		if got := PendingUTF8([]byte(c.in)); got != c.want {
			t.Errorf("PendingUTF8(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

// top_p keeps the smallest most-likely set reaching p, the crossing token
// included, renormalised; the reported distribution is that one.
func TestSamplerTopP(t *testing.T) {
	logits := []float32{0, float32(math.Log(2)), float32(math.Log(3)), float32(math.Log(4))} // p = .1 .2 .3 .4
	for _, c := range []struct {
		topP float64
		kept []int
	}{{0.39, []int{3}}, {0.45, []int{3, 2}}, {0.65, []int{3, 2}}, {0.75, []int{3, 2, 1}}, {1, []int{3, 2, 1, 0}}} {
		s := newSampler(Sampling{Temperature: 1, TopP: c.topP, Seed: 1}, len(logits))
		for range 50 {
			tok, _, top := s.sample(logits)
			if !slices.Contains(c.kept, tok) || len(top) != len(c.kept) {
				t.Fatalf("top_p %v: drew %d with candidates %v, want from %v", c.topP, tok, top, c.kept)
			}
		}
		sum := 0.0
		for _, p := range s.probs {
			sum += p
		}
		if math.Abs(sum-1) > 1e-12 {
			t.Fatalf("top_p %v: probabilities sum to %v", c.topP, sum)
		}
	}
}
