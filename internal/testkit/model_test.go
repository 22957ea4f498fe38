package testkit

import (
	"os"
	"path/filepath"
	"testing"

	"nielsgpt/convert"
	"nielsgpt/gguf"
)

var tinyShape = gguf.ModelConfig{Vocab: 256, Context: 16, Embd: 8, Layers: 2, Heads: 2, FF: 16, RopeTheta: 10000, NormEps: convert.LayerNormEps}

// The model written is the shape asked for, the same for the same seed,
// and its temporary folder goes with remove.
func TestTempSyntheticModel(t *testing.T) {
	path, remove, err := TempSyntheticModel(tinyShape, 7)
	if err != nil {
		t.Fatal(err)
	}
	want := tinyShape
	want.NormEps = float64(float32(want.NormEps)) // a GGUF stores it as float32
	if cfg, err := ModelConfigOf(path); err != nil || cfg != want {
		t.Fatalf("config %+v, %v; want %+v", cfg, err, want)
	}
	again, err := os.ReadFile(SyntheticModel(t, tinyShape, 7))
	if first, _ := os.ReadFile(path); err != nil || string(first) != string(again) {
		t.Fatalf("two models of one seed differ (%v)", err)
	}
	remove()
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Fatalf("the folder is still there: %v", err)
	}
}
