// Tests for nielsgpt chat: the reply filter (UTF-8 and stop-tag holding) on
// crafted byte streams, the history and attention helpers, the REPL against a
// scripted model for exact behaviour (stop tags, Ctrl-C, /reset), and the REPL
// against a real tiny model for streaming and --trace.
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"nielsgpt/convert"
	"nielsgpt/engine"
	"nielsgpt/gguf"
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
	f := newReplyFilter(rec)
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
	f := newReplyFilter(rec)
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
	f := newReplyFilter(rec)
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
	if i := stopTagIndex(stream); i >= 0 {
		stream = stream[:i]
	}
	s := sanitize(strings.TrimLeftFunc(engine.DecodeBytes(stream), unicode.IsSpace))
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s
}

func TestFitHistory(t *testing.T) {
	sys := engine.Message{Role: "system", Content: "sys"}
	u := func(s string) engine.Message { return engine.Message{Role: "user", Content: s} }
	a := func(s string) engine.Message { return engine.Message{Role: "assistant", Content: s} }
	history := []engine.Message{sys, u("one"), a("1111"), u("two"), a("2222"), u("three")}
	size := func(h []engine.Message) int { return len(engine.FormatTranscript(h)) }

	if got := fitHistory(history, 1000); len(got) != len(history) {
		t.Fatalf("everything fits, yet kept %d of %d messages", len(got), len(history))
	}
	// Room for the system line and the last exchange plus the new question.
	limit := size([]engine.Message{sys, u("two"), a("2222"), u("three")})
	got := fitHistory(history, limit)
	if fmt.Sprint(got) != fmt.Sprint([]engine.Message{sys, u("two"), a("2222"), u("three")}) {
		t.Fatalf("limit %d: kept %v", limit, got)
	}
	// One byte less: the older exchange goes as a whole, never a reply without its question.
	got = fitHistory(history, limit-1)
	if fmt.Sprint(got) != fmt.Sprint([]engine.Message{sys, u("three")}) {
		t.Fatalf("limit %d: kept %v", limit-1, got)
	}
	// The newest question stays even when it alone is too long for the window.
	got = fitHistory(history, 3)
	if fmt.Sprint(got) != fmt.Sprint([]engine.Message{sys, u("three")}) {
		t.Fatalf("tiny window: kept %v", got)
	}
	// No system message.
	got = fitHistory([]engine.Message{u("one"), a("1"), u("two")}, 5)
	if fmt.Sprint(got) != fmt.Sprint([]engine.Message{u("two")}) {
		t.Fatalf("no system: kept %v", got)
	}
}

func TestTopAttended(t *testing.T) {
	tokens := []byte("xxhello") // window of the last 5: h e l l o
	attn := [][]float32{
		{0.1, 0.2, 0.3, 0.0, 0.4},
		{0.3, 0.2, 0.1, 0.0, 0.4},
	}
	top, err := topAttended(attn, tokens, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []attended{{1, 'o', 0.4}, {5, 'h', 0.2}, {3, 'l', 0.2}}
	// Equal weights: the nearer position first.
	want[1], want[2] = want[2], want[1]
	if len(top) != 3 {
		t.Fatalf("got %v", top)
	}
	for i := range want {
		if top[i].distance != want[i].distance || top[i].token != want[i].token || math.Abs(top[i].weight-want[i].weight) > 1e-6 {
			t.Fatalf("top %d: got %+v, want %+v (all %+v)", i, top[i], want[i], top)
		}
	}
	if top, _ := topAttended([][]float32{{1}}, []byte("a"), 3); len(top) != 1 || top[0].token != 'a' {
		t.Fatalf("one-position window: %+v", top)
	}
	for _, bad := range [][][]float32{nil, {{}}, {{0.5, 0.5}, {1}}, {make([]float32, 9)}} {
		if _, err := topAttended(bad, tokens, 3); err == nil {
			t.Errorf("attention %v over %d tokens: no error", bad, len(tokens))
		}
	}
}

// ---- the REPL against a scripted model ----

// scriptedModel streams fixed byte strings as replies, cutting at stop tags
// as the engine does, and records the prompts it was given.
type scriptedModel struct {
	cfg     gguf.ModelConfig
	replies []string // the i-th Generate streams replies[i % len]
	// hangAfter, when > 0, makes Generate wait for cancellation after that
	// many bytes, telling hanging first.
	hangAfter int
	hanging   chan struct{}

	mu      sync.Mutex
	prompts []string
}

func (m *scriptedModel) Config() gguf.ModelConfig { return m.cfg }

func (m *scriptedModel) Generate(ctx context.Context, req engine.GenerateRequest, onStep func(*engine.Step) error) (*engine.Result, error) {
	m.mu.Lock()
	reply := m.replies[len(m.prompts)%len(m.replies)]
	m.prompts = append(m.prompts, string(req.Prompt))
	m.mu.Unlock()
	all := append([]byte(nil), req.Prompt...)
	var generated []byte
	for i := 0; i < len(reply) && i < req.MaxNewTokens; i++ {
		if m.hangAfter > 0 && i == m.hangAfter {
			close(m.hanging)
			<-ctx.Done()
			return nil, ctx.Err()
		}
		s := &engine.Step{Index: i, TokenID: int(reply[i]), Entropy: 0.5}
		if req.TraceLayer >= 0 {
			t := min(len(all), m.cfg.Context)
			for h := 0; h < m.cfg.Heads; h++ {
				row := make([]float32, t)
				row[t-1] = 1 // all on the newest position
				s.Attn = append(s.Attn, row)
			}
		}
		if err := onStep(s); err != nil {
			return nil, err
		}
		all = append(all, reply[i])
		generated = append(generated, reply[i])
		if cut := stopTagIndex(generated); cut >= 0 {
			generated = generated[:cut]
			break
		}
	}
	return &engine.Result{Generated: generated, Reply: engine.ExtractReply(append(req.Prompt, generated...)), Stopped: "stop_tag"}, nil
}

func (m *scriptedModel) prompt(i int) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.prompts[i]
}

