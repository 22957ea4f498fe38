package testkit

// Eventually: waiting in a test for something another goroutine or another
// process does, on harness.Poll's loop.

import (
	"testing"
	"time"

	"nielsgpt/internal/harness"
)

// Eventually waits up to timeout for cond, and fails the test if it never
// holds. what names the awaited state for the message, as in "the slot to
// be given back".
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !harness.Poll(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}
