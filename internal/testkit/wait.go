package testkit

// Waiting for something another goroutine or another process does: one
// polling loop for the tests (Eventually) and for the soak driver (Poll),
// instead of a sleep loop with its own deadline in every file.

import (
	"testing"
	"time"
)

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

// Eventually waits up to timeout for cond, and fails the test if it never
// holds. what names the awaited state for the message, as in "the slot to
// be given back".
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}
