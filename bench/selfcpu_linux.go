package bench

// The driver's own CPU time: on a machine with few cores the driver competes
// with the server it measures, and the report says by how much.

import (
	"syscall"
	"time"
)

// selfCPU is the CPU time (user + system) this process has used so far.
func selfCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}

// selfSwitches is how often this process's threads have given up or lost
// the CPU so far (voluntary and involuntary context switches).
func selfSwitches() (int64, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return ru.Nvcsw + ru.Nivcsw, true
}
