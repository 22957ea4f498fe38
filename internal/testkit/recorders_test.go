package testkit

// Stand-ins for a test, so that the kit's own failure messages can be
// checked: a real test that failed would fail this package's tests too.

import (
	"fmt"
	"runtime"
	"testing"
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

// errorRecorder stands in for a test to see what a check reports.
type errorRecorder struct {
	testing.TB
	errs []string
}

func (r *errorRecorder) Helper() {}

func (r *errorRecorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
