package bench

// Linux specifics: the child dies with the bench, and the driver measures its
// own CPU time.

import (
	"os"
	"os/exec"
	"syscall"
	"time"
)

// setChildAttrs makes the kernel send the server SIGTERM if the bench dies
// without stopping it (a kill -9, a crash), so no orphan keeps a port and two
// cores busy.
func setChildAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

func terminate(p *os.Process) error { return p.Signal(syscall.SIGTERM) }

// selfCPU is the CPU time (user + system) this process has used so far.
func selfCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
