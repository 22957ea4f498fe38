package testkit

import (
	"os"
	"path/filepath"
	"testing"

	"nielsgpt/internal/harness"
)

// A model that was named is served as it is; otherwise the deployed shape,
// the same weights every time, in a folder that goes with remove.
func TestModelToServe(t *testing.T) {
	if path, remove, err := harness.ModelToServe("mine.gguf"); err != nil || path != "mine.gguf" {
		t.Fatalf("a named model became %q, %v", path, err)
	} else {
		remove()
	}
	path, remove, err := harness.ModelToServe("")
	if err != nil {
		t.Fatal(err)
	}
	defer remove() // a second call is harmless; this one is for a failed test
	want := harness.Deployed
	want.NormEps = float64(float32(want.NormEps)) // a GGUF stores it as float32
	if cfg, err := harness.ModelConfigOf(path); err != nil || cfg != want {
		t.Fatalf("config %+v, %v; want %+v", cfg, err, want)
	}
	again, err := os.ReadFile(SyntheticModel(t, harness.Deployed, 1))
	if first, _ := os.ReadFile(path); err != nil || string(first) != string(again) {
		t.Fatalf("two models of one seed differ (%v)", err)
	}
	remove()
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Fatalf("the folder is still there: %v", err)
	}
}