var scriptedConfig = gguf.ModelConfig{Vocab: 256, Context: 256, Embd: 8, Layers: 2, Heads: 2, FF: 16}

func defaultTestOptions() chatOptions {
	return chatOptions{
		System:       "be terse",
		Sampling:     engine.Sampling{Temperature: 0.9, TopK: 50, Seed: 42},
		MaxNewTokens: 64,
		TraceLayer:   1,
	}
}

func TestChatLoopScripted(t *testing.T) {
	m := &scriptedModel{cfg: scriptedConfig, replies: []string{
		" no.\nuser: tell me more",
		"caf\xc3\xa9 \xf0\x9f\x98\x80 ok",
		"again",
	}}
	rec := &utf8Recorder{t: t}
	in := strings.NewReader("hello\n\nand now?\n/reset\r\nhi\n/nonsense\n")
	if err := chatLoop(context.Background(), in, rec, m, defaultTestOptions()); err != nil {
		t.Fatal(err)
	}
	want := "you> hello\nbot> no.\n" +
		"you> \n" +
		"you> and now?\nbot> café 😀 ok\n" +
		"you> /reset\n(conversation forgotten)\n" +
		"you> hi\nbot> again\n" +
		"you> /nonsense\nunknown command /nonsense (try /help)\n"
	if got := rec.String(); got != want {
		t.Fatalf("output:\n%s\nwant:\n%s", got, want)
	}
	// The history carries the cut reply; /reset leaves only the system line.
	if p := m.prompt(1); p != "system: be terse\nuser: hello\nassistant: no.\nuser: and now?\nassistant: " {
		t.Fatalf("second prompt %q", p)
	}
	if p := m.prompt(2); p != "system: be terse\nuser: hi\nassistant: " {
		t.Fatalf("prompt after /reset %q", p)
	}
}

func TestChatLoopQuitAndEOF(t *testing.T) {
	m := &scriptedModel{cfg: scriptedConfig, replies: []string{"x"}}
	rec := &utf8Recorder{t: t}
	if err := chatLoop(context.Background(), strings.NewReader("a\n/quit\nb\n"), rec, m, defaultTestOptions()); err != nil {
		t.Fatal(err)
	}
	if len(m.prompts) != 1 || strings.Contains(rec.String(), "you> b") {
		t.Fatalf("/quit did not stop the chat: %d replies, output %q", len(m.prompts), rec.String())
	}
	// Interactive: a prompt before every line, and a clean line at EOF.
	rec = &utf8Recorder{t: t}
	opts := defaultTestOptions()
	opts.Interactive = true
	if err := chatLoop(context.Background(), strings.NewReader("a"), rec, m, opts); err != nil {
		t.Fatal(err)
	}
	if got := rec.String(); got != "you> bot> x\nyou> \n" {
		t.Fatalf("interactive output %q", got)
	}
}

