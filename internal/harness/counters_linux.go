package harness

// A process's system calls, context switches and CPU ticks, from /proc,
// beside Memory in proc_linux.go: what a token costs outside the engine's
// arithmetic, in figures that depend little on how busy the machine was.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
	c.RWSyscalls = sumFields(string(io), "syscr", "syscw")
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, path := range tasks {
		status, err := os.ReadFile(path)
		if err != nil {
			continue // a thread that just exited
		}
		c.CtxSwitches += sumFields(string(status), "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")
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

// sumFields adds up the integer values of the "key: value" lines of a /proc
// file whose key is one of keys.
func sumFields(text string, keys ...string) int64 {
	var sum int64
	for _, line := range strings.Split(text, "\n") {
		key, value, _ := strings.Cut(line, ":")
		if slices.Contains(keys, key) {
			n, _ := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
			sum += n
		}
	}
	return sum
}
