// Package harness runs the real nielsgpt server as a subprocess and reads it
// from the outside: start it on port 0 and learn its address from its
// "listening" log line, stop it, keep the head and tail of its output, read
// its SSE streams, its /proc memory and the machine's load, and write the
// random-weight models it serves. `nielsgpt bench`, the soak driver and the
// tests (through internal/testkit) share this one implementation; nothing
// here depends on the testing package, so the product binary stays free of it.
package harness