func TestChatLoopCtrlC(t *testing.T) {
	m := &scriptedModel{cfg: scriptedConfig, replies: []string{"partial reply that never ends", "second"}, hangAfter: 7, hanging: make(chan struct{})}
	interrupts := make(chan os.Signal, 1)
	opts := defaultTestOptions()
	opts.Interactive = true
	opts.Interrupts = interrupts
	inR, inW := io.Pipe()
	rec := &utf8Recorder{t: t}
	done := make(chan error, 1)
	go func() { done <- chatLoop(context.Background(), inR, rec, m, opts) }()

	inW.Write([]byte("first\n"))
	<-m.hanging
	m.hangAfter = 0            // before the send, which orders it before the next reply
	interrupts <- os.Interrupt // during a reply: cancels it
	waitFor(t, func() bool { return strings.Contains(rec.String(), "[cancelled]\nyou> ") })
	inW.Write([]byte("next\n"))
	waitFor(t, func() bool { return strings.Contains(rec.String(), "bot> second\nyou> ") })
	interrupts <- os.Interrupt // at the prompt: leaves
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Ctrl-C at the prompt did not end the chat")
	}
	want := "you> bot> partial [cancelled]\nyou> bot> second\nyou> \n"
	if got := rec.String(); got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
	// The cancelled turn is forgotten.
	if p := m.prompt(1); p != "system: be terse\nuser: next\nassistant: " {
		t.Fatalf("prompt after a cancelled reply: %q", p)
	}
	inW.Close()

	// Piped: Ctrl-C during a reply ends the whole chat.
	m = &scriptedModel{cfg: scriptedConfig, replies: []string{"never ends"}, hangAfter: 3, hanging: make(chan struct{})}
	opts.Interactive = false
	go func() {
		done <- chatLoop(context.Background(), strings.NewReader("a\nb\n"), &utf8Recorder{t: t}, m, opts)
	}()
	<-m.hanging
	interrupts <- os.Interrupt
	if err := <-done; err != errInterrupted {
		t.Fatalf("piped chat interrupted mid-reply returned %v", err)
	}
}

// Whatever a user pipes in is echoed as valid UTF-8 with controls made
// visible, and reaches the model as it was typed.
func TestChatLoopEchoesHostileInputSafely(t *testing.T) {
	m := &scriptedModel{cfg: scriptedConfig, replies: []string{"k"}}
	rec := &utf8Recorder{t: t}
	if err := chatLoop(context.Background(), strings.NewReader("bad\xff \x1b[31mred\n"), rec, m, defaultTestOptions()); err != nil {
		t.Fatal(err)
	}
	if got, want := rec.String(), "you> bad\ufffd \\x1b[31mred\nbot> k\n"; got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
	if p := m.prompt(0); !strings.Contains(p, "user: bad\xff \x1b[31mred\n") {
		t.Fatalf("prompt %q", p)
	}
}

func TestChatLoopTraceScripted(t *testing.T) {
	m := &scriptedModel{cfg: scriptedConfig, replies: []string{"hé"}}
	rec := &utf8Recorder{t: t}
	opts := defaultTestOptions()
	opts.Trace = true
	opts.System = ""
	if err := chatLoop(context.Background(), strings.NewReader("yo\n"), rec, m, opts); err != nil {
		t.Fatal(err)
	}
	out := rec.String()
	// Every step attended only to the newest byte: ' ' (of "assistant: "), then 'h', then 0xc3.
	for _, line := range []string{
		"     0  'h'       H=0.50  ← ' '@-1(1.00)\n",
		"     1  '\\xc3'    H=0.50  ← 'h'@-1(1.00)\n",
		"     2  '\\xa9'    H=0.50  ← '\\xc3'@-1(1.00)\n",
		"bot> hé\n",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("trace output lacks %q:\n%s", line, out)
		}
	}
}

