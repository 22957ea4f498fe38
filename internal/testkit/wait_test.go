package testkit

import (
	"sync/atomic"
	"testing"
	"time"

	"nielsgpt/internal/harness"
)

func TestEventuallyTimesOutWithWhatItWaitedFor(t *testing.T) {
	start := time.Now()
	msg := runFailing(func(tb testing.TB) {
		Eventually(tb, 50*time.Millisecond, "the sky to fall", func() bool { return false })
	})
	if msg != "timed out after 50ms waiting for the sky to fall" {
		t.Fatalf("message %q", msg)
	}
	if took := time.Since(start); took < 50*time.Millisecond || took > 2*time.Second {
		t.Errorf("gave up after %s, want just over 50ms", took)
	}
}

func TestEventuallySeesAConditionThatBecomesTrue(t *testing.T) {
	var calls atomic.Int32
	msg := runFailing(func(tb testing.TB) {
		Eventually(tb, 5*time.Second, "the third call", func() bool { return calls.Add(1) >= 3 })
	})
	if msg != "" || calls.Load() != 3 {
		t.Fatalf("failed with %q after %d calls", msg, calls.Load())
	}
}

func TestPollReportsAConditionThatNeverHolds(t *testing.T) {
	var calls atomic.Int32
	if harness.Poll(20*time.Millisecond, func() bool { calls.Add(1); return false }) {
		t.Fatal("harness.Poll said a false condition held")
	}
	// The pause grows from 5 ms: a few calls in 20 ms, not a busy loop.
	if n := calls.Load(); n < 2 || n > 10 {
		t.Errorf("%d calls in 20ms", n)
	}
}
