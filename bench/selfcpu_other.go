//go:build !linux

package bench

// Elsewhere than Linux the driver's own CPU time is reported as n/a rather
// than guessed.

import "time"

func selfCPU() (time.Duration, bool) { return 0, false }

func selfSwitches() (int64, bool) { return 0, false }

func runQueueWait(pid int) (time.Duration, bool) { return 0, false }
