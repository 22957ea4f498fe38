// Package bench is the load driver behind `nielsgpt bench`: it starts the real
// server as a subprocess, drives real SSE streams at it over loopback, and
// reports throughput, time to first token and memory, for the batched engine
// and for the baseline (original-algorithm) mode side by side. The
// subprocess, the SSE reader and the random-weight model come from
// internal/testkit, which the reliability tests and the soak share.
package bench
