package bench

// Time a process's threads spent runnable but waiting for a CPU: on a machine
// with few cores this is where a token's time goes when the server, its
// client and other work want more cores than there are.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// runQueueWait sums the run-queue wait of every thread of process pid (0:
// this process), from /proc's schedstat (on-CPU ns, waiting ns, slices).
func runQueueWait(pid int) (time.Duration, bool) {
	proc := "self"
	if pid != 0 {
		proc = strconv.Itoa(pid)
	}
	paths, err := filepath.Glob(fmt.Sprintf("/proc/%s/task/*/schedstat", proc))
	if err != nil || len(paths) == 0 {
		return 0, false
	}
	var total time.Duration
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // a thread that just exited
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			return 0, false
		}
		ns, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return 0, false
		}
		total += time.Duration(ns)
	}
	return total, true
}
