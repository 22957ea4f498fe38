// Package engine runs niels-gpt on ggml: it is the only package that crosses into C.
package engine

// The C side lives in csrc/ (docs/ARCHITECTURE.md); nielsgpt.c and nielsgpt.h here are
// symlinks to it, because cgo compiles only the files in a package's own
// directory and the build cache only notices changes to those.

/*
#cgo LDFLAGS: -lm
#include "nielsgpt.h"
*/
import "C"

import (
	// Compiles ggml's base library and CPU backend (and Metal on darwin/arm64)
	// into this binary; csrc calls into it directly.
	_ "github.com/ollama/ollama/ml/backend/ggml/ggml/src"
)