func TestChatLoopRejectsBadOptions(t *testing.T) {
	m := &scriptedModel{cfg: scriptedConfig, replies: []string{"x"}}
	opts := defaultTestOptions()
	opts.Trace, opts.TraceLayer = true, 2
	if err := chatLoop(context.Background(), strings.NewReader("a\n"), &bytes.Buffer{}, m, opts); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Fatalf("trace layer 2 of 2 layers: %v", err)
	}
	// An endless line is an error, not a hang or a panic.
	long := strings.NewReader(strings.Repeat("a", maxInputLine+10))
	if err := chatLoop(context.Background(), long, &bytes.Buffer{}, m, defaultTestOptions()); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("overlong line: %v", err)
	}
}

func TestRunChatFlagErrors(t *testing.T) {
	t.Setenv("MODEL", "") // set-but-empty would mean the Hub; the cases name their model
	os.Unsetenv("MODEL")
	weights := filepath.Join(t.TempDir(), "weights.bin")
	notGGUF := filepath.Join(t.TempDir(), "not-really.gguf")
	for _, p := range []string{weights, notGGUF} {
		if err := os.WriteFile(p, []byte("not a model"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--temperature", "-1"}, "--temperature"},
		{[]string{"--temperature", "NaN"}, "--temperature"},
		{[]string{"--top-k", "-3"}, "--top-k"},
		{[]string{"--max-new-tokens", "0"}, "--max-new-tokens"},
		{[]string{"--max-new-tokens", "99999999"}, "--max-new-tokens"},
		{[]string{"--threads", "-1"}, "--threads"},
		{[]string{"--trace-layer", "-2"}, "layer number"},
		{[]string{"--trace-layer", "x"}, "layer number"},
		{[]string{"--system", "two\nlines"}, "--system"},
		{[]string{"stray"}, "unexpected argument"},
		{[]string{"--model", weights}, "not a model file"},
		{[]string{"--model", filepath.Join(t.TempDir(), "missing.gguf")}, "missing.gguf: no such file"},
		{[]string{"--model", filepath.Join(t.TempDir(), "missing.pt")}, "missing.pt: no such file"},
		{[]string{"--model", notGGUF}, "not-really.gguf"},
	} {
		err := runChat(c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("runChat %q: error %v, want one mentioning %q", c.args, err, c.want)
		}
	}
}

// ---- the REPL against a real tiny model ----

var (
	tinyOnce sync.Once
	tinyPath string
	tinyErr  error
)

// tinyModel loads the tiny fixture checkpoint through the real converter and
// engine (converted once per test binary).
func tinyModel(t *testing.T) *engine.Model {
	t.Helper()
	tinyOnce.Do(func() {
		pt := filepath.Join("..", "..", "testdata", "models", "tiny_a.pt")
		if _, err := os.Stat(pt); err != nil {
			tinyErr = fmt.Errorf("fixture missing (make fixtures): %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "nielsgpt-chat-test")
		if err != nil {
			tinyErr = err
			return
		}
		tinyPath = filepath.Join(dir, "tiny_a.gguf")
		_, tinyErr = convert.ToGGUF(pt, tinyPath, convert.Options{})
	})
	if tinyErr != nil {
		t.Fatal(tinyErr)
	}
	m, err := engine.LoadFile(tinyPath, engine.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// watchedModel records, at every step, how much output the chat had already
// written: a streamed reply grows while it is generated, not all at the end.
type watchedModel struct {
	*engine.Model
	out     *utf8Recorder
	mu      sync.Mutex
	seen    []int
	steps   int
	results []*engine.Result
	prompts []string
}

func (w *watchedModel) Generate(ctx context.Context, req engine.GenerateRequest, onStep func(*engine.Step) error) (*engine.Result, error) {
	res, err := w.Model.Generate(ctx, req, func(s *engine.Step) error {
		err := onStep(s)
		w.mu.Lock()
		w.seen = append(w.seen, w.out.Len())
		w.steps++
		w.mu.Unlock()
		return err
	})
	if res != nil {
		w.results = append(w.results, res)
		w.prompts = append(w.prompts, string(req.Prompt))
	}
	return res, err
}

func TestChatLoopTinyModelStreams(t *testing.T) {
	rec := &utf8Recorder{t: t}
	m := &watchedModel{Model: tinyModel(t), out: rec}
	opts := defaultTestOptions()
	opts.System = demoSystemLine
	opts.MaxNewTokens = 40
	in := strings.NewReader("tell me about niels\nand more?\n/reset\ntell me about niels\n")
	if err := chatLoop(context.Background(), in, rec, m, opts); err != nil {
		t.Fatal(err)
	}
	out := rec.String()
	replies := regexp.MustCompile(`(?m)^bot> .*$`).FindAllString(out, -1)
	if len(replies) != 3 || len(m.results) != 3 {
		t.Fatalf("want 3 replies, got %d (%d generations):\n%s", len(replies), len(m.results), out)
	}
	// The second turn sees the first exchange (as much of it as fits the
	// window); after /reset the prompt is exactly the first one again, and
	// with the same seed so is the reply.
	history := []engine.Message{
		{Role: "system", Content: demoSystemLine}, {Role: "user", Content: "tell me about niels"},
		{Role: "assistant", Content: m.results[0].Reply}, {Role: "user", Content: "and more?"},
	}
	if want := string(engine.FormatTranscript(fitHistory(history, m.Config().Context))); m.prompts[1] != want {
		t.Fatalf("second prompt %q, want %q", m.prompts[1], want)
	}
	if m.prompts[2] != m.prompts[0] {
		t.Fatalf("prompt after /reset %q, want the first one %q", m.prompts[2], m.prompts[0])
	}
	if string(m.results[0].Generated) != string(m.results[2].Generated) {
		t.Fatalf("/reset did not restore the first prompt: %q vs %q", m.results[0].Generated, m.results[2].Generated)
	}
	// Streaming: the output grew during generation, over many steps.
	distinct := map[int]bool{}
	for _, n := range m.seen {
		distinct[n] = true
	}
	if m.steps < 10 || len(distinct) < m.steps/3 {
		t.Fatalf("output grew at %d distinct points over %d steps: not streamed", len(distinct), m.steps)
	}
	// What was shown is the cut reply, decoded.
	for i, res := range m.results {
		if want := strings.TrimRight(expectedReply(res.Generated), "\n"); !strings.Contains(out, "bot> "+want) {
			t.Errorf("reply %d: output lacks %q:\n%s", i, want, out)
		}
	}
}

var traceLine = regexp.MustCompile(`^\s+(\d+)\s+'(\\x[0-9a-f]{2}|.)'\s+H=(\d+\.\d\d)\s+← (.*)$`)
var attendedItem = regexp.MustCompile(`'(\\x[0-9a-f]{2}|.)'@-(\d+)\((\d\.\d\d)\)`)

func TestChatLoopTinyModelTrace(t *testing.T) {
	model := tinyModel(t)
	cfg := model.Config()
	rec := &utf8Recorder{t: t}
	opts := defaultTestOptions()
	opts.Trace = true
	opts.TraceLayer = cfg.Layers - 1
	opts.MaxNewTokens = 30
	if err := chatLoop(context.Background(), strings.NewReader("hi\nwhat?\n"), rec, model, opts); err != nil {
		t.Fatal(err)
	}
	out := rec.String()
	steps, expectNext := 0, 0
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "bot> ") {
			expectNext = 0
			continue
		}
		if strings.HasPrefix(line, "you> ") || strings.HasPrefix(line, "  step") || line == "" {
			continue
		}
		m := traceLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("not a trace line: %q\n%s", line, out)
		}
		if idx, _ := strconv.Atoi(m[1]); idx != expectNext {
			t.Fatalf("step %d, want %d: %q", idx, expectNext, line)
		}
		expectNext++
		steps++
		h, _ := strconv.ParseFloat(m[3], 64)
		if h < 0 || h > math.Log(256)+0.01 {
			t.Errorf("entropy %v out of [0, ln 256]: %q", h, line)
		}
		items := attendedItem.FindAllStringSubmatch(m[4], -1)
		if len(items) == 0 || len(items) > 3 {
			t.Fatalf("want 1..3 attended bytes: %q", line)
		}
		sum, prev := 0.0, 2.0
		for _, it := range items {
			w, _ := strconv.ParseFloat(it[3], 64)
			d, _ := strconv.Atoi(it[2])
			if w < 0 || w > 1 || w > prev+1e-9 || d < 1 || d > cfg.Context {
				t.Errorf("attended %q: weight %v (previous %v), distance %d: %q", it[0], w, prev, d, line)
			}
			sum += w
			prev = w
		}
		if sum > 1.02 {
			t.Errorf("top attention weights sum to %v: %q", sum, line)
		}
	}
	if steps < 2 || strings.Count(out, "bot> ") != 2 {
		t.Fatalf("want trace lines and 2 replies:\n%s", out)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
