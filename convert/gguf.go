package convert

// From checkpoint to GGUF: the checkpoint's tensors are handed to package gguf under
// their GGUF names, and a file conversion is written atomically.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"nielsgpt/gguf"
)

// Options selects the GGUF weight type: float32 by default; with F16 the
// matrices are stored as float16 and the vectors stay float32. Tokenizer names a
// generation-2 checkpoint's spm.model; "" means the one beside the checkpoint, if any.
type Options struct {
	F16       bool
	Tokenizer string
}

// Summary describes a finished conversion, for the command to print.
type Summary struct {
	Config gguf.ModelConfig
	Params int64
	SHA256 string
	Step   int64
	// Tokenizer and TokenizerSHA256 are the spm.model a generation-2 conversion stored and
	// its sha256; TokenizerChecked says the checkpoint recorded that sha256 (otherwise
	// nothing could check that it is the tokenizer the model was trained with).
	Tokenizer        string
	TokenizerSHA256  string
	TokenizerChecked bool
}

// WriteGGUF validates ck and writes it as a GGUF v3 file. sourceSHA256 is the hex
// SHA-256 of the .pt file it came from, recorded so a GGUF can be traced to its source.
func WriteGGUF(w io.Writer, ck *Checkpoint, sourceSHA256 string, opts Options) error {
	if err := ck.Validate(); err != nil {
		return err
	}
	// Validate has checked every tensor of the table; lm_head is the embedding again.
	weights := map[string][]float32{}
	for _, spec := range ck.Config.Tensors() {
		weights[spec.Name] = ck.Tensors[spec.StateKey].Data
	}
	src := gguf.Source{SHA256: sourceSHA256, Step: ck.Step, BestValLoss: ck.BestValLoss}
	if ck.Config.Generation() == 2 {
		return gguf.WriteWithVocabulary(w, ck.Config, weights, *ck.Vocab, src, gguf.WriteOptions{F16: opts.F16})
	}
	return gguf.Write(w, ck.Config, weights, src, gguf.WriteOptions{F16: opts.F16})
}

// ToGGUF reads, validates and converts a checkpoint, writing the GGUF atomically:
// to a temporary file beside outPath that is synced and then renamed, so a failed or
// interrupted conversion never leaves a partial file under the final name. A
// generation-2 checkpoint takes its tokenizer from opts.Tokenizer or, when that is "",
// from the spm.model beside it; a generation-1 checkpoint refuses a named tokenizer and
// ignores one that merely lies beside it.
func ToGGUF(inPath, outPath string, opts Options) (*Summary, error) {
	data, err := os.ReadFile(inPath)
	if err != nil {
		return nil, err
	}
	if outInfo, err := os.Stat(outPath); err == nil {
		if inInfo, err := os.Stat(inPath); err == nil && os.SameFile(inInfo, outInfo) {
			return nil, errors.New("output path is the input checkpoint")
		}
	}
	sum := sha256.Sum256(data)
	shaHex := hex.EncodeToString(sum[:])
	ck, err := ReadCheckpointBytes(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", inPath, err)
	}
	data = nil // the weights are now in ck; let the file's bytes go before writing
	tokPath := opts.Tokenizer
	if tokPath == "" && ck.Config.Generation() == 2 {
		tokPath = TokenizerBeside(inPath)
	}
	if tokPath != "" {
		if err := ck.UseTokenizer(tokPath); err != nil {
			return nil, fmt.Errorf("%s: %w", inPath, err)
		}
	}
	if err := ck.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", inPath, err)
	}

	dir, base := filepath.Split(outPath)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := WriteGGUF(tmp, ck, shaHex, opts); err != nil {
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		return nil, err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), outPath); err != nil {
		return nil, err
	}
	committed = true
	summary := &Summary{Config: ck.Config, Params: ck.Params(), SHA256: shaHex, Step: ck.Step}
	if ck.Vocab != nil {
		summary.Tokenizer, summary.TokenizerSHA256, summary.TokenizerChecked = tokPath, ck.Vocab.SHA256, ck.TokenizerSHA256 != ""
	}
	return summary, nil
}
