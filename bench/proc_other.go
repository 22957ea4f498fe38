//go:build !linux

package bench

// Elsewhere than Linux: no parent-death signal and no /proc, so peak RSS and
// load average (and the driver's own CPU time) are reported as n/a rather
// than guessed.

import (
	"os"
	"os/exec"
	"time"
)

func setChildAttrs(cmd *exec.Cmd) {}

func terminate(p *os.Process) error { return p.Signal(os.Interrupt) }

func peakRSS(pid int) (int64, bool) { return 0, false }

func loadAverage() (float64, bool) { return 0, false }

func selfCPU() (time.Duration, bool) { return 0, false }
