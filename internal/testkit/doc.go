// Package testkit holds what the tests share, so that each thing is done one
// way: waiting for a condition (Eventually), the test inputs made once per
// test binary (a converted .pt fixture, a model with random weights, the
// nielsgpt binary itself), a fake Hugging Face Hub, the real server as a
// subprocess bound to a test's life (Serve), and small assertions.
//
// The parts that products use too (`nielsgpt bench` and the soak driver
// measure the real binary) live in internal/harness, which takes no
// testing.TB: the nielsgpt binary links neither testing nor httptest.
package testkit
