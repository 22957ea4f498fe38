//go:build !linux

package harness

// Elsewhere than Linux there is no /proc: memory and load are reported as
// unavailable rather than guessed.

import (
	"errors"
	"runtime"
)

// Memory is only implemented on Linux.
func Memory(pid int) (rss, peak int64, err error) {
	return 0, 0, errors.New("process memory is not read on " + runtime.GOOS)
}

// LoadAverage is only implemented on Linux.
func LoadAverage() (load float64, ok bool) { return 0, false }
