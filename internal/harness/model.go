package harness

// Models with random weights of any shape, so that the bench, the soak and
// the tests can serve a model of the deployed size without a download or a
// training run.

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"nielsgpt/convert"
	"nielsgpt/gguf"
)

// Deployed is the shape of the model the original service ran and this one
// serves: bytes in, 256-token window, 4 layers of 4 heads over 256 channels.
var Deployed = gguf.ModelConfig{Vocab: 256, Context: 256, Embd: 256, Layers: 4, Heads: 4, FF: 1024, RopeTheta: 10000, NormEps: convert.LayerNormEps}

// SyntheticStd is the weights' standard deviation: in the range of a trained
// small GPT's matrices, so activations and softmaxes behave like a real
// model's (no saturation, no all-uniform attention) and the timing is honest.
const SyntheticStd = 0.04

// WriteSyntheticModel writes a GGUF of shape cfg with random weights to
// dir/synthetic.gguf and returns its path. seed makes it reproducible.
func WriteSyntheticModel(dir string, cfg gguf.ModelConfig, seed uint64) (string, error) {
	rng := rand.New(rand.NewPCG(seed, 0x6e69656c73)) // "niels": any fixed stream will do
	ck := convert.SyntheticCheckpoint(cfg, func() float32 { return float32(rng.NormFloat64() * SyntheticStd) })
	// There is no source .pt; the GGUF still records a SHA-256, so make it
	// name what the file really is rather than pretend to be a checkpoint's.
	origin := sha256.Sum256(fmt.Appendf(nil, "nielsgpt bench synthetic model %+v std=%g seed=%d", cfg, SyntheticStd, seed))

	path := filepath.Join(dir, "synthetic.gguf")
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	err = convert.WriteGGUF(w, ck, hex.EncodeToString(origin[:]), convert.Options{})
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("writing the synthetic model: %w", err)
	}
	return path, nil
}

// ModelToServe is the model a driver (the bench, the soak) serves: model
// when one is given, otherwise a deployed-size model with random weights
// written to a new temporary folder. remove deletes what was written, if
// anything.
func ModelToServe(model string) (path string, remove func(), err error) {
	if model != "" {
		return model, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "nielsgpt-synthetic-")
	if err != nil {
		return "", nil, err
	}
	if path, err = WriteSyntheticModel(dir, Deployed, 1); err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, err
	}
	return path, func() { _ = os.RemoveAll(dir) }, nil
}

// ModelConfigOf reads a GGUF's hyper-parameters, which the bench and the
// soak need to ask for a trace layer and head the model has.
func ModelConfigOf(path string) (gguf.ModelConfig, error) {
	_, g, err := gguf.ReadFile(path)
	if err != nil {
		return gguf.ModelConfig{}, err
	}
	return g.ModelConfig()
}
