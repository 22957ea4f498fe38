// Package demo embeds the small niels-gpt trained by scripts/train_demo.py on
// the primer transcripts, so `nielsgpt serve --model demo` needs no files and
// no network. demo.gguf is made from best.pt by `make demo`.
package demo

import _ "embed"

// GGUF is the demo model, converted with `nielsgpt convert`.
//
//go:embed demo.gguf
var GGUF []byte
