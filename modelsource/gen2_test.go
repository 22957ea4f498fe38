package modelsource

// Generation-2 checkpoints: the tokenizer beside the checkpoint or named by
// TOKENIZER/--tokenizer, a conversion cache keyed on both files' sha256, the
// refusals that say what to do, and the engine's refusal passed through.

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nielsgpt/convert"
	"nielsgpt/gguf"
)

const (
	gen2PT      = "../testdata/models/tiny_gen2_b.pt"
	tinySPM     = "../testdata/spm/tiny.model"
	identitySPM = "../testdata/spm/tiny_identity.model"
)

func configWithTokenizer(model, tokenizer string) Config {
	c := configWithModel(model)
	c.Tokenizer = tokenizer
	return c
}

func tokenizerSHA(t *testing.T, ggufPath string) string {
	t.Helper()
	_, g, err := gguf.ReadFile(ggufPath)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := g.TokenizerSHA256()
	return s
}

func TestResolveGen2TokenizerBeside(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	ctx := context.Background()
	pt := copyFixture(t, gen2PT, dir, "best.pt")
	out := filepath.Join(dir, "best.gguf")

	_, err := Resolve(ctx, configWithModel(pt), Options{})
	if err == nil || !strings.Contains(err.Error(), "--tokenizer PATH") || !strings.Contains(err.Error(), "spm.model") {
		t.Fatalf("no tokenizer: %v", err)
	}

	spm := copyFixture(t, tinySPM, dir, "spm.model")
	if spec, err := Resolve(ctx, configWithModel(pt), Options{}); err != nil || spec.Path != out {
		t.Fatalf("spm.model beside: %+v %v", spec, err)
	}
	if tokenizerSHA(t, out) != sha256Hex(t, spm) {
		t.Fatal("the conversion does not record the tokenizer's sha256")
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(out, old, old); err != nil {
		t.Fatal(err)
	}
	// The same tokenizer, found beside or named elsewhere: the cache holds.
	for _, cfg := range []Config{configWithModel(pt), configWithTokenizer(pt, tinySPM)} {
		if spec, err := Resolve(ctx, cfg, Options{}); err != nil || spec.Data == nil {
			t.Fatalf("cached: %+v %v", spec, err)
		}
	}
	if info, _ := os.Stat(out); !info.ModTime().Equal(old) {
		t.Fatal("a valid cached conversion was rewritten")
	}

	// Another tokenizer beside it: not served from the cache, and refused, with both
	// hashes and both files named.
	copyFixture(t, identitySPM, dir, "spm.model")
	_, err = Resolve(ctx, configWithModel(pt), Options{})
	for _, want := range []string{pt, spm, sha256Hex(t, spm), sha256Hex(t, tinySPM)} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("changed tokenizer: error %v, want one containing %q", err, want)
		}
	}
}

// A cached conversion made with another tokenizer is stale: converted again.
func TestResolveGen2StaleTokenizer(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	pt := copyFixture(t, gen2PT, dir, "best.pt")
	out := filepath.Join(dir, "best.gguf")
	ck, err := convert.ReadCheckpoint(pt)
	if err != nil {
		t.Fatal(err)
	}
	if err := ck.UseTokenizer(tinySPM); err != nil {
		t.Fatal(err)
	}
	ck.Vocab.SHA256 = strings.Repeat("0", 64) // as if made from another spm.model
	var buf bytes.Buffer
	if err := convert.WriteGGUF(&buf, ck, sha256Hex(t, pt), convert.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	spec, err := Resolve(context.Background(), configWithTokenizer(pt, tinySPM), Options{})
	if err != nil || spec.Data != nil || spec.Path != out {
		t.Fatalf("%+v %v", spec, err)
	}
	if tokenizerSHA(t, out) != sha256Hex(t, tinySPM) {
		t.Fatal("the stale conversion was kept")
	}
}

func TestResolveTokenizerRefused(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	ctx := context.Background()
	g := filepath.Join(dir, "m.gguf")
	if err := os.WriteFile(g, []byte("GGUF"), 0o644); err != nil {
		t.Fatal(err)
	}
	demo := Options{Demo: func() []byte { return []byte("GGUF demo") }}
	for _, model := range []string{g, DemoModelName} {
		if _, err := Resolve(ctx, configWithTokenizer(model, tinySPM), demo); err == nil || !strings.Contains(err.Error(), "carries its own vocabulary") {
			t.Errorf("%s with a tokenizer: %v", model, err)
		}
	}
	// Generation 1: a tokenizer beside the checkpoint is ignored, one named is refused,
	// also when a conversion is already cached.
	pt := copyFixture(t, fixturePT, dir, "best.pt")
	copyFixture(t, tinySPM, dir, "spm.model")
	for range 2 {
		if _, err := Resolve(ctx, configWithModel(pt), Options{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Resolve(ctx, configWithTokenizer(pt, tinySPM), Options{}); err == nil || !strings.Contains(err.Error(), "takes no tokenizer") {
		t.Errorf("generation 1 with a named tokenizer: %v", err)
	}
	if _, err := Resolve(ctx, configWithTokenizer(pt, filepath.Join(dir, "none.model")), Options{}); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("a missing tokenizer: %v", err)
	}
}

// serve --model best.pt converts a generation-2 checkpoint with the tokenizer named for it
// and loads it: the engine serves it with that vocabulary.
func TestLoadGen2(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	pt := copyFixture(t, gen2PT, dir, "best.pt")
	m, _, err := Load(context.Background(), configWithTokenizer(pt, tinySPM), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Config().Generation() != 2 || m.Tokenizer().VocabSize() != m.Config().Vocab {
		t.Fatalf("loaded generation %d with a vocabulary of %d", m.Config().Generation(), m.Tokenizer().VocabSize())
	}
}

func TestConfigTokenizer(t *testing.T) {
	c, err := parseFlags([]string{"--tokenizer", "flag.model"}, map[string]string{"TOKENIZER": "env.model"}, io.Discard)
	if err != nil || c.Tokenizer != "flag.model" {
		t.Fatalf("%+v %v", c, err)
	}
	if c, err := FromEnv(func(k string) (string, bool) { return map[string]string{"TOKENIZER": "env.model"}[k], k == "TOKENIZER" }); err != nil || c.Tokenizer != "env.model" {
		t.Fatalf("%+v %v", c, err)
	}
	if DefaultConfig().Tokenizer != "" {
		t.Fatal("a default tokenizer")
	}
}
