package engine

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"nielsgpt/gguf"
	"nielsgpt/tokenizer"
)

// Until the C graph has RMSNorm and SwiGLU, a generation-2 file that the reader accepts is
// refused at load with a message saying so, before anything reaches C.
func TestLoadRefusesGeneration2(t *testing.T) {
	sp, err := tokenizer.LoadModel(filepath.Join("..", "testdata", "spm", "tiny.model"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := gguf.ModelConfig{Vocab: sp.VocabSize(), Context: 8, Embd: 8, Layers: 1, Heads: 2, FF: 8, RopeTheta: 10000, NormEps: 1e-5,
		Norm: gguf.NormRMS, MLP: gguf.MLPSwiGLU}
	weights := map[string][]float32{}
	for _, spec := range cfg.Tensors() {
		n := 1
		for _, d := range spec.Shape {
			n *= d
		}
		weights[spec.Name] = make([]float32, n)
	}
	voc := gguf.Vocabulary{Vocab: sp.Export(), SHA256: strings.Repeat("ab", 32)}
	var buf bytes.Buffer
	if err := gguf.WriteWithVocabulary(&buf, cfg, weights, voc, gguf.Source{SHA256: strings.Repeat("cd", 32)}, gguf.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	m, err := LoadBytes(buf.Bytes(), Options{})
	if err == nil {
		m.Close()
		t.Fatal("a generation-2 model loaded")
	}
	if !strings.Contains(err.Error(), "generation-2 models are not supported by this engine yet") {
		t.Errorf("error %q does not say why", err)
	}
}
