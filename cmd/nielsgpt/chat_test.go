// Tests for nielsgpt chat's command and loop: the flags, the history window,
// the REPL against a scripted model for exact behaviour (stop tags, Ctrl-C,
// /reset), and the REPL against a real tiny model for streaming. The scripted
// and tiny models here serve the reply, trace and sanitise tests too.
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"nielsgpt/engine"
	"nielsgpt/gguf"
	"nielsgpt/internal/testkit"
)

// The tiny model is converted once for all of this package's tests and
// removed after them.
func TestMain(m *testing.M) { testkit.Main(m) }

func TestFitHistory(t *testing.T) {
	sys := engine.Message{Role: "system", Content: "sys"}
	u := func(s string) engine.Message { return engine.Message{Role: "user", Content: s} }
	a := func(s string) engine.Message { return engine.Message{Role: "assistant", Content: s} }
	history := []engine.Message{sys, u("one"), a("1111"), u("two"), a("2222"), u("three")}
	size := func(h []engine.Message) int { return len(engine.FormatTranscript(h)) }

	if got := fitHistory(history, 1000, size); len(got) != len(history) {
		t.Fatalf("everything fits, yet kept %d of %d messages", len(got), len(history))
	}
	// Room for the system line and the last exchange plus the new question.
	limit := size([]engine.Message{sys, u("two"), a("2222"), u("three")})
	got := fitHistory(history, limit, size)
	if fmt.Sprint(got) != fmt.Sprint([]engine.Message{sys, u("two"), a("2222"), u("three")}) {
		t.Fatalf("limit %d: kept %v", limit, got)
	}
	// One byte less: the older exchange goes as a whole, never a reply without its question.
	got = fitHistory(history, limit-1, size)
	if fmt.Sprint(got) != fmt.Sprint([]engine.Message{sys, u("three")}) {
		t.Fatalf("limit %d: kept %v", limit-1, got)
	}
	// The newest question stays even when it alone is too long for the window.
	got = fitHistory(history, 3, size)
	if fmt.Sprint(got) != fmt.Sprint([]engine.Message{sys, u("three")}) {
		t.Fatalf("tiny window: kept %v", got)
	}
	// No system message.
	got = fitHistory([]engine.Message{u("one"), a("1"), u("two")}, 5, size)
	if fmt.Sprint(got) != fmt.Sprint([]engine.Message{u("two")}) {
		t.Fatalf("no system: kept %v", got)
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

func (m *scriptedModel) FormatChat(messages []engine.Message) ([]int32, error) {
	var ids []int32
	for _, b := range engine.FormatTranscript(messages) {
		ids = append(ids, int32(b))
	}
	return ids, nil
}

func (m *scriptedModel) TokenDisplay(id int) string { return engine.TokenDisplay(id) }

func (m *scriptedModel) Generate(ctx context.Context, req engine.GenerateRequest, onStep func(*engine.Step) error) (*engine.Result, error) {
	prompt := engine.FormatTranscript(req.Messages)
	m.mu.Lock()
	reply := m.replies[len(m.prompts)%len(m.replies)]
	m.prompts = append(m.prompts, string(prompt))
	m.mu.Unlock()
	all := append([]byte(nil), prompt...)
	var generated []byte
	for i := 0; i < len(reply) && i < req.MaxNewTokens; i++ {
		if m.hangAfter > 0 && i == m.hangAfter {
			close(m.hanging)
			<-ctx.Done()
			return nil, ctx.Err()
		}
		s := &engine.Step{Index: i, TokenID: int(reply[i]), Text: []byte{reply[i]}, Entropy: 0.5}
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
		if cut := stopTagIndex(generated, engine.StopTags); cut >= 0 {
			generated = generated[:cut]
			break
		}
	}
	return &engine.Result{Generated: generated, Reply: engine.ExtractReply(append(prompt, generated...)), Stopped: "stop_tag"}, nil
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
	testkit.Eventually(t, 10*time.Second, "the cancelled reply and a new prompt", func() bool { return strings.Contains(rec.String(), "[cancelled]\nyou> ") })
	inW.Write([]byte("next\n"))
	testkit.Eventually(t, 10*time.Second, "the second reply and a new prompt", func() bool { return strings.Contains(rec.String(), "bot> second\nyou> ") })
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

// tinyModel loads the tiny fixture checkpoint through the real converter and
// engine.
func tinyModel(t *testing.T) *engine.Model {
	t.Helper()
	tinyPath := testkit.ConvertedFixture(t, filepath.Join("..", "..", "testdata", "models", "tiny_a.pt"))
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
		w.prompts = append(w.prompts, string(engine.FormatTranscript(req.Messages)))
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
	if want := string(engine.FormatTranscript(fitHistory(history, m.Config().Context, transcriptLength(m)))); m.prompts[1] != want {
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
