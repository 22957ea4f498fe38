package main

// `nielsgpt convert` on a generation-2 checkpoint: --tokenizer anywhere among the
// arguments, what it prints about the tokenizer, and the refusal that says how to pass one.

import (
	"bytes"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"nielsgpt/gguf"
)

func TestConvertGeneration2(t *testing.T) {
	ckpt := filepath.Join("..", "..", "testdata", "models", "tiny_gen2_b.pt")
	spm := filepath.Join("..", "..", "testdata", "spm", "tiny.model")
	out := filepath.Join(t.TempDir(), "best.gguf")

	var stdout bytes.Buffer
	if err := convertCommand([]string{ckpt, "--tokenizer", spm, "-o", out, "--f16"}, &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"gen    2 (rmsnorm, swiglu", "tokenizer " + spm, "matches train_cfg._settings_meta.tokenizer_sha256", "V=1000 T=20"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
	_, g, err := gguf.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if tok, err := g.Tokenizer(); err != nil || tok.VocabSize() != 1000 {
		t.Fatalf("tokenizer of the GGUF: %v", err)
	}

	err = convertCommand([]string{ckpt, "-o", filepath.Join(t.TempDir(), "x.gguf")}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--tokenizer PATH") {
		t.Errorf("no tokenizer: %v", err)
	}
}
