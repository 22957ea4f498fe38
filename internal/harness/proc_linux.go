package harness

// Reading a process from the outside through /proc: its memory for the
// bench's peak RSS and the soak's and the tests' leak checks, and the load
// average, which says how much else was competing for the CPU while
// something was measured.

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Memory returns a process's resident set size now (VmRSS) and its
// high-water mark over its life so far (VmHWM), in bytes.
func Memory(pid int) (rss, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		key, value, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		n, ok := parseKB(value)
		if !ok {
			return 0, 0, fmt.Errorf("/proc/%d/status: unexpected %q", pid, line)
		}
		if key == "VmRSS" {
			rss = n
		} else {
			peak = n
		}
	}
	if rss == 0 || peak == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status has no VmRSS/VmHWM", pid)
	}
	return rss, peak, nil
}

// parseKB reads a /proc/*/status size such as "   123456 kB" as bytes.
func parseKB(v string) (int64, bool) {
	fields := strings.Fields(v)
	if len(fields) != 2 || fields[1] != "kB" {
		return 0, false
	}
	n, err := strconv.ParseInt(fields[0], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n << 10, true
}

// LoadAverage is the system's 1-minute load average; ok is false where it
// cannot be read.
func LoadAverage() (load float64, ok bool) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, false
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0, false
	}
	l, err := strconv.ParseFloat(fields[0], 64)
	return l, err == nil
}
