package gguf

// Fuzzing the GGUF reader, which reads files from disk and the Hub before the engine
// hands anything to ggml. Its seed corpus lives in testdata/fuzz/FuzzParseGGUF/ and is
// written by
//
//	go test -run TestWriteGGUFSeeds ./gguf/ -args -write-gguf-seeds

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

var writeGGUFSeeds = flag.Bool("write-gguf-seeds", false, "rewrite testdata/fuzz/FuzzParseGGUF seeds")

func FuzzParseGGUF(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := Parse(data)
		if err != nil {
			return
		}
		for _, tt := range g.Tensors {
			if tt.Offset < 0 || tt.Size < 0 || tt.Offset+tt.Size > int64(len(data)) || tt.Offset%int64(g.Alignment) != 0 {
				t.Fatalf("tensor %s at %d+%d escapes a file of %d bytes", tt.Name, tt.Offset, tt.Size, len(data))
			}
		}
		_, _ = g.ModelConfig()
		_, _ = g.Tokenizer() // generation 2: the stored vocabulary too
	})
}

// seedCfg is the smallest valid generation 1 model: 19 tensors of a few floats each, so
// mutations land on headers and metadata as often as on weights.
var seedCfg = ModelConfig{Vocab: 256, Context: 4, Embd: 2, Layers: 1, Heads: 1, FF: 4, RopeTheta: 10000, NormEps: 1e-5}

// TestWriteGGUFSeeds regenerates the FuzzParseGGUF seed files (only with the flag).
func TestWriteGGUFSeeds(t *testing.T) {
	if !*writeGGUFSeeds {
		t.Skip("pass -args -write-gguf-seeds to rewrite the seeds")
	}
	// Each tensor counts 0.5, 1.5, ...: the values of convert's hand-built checkpoint,
	// which the committed seeds were first written from.
	weights := map[string][]float32{}
	for _, spec := range seedCfg.Tensors() {
		data := make([]float32, spec.numel())
		for i := range data {
			data[i] = float32(i) + 0.5
		}
		weights[spec.Name] = data
	}
	src := Source{SHA256: testSHA, Step: 3}
	seeds := map[string][]byte{
		"tiny_f32": writeTest(t, seedCfg, weights, src, WriteOptions{}),
		"tiny_f16": writeTest(t, seedCfg, weights, src, WriteOptions{F16: true}),
		"kv_types": rawGGUF(t, []kv{{"u8", uint8(1)}, {"s", "x"}, {"as", []string{"a", "b"}}, {"f64", 1.5}, {"b", true}}, nil),
	}
	seeds["header_only"] = seeds["tiny_f32"][:24]
	// Generation 2 with the smallest vocabulary it accepts, so mutations reach the
	// tokenizer keys.
	voc := handVocab()
	gen2 := ModelConfig{Vocab: len(voc.Pieces), Context: 4, Embd: 2, Layers: 1, Heads: 1, FF: 2, RopeTheta: 10000, NormEps: 1e-5, Norm: NormRMS, MLP: MLPSwiGLU}
	seeds["tiny_gen2"] = writeGen2(t, gen2, voc, WriteOptions{})
	dir := filepath.Join("testdata", "fuzz", "FuzzParseGGUF")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(data)))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
