//go:build !linux

package harness

// Elsewhere than Linux: no parent-death signal, and an interrupt asks the
// server to stop (Stop kills it where even that cannot be sent).

import (
	"os"
	"os/exec"
)

func setChildAttrs(cmd *exec.Cmd) {}

func terminate(p *os.Process) error { return p.Signal(os.Interrupt) }
