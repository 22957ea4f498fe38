// Tests for the reply filter of nielsgpt chat on crafted byte streams: UTF-8
// characters and possible stop tags are held back until they can be shown,
// and every write to the terminal is valid UTF-8.
package main

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"unicode"
	"unicode/utf8"

	"nielsgpt/engine"
)

// utf8Recorder keeps everything written and fails the test if any single
// write is not valid UTF-8: a terminal must never get half a character.
type utf8Recorder struct {
	t      *testing.T
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

func (r *utf8Recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !utf8.Valid(p) {
		r.t.Errorf("write of invalid UTF-8: %q", p)
	}
	r.writes++
	return r.buf.Write(p)
}

func (r *utf8Recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String()
}

func (r *utf8Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Len()
}

// feed writes stream into a fresh filter one chunk at a time and returns the
// output seen after each chunk and at the end.
func feed(t *testing.T, stream []byte, chunk int) (after []string, final string) {
	t.Helper()
	rec := &utf8Recorder{t: t}
	f := newReplyFilter(rec, engine.StopTags)
	for i := 0; i < len(stream); i += chunk {
		f.Write(stream[i:min(i+chunk, len(stream))])
		after = append(after, rec.String())
	}
	if err := f.finish(); err != nil {
		t.Fatal(err)
	}
	return after, rec.String()
}

func TestReplyFilterHoldsPartialCharacters(t *testing.T) {
	for _, s := range []string{"é", "€", "😀", "ab€cd", "naïve café 😀!"} {
		after, final := feed(t, []byte(s), 1)
		if final != s+"\n" {
			t.Errorf("%q: final output %q", s, final)
		}
		// After each byte, the output is exactly the characters completed so far.
		for i, got := range after {
			prefix := []byte(s)[:i+1]
			want := string(prefix[:incompleteRuneStart(prefix)])
			if got != want {
				t.Errorf("%q after %d bytes: output %q, want %q", s, i+1, got, want)
			}
		}
	}
	// The first byte of a 4-byte character shows nothing until the rest comes.
	rec := &utf8Recorder{t: t}
	f := newReplyFilter(rec, engine.StopTags)
	emoji := []byte("😀")
	for i := 0; i < 3; i++ {
		f.Write(emoji[i : i+1])
		if rec.Len() != 0 {
			t.Fatalf("after %d of 4 bytes, wrote %q", i+1, rec.String())
		}
	}
	f.Write(emoji[3:])
	if rec.String() != "😀" {
		t.Fatalf("complete emoji shows as %q", rec.String())
	}
}

func TestReplyFilterStopTags(t *testing.T) {
	cases := []struct{ stream, want string }{
		{"hello\nuser: more text", "hello\n"},
		{"hello\nsystem: x", "hello\n"},
		{"hi\nsystem: a\nuser: b", "hi\n"},
		{"hi\nuse\nuser: b", "hi\nuse\n"},                  // a broken-off prefix, then a real tag
		{"one\ntwo\nused to it", "one\ntwo\nused to it\n"}, // prefix disambiguated
		{"ok\nuse", "ok\nuse\n"},                           // ended (max tokens) inside a prefix: all of it is the reply
		{"ok\n", "ok\n"},
		{"\nuser: ", "\n"},                       // empty reply: just the line end
		{"a\nassistant: b", "a\nassistant: b\n"}, // not a stop tag
		{"caf\xc3\nuser: x", "caf\ufffd\n"},      // a character broken by the tag is invalid
		{"x\xe2\x82\nsystem: ", "x\ufffd\n"},
	}
	for _, c := range cases {
		for _, chunk := range []int{1, 2, 3, 100} {
			_, got := feed(t, []byte(c.stream), chunk)
			if got != c.want {
				t.Errorf("%q in chunks of %d: output %q, want %q", c.stream, chunk, got, c.want)
			}
		}
	}
	// While "\nuser" could still become a tag, none of it is shown.
	rec := &utf8Recorder{t: t}
	f := newReplyFilter(rec, engine.StopTags)
	f.Write([]byte("well\nuser"))
	if rec.String() != "well" {
		t.Fatalf("held prefix: output %q, want %q", rec.String(), "well")
	}
	f.Write([]byte(": ignored"))
	f.Write([]byte("\nmore after the stop"))
	f.finish()
	if rec.String() != "well\n" {
		t.Fatalf("after the tag: output %q", rec.String())
	}
}

func TestReplyFilterInvalidBytesAndControls(t *testing.T) {
	cases := []struct{ stream, want string }{
		{"a\xffb", "a\ufffdb\n"},
		{"a\xe2\x82b", "a\ufffdb\n"}, // one U+FFFD per maximal subpart, as DecodeBytes does
		{"\xc0\x80", "\ufffd\ufffd\n"},
		{"end\xe2", "end\ufffd\n"}, // truncated at the end of the reply
		{"  \n\t hi there", "hi there\n"},
		{"\x1b[2Jboom\r!", "\\x1b[2Jboom\\x0d!\n"},
		{"tab\tok", "tab\tok\n"},
		{"bidi\u202eevil", "bidi\\u202eevil\n"},
	}
	for _, c := range cases {
		for _, chunk := range []int{1, 100} {
			_, got := feed(t, []byte(c.stream), chunk)
			if got != c.want {
				t.Errorf("%q in chunks of %d: output %q, want %q", c.stream, chunk, got, c.want)
			}
		}
	}
}

// Whatever the bytes and however they arrive, the filter writes only valid
// UTF-8 and in the end shows exactly the decoded reply, cut at the first stop
// tag.
func TestReplyFilterRandomStreams(t *testing.T) {
	pieces := [][]byte{
		[]byte("\nuser: "), []byte("\nuse"), []byte("\nsystem: "), []byte("\nsys"), []byte("\n"),
		[]byte("é"), []byte("€"), []byte("😀"), {0xe2}, {0x82}, {0xf0, 0x9f}, {0xff}, {0xc3},
		[]byte("a"), []byte(" "), []byte("\x1b"), []byte("\r"), []byte("assistant: "),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 3000; n++ {
		var stream []byte
		for k := rng.IntN(12); k >= 0; k-- {
			stream = append(stream, pieces[rng.IntN(len(pieces))]...)
		}
		want := expectedReply(stream)
		for _, chunk := range []int{1, 1 + rng.IntN(5)} {
			_, got := feed(t, stream, chunk)
			if got != want {
				t.Fatalf("stream %q in chunks of %d: output %q, want %q", stream, chunk, got, want)
			}
		}
	}
}

// expectedReply is what the terminal should show for a whole reply, computed
// in one go rather than incrementally.
func expectedReply(stream []byte) string {
	if i := stopTagIndex(stream, engine.StopTags); i >= 0 {
		stream = stream[:i]
	}
	s := sanitize(strings.TrimLeftFunc(engine.DecodeBytes(stream), unicode.IsSpace))
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s
}
