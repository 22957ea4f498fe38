package testkit

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// fatalRecorder stands in for a test so that a helper's failure can be
// checked: Fatalf records the message and ends the goroutine, as the real
// one does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) { r.Fatal(fmt.Sprintf(format, args...)) }

func (r *fatalRecorder) Fatal(args ...any) {
	r.msg = fmt.Sprint(args...)
	runtime.Goexit()
}

// runFailing runs f against a fatalRecorder in its own goroutine and
// returns the failure message, "" when f returned without failing.
func runFailing(f func(t testing.TB)) string {
	r := &fatalRecorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.msg
}

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
	if Poll(20*time.Millisecond, func() bool { calls.Add(1); return false }) {
		t.Fatal("Poll said a false condition held")
	}
	// The pause grows from 5 ms: a few calls in 20 ms, not a busy loop.
	if n := calls.Load(); n < 2 || n > 10 {
		t.Errorf("%d calls in 20ms", n)
	}
}
