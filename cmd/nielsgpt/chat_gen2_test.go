package main

// nielsgpt chat with a generation-2 model: the token-native chat, the reply streamed from
// its pieces' bytes and ended by end-of-turn, and --trace naming pieces.

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"nielsgpt/engine"
	"nielsgpt/internal/testkit"
)

func tinyGen2Model(t *testing.T) *engine.Model {
	t.Helper()
	path := testkit.ConvertedGen2Fixture(t, filepath.Join("..", "..", "testdata", "models", "tiny_gen2_b.pt"),
		filepath.Join("..", "..", "testdata", "spm", "tiny.model"))
	m, err := engine.LoadFile(path, engine.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func TestChatLoopGeneration2(t *testing.T) {
	model := tinyGen2Model(t)
	rec := &utf8Recorder{t: t}
	m := &watchedModel{Model: model, out: rec}
	opts := defaultTestOptions()
	opts.Sampling = engine.Sampling{Temperature: 1, Seed: 11}
	opts.MaxNewTokens = 30
	in := strings.NewReader("hello there\nand more?\n")
	if err := chatLoop(context.Background(), in, rec, m, opts); err != nil {
		t.Fatal(err)
	}
	replies := regexp.MustCompile(`(?m)^bot> (.*)$`).FindAllStringSubmatch(rec.String(), -1)
	if len(replies) != 2 || len(m.results) != 2 {
		t.Fatalf("want 2 replies, got %d:\n%s", len(replies), rec.String())
	}
	for i, res := range m.results {
		// What the terminal shows is the generated text, decoded and sanitised, its
		// leading space trimmed; eot (if it came) is not part of it.
		want := sanitize(strings.TrimLeftFunc(engine.DecodeBytes(res.Generated), unicode.IsSpace))
		if first, _, _ := strings.Cut(want, "\n"); replies[i][1] != first {
			t.Fatalf("reply %d shows %q, generated %q", i, replies[i][1], res.Generated)
		}
	}
	// The second turn's prompt is the token-native transcript of the first exchange,
	// with the reply as the API reads it.
	history := []engine.Message{{Role: "system", Content: opts.System}, {Role: "user", Content: "hello there"},
		{Role: "assistant", Content: m.results[0].Reply}, {Role: "user", Content: "and more?"}}
	ids, err := model.FormatChat(fitHistory(history, model.Config().Context, transcriptLength(model)))
	if err != nil {
		t.Fatal(err)
	}
	if m.results[1].PromptTokens != len(ids) {
		t.Fatalf("second prompt has %d ids, want %d", m.results[1].PromptTokens, len(ids))
	}

	// --trace names the pieces the model attended to.
	rec = &utf8Recorder{t: t}
	opts.Trace, opts.TraceLayer, opts.MaxNewTokens = true, 2, 5
	if err := chatLoop(context.Background(), strings.NewReader("hello there\n"), rec, model, opts); err != nil {
		t.Fatal(err)
	}
	lines := regexp.MustCompile(`(?m)^ +\d+  '.*' +H=\d+\.\d\d  ← '.*'@-\d+\(\d\.\d\d\)`).FindAllString(rec.String(), -1)
	if len(lines) == 0 {
		t.Fatalf("no trace lines:\n%s", rec.String())
	}
}
