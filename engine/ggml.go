// Package engine runs niels-gpt on ggml: it is the only package that crosses into C.
package engine

/*
#cgo CPPFLAGS: -I${SRCDIR}/../csrc
#cgo LDFLAGS: -lm
#include "nielsgpt.h"
*/
import "C"

import (
	// Compiles ggml's base library and CPU backend (and Metal on darwin/arm64)
	// into this binary; csrc calls into it directly.
	_ "github.com/ollama/ollama/ml/backend/ggml/ggml/src"
)
