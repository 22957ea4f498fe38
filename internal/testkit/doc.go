// Package testkit holds what the tests share, so that each thing is done one
// way: waiting for a condition (Eventually, Poll), the test inputs made once
// per test binary (a converted .pt fixture, a model with random weights, the
// nielsgpt binary itself), a fake Hugging Face Hub, and the real server as a
// subprocess together with what reads it from the outside (its /proc memory,
// its SSE streams).
//
// Product code uses part of it: `nielsgpt bench` and the soak driver
// measure the real binary with the subprocess harness (server.go, output.go),
// the SSE reader (sse.go), the random-weight model (model.go), Percentile
// and the /proc reader. Those files take no testing.TB, so they work the
// same in a product as in a test. What fails a test lives in files of its
// own: wait.go's Eventually, harness.go (Binary, Serve), made.go (Main and
// the once-per-binary inputs), fakehub.go and assert.go. A product that
// imports the package therefore links the testing and httptest packages
// (some 35 KB) without calling into them; one package was preferred to a
// split whose halves would each be half a kit.
package testkit
