//go:build !linux

package bench

// Elsewhere than Linux: no parent-death signal, and the driver's own CPU
// time is reported as n/a rather than guessed.

import (
	"os"
	"os/exec"
	"time"
)

func setChildAttrs(cmd *exec.Cmd) {}

func terminate(p *os.Process) error { return p.Signal(os.Interrupt) }

func selfCPU() (time.Duration, bool) { return 0, false }
