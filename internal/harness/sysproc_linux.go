package harness

// Linux: the server dies with whoever started it, and is asked to stop with
// SIGTERM, which makes it drain.

import (
	"os"
	"os/exec"
	"syscall"
)

// setChildAttrs makes the kernel kill the server if the process that
// started it dies without stopping it (a kill -9, a crash, a test binary
// past its timeout), so no orphan keeps a port and the cores busy. SIGKILL
// rather than SIGTERM: nobody is left to read what a drain would send.
func setChildAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

func terminate(p *os.Process) error { return p.Signal(syscall.SIGTERM) }
