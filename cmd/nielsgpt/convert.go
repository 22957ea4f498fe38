package main

// `nielsgpt convert IN.pt [--tokenizer spm.model] -o OUT.gguf [--f16]`: turns a niels-gpt
// PyTorch checkpoint into the GGUF file the engine serves, without Python and without
// executing anything from the checkpoint. It prints what it read so a user can check the
// model before serving it, and refuses (naming the problem) a checkpoint that is not
// exactly a niels-gpt model of either generation. A generation-2 checkpoint's tokenizer is
// stored in the GGUF, so the GGUF is all a server needs.

import (
	"errors"
	"fmt"
	"io"
	"os"

	"nielsgpt/convert"
)

func runConvert(args []string) error {
	return convertCommand(args, os.Stdout, os.Stderr)
}

func convertCommand(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("convert", stderr, "usage: nielsgpt convert IN.pt [--tokenizer spm.model] -o OUT.gguf [--f16]\n\n"+
		"Reads a niels-gpt checkpoint (torch.save, zip or legacy format) with a strict reader\n"+
		"that never runs code from the file, checks every tensor against the model's shape\n"+
		"table, and writes a GGUF file (float32 weights unless --f16). A generation-2\n"+
		"checkpoint (RMSNorm, SwiGLU, SentencePiece) needs the spm.model it was trained\n"+
		"with: the one beside it, or --tokenizer; its sha256 must be the one the checkpoint\n"+
		"records, and its vocabulary is stored in the GGUF.\n\n")
	out := fs.String("o", "", "output GGUF `path` (required)")
	f16 := fs.Bool("f16", false, "store weight matrices as float16 (norms and biases stay float32)")
	tok := fs.String("tokenizer", "", "the generation-2 checkpoint's SentencePiece `model` (default: spm.model beside IN.pt)")

	// The flag package stops at the first positional argument; parsing again after each
	// one lets -o come after IN.pt, as the usage line shows.
	var positional []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		left := fs.Args()
		if len(left) == 0 {
			break
		}
		if consumed := len(rest) - len(left); consumed > 0 && rest[consumed-1] == "--" {
			// "--" ends the flags: everything after it is positional, even "-o".
			positional = append(positional, left...)
			break
		}
		rest = left
		positional = append(positional, rest[0])
		rest = rest[1:]
	}
	if len(positional) != 1 {
		fs.Usage()
		return fmt.Errorf("want exactly one input checkpoint, got %d arguments", len(positional))
	}
	if *out == "" {
		fs.Usage()
		return errors.New("the output path is required: -o OUT.gguf")
	}
	in := positional[0]

	sum, err := convert.ToGGUF(in, *out, convert.Options{F16: *f16, Tokenizer: *tok})
	if err != nil {
		return err
	}
	c := sum.Config
	weightType := "float32"
	if *f16 {
		weightType = "float16 matrices, float32 vectors"
	}
	fmt.Fprintf(stdout, "read   %s\n", in)
	fmt.Fprintf(stdout, "sha256 %s\n", sum.SHA256)
	fmt.Fprintf(stdout, "model  V=%d T=%d C=%d L=%d H=%d d_ff=%d rope_theta=%g\n", c.Vocab, c.Context, c.Embd, c.Layers, c.Heads, c.FF, c.RopeTheta)
	if c.Generation() == 2 {
		check := "matches train_cfg._settings_meta.tokenizer_sha256"
		if !sum.TokenizerChecked {
			check = "not checked: the checkpoint records no tokenizer sha256"
		}
		fmt.Fprintf(stdout, "gen    2 (%s, %s, SentencePiece vocabulary stored in the GGUF)\n", c.Norm, c.MLP)
		fmt.Fprintf(stdout, "tokenizer %s\n       sha256 %s (%s)\n", sum.Tokenizer, sum.TokenizerSHA256, check)
	}
	fmt.Fprintf(stdout, "params %d\n", sum.Params)
	fmt.Fprintf(stdout, "step   %d\n", sum.Step)
	size := ""
	if st, err := os.Stat(*out); err == nil {
		size = ", " + humanBytes(st.Size())
	}
	fmt.Fprintf(stdout, "wrote  %s (GGUF v3, %s%s)\n", *out, weightType, size)
	return nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d bytes", n)
}
