// Package testkit holds what the tests share, so that each thing is done one
// way: waiting for a condition (Eventually, Poll), the test inputs made once
// per test binary (a converted .pt fixture, a model with random weights, the
// nielsgpt binary itself), a fake Hugging Face Hub, and the real server as a
// subprocess together with what reads it from the outside (its /proc memory,
// its SSE streams).
//
// The subprocess harness (Server), the SSE reader, the random-weight model
// writer, Percentile and the /proc reader are also used by product code:
// `nielsgpt bench` and the soak driver measure the real binary with them.
// Those parts take no testing.TB and do nothing a product may not; the parts
// that fail a test (Eventually, FakeHub, the cached inputs) live in their own
// files. A product that imports the package links the standard testing
// package but never calls into it.
package testkit
