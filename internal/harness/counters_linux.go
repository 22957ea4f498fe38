package harness

// A process's system calls, context switches and CPU ticks, from /proc,
// beside Memory in proc_linux.go: what a token costs outside the engine's
// arithmetic, in figures that depend little on how busy the machine was.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Counters is a snapshot of a process's counters.
type Counters struct {
	RWSyscalls  int64 // read- and write-family system calls (syscr + syscw)
	CtxSwitches int64 // voluntary + involuntary context switches, all threads
	CPUTicks    int64 // user + system time, in clock ticks
}

// ReadCounters reads pid's counters; false where /proc does not have them.
func ReadCounters(pid int) (Counters, bool) {
	var c Counters
	io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return c, false
	}
	for _, line := range strings.Split(string(io), "\n") {
		key, value, _ := strings.Cut(line, ":")
		if key == "syscr" || key == "syscw" {
			n, _ := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
			c.RWSyscalls += n
		}
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, path := range tasks {
		status, err := os.ReadFile(path)
		if err != nil {
			continue // a thread that just exited
		}
		for _, line := range strings.Split(string(status), "\n") {
			key, value, _ := strings.Cut(line, ":")
			if key == "voluntary_ctxt_switches" || key == "nonvoluntary_ctxt_switches" {
				n, _ := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
				c.CtxSwitches += n
			}
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return c, false
	}
	// Fields after the command name (which may hold spaces) start at ')'.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(fields) > 12 {
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		c.CPUTicks = utime + stime
	}
	return c, true
}

// ClockTicksPerSecond is USER_HZ, 100 on every Linux this runs on.
const ClockTicksPerSecond = 100
