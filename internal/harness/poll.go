package harness

// Waiting for something another goroutine or another process does: one
// polling loop for the soak driver and, through testkit.Eventually, for the
// tests, instead of a sleep loop with its own deadline in every file.

import "time"

// Poll pause bounds: a condition that holds soon is seen within a few
// milliseconds, and one that takes seconds (often an HTTP scrape of a
// server) is asked ten times a second, not hundreds.
const (
	pollFirstPause = 5 * time.Millisecond
	pollMaxPause   = 100 * time.Millisecond
)

// Poll calls cond until it returns true or timeout has passed, and reports
// whether it did. cond is always called at least once, and the pauses
// between calls never sleep past the deadline.
func Poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	pause := pollFirstPause
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(min(pause, max(time.Until(deadline), time.Millisecond)))
		pause = min(2*pause, pollMaxPause)
	}
	return true
}
