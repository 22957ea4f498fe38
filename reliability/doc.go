// Package reliability tries to break the real `nielsgpt serve` binary from the
// outside (docs/RELIABILITY.md): it starts the server as a subprocess on loopback and
// attacks it with faults (SIGTERM mid-stream, bad model files, clients that
// vanish or stop reading), with attempts to get around its limits (forged
// proxy headers, foreign CORS origins, a hostile Hub fishing for HF_TOKEN),
// and with sustained load (the soak driver behind `make soak`).
//
// Everything here is bounded in count and time and talks to 127.0.0.0/8
// only. It is Linux-only: it reads /proc for memory and uses loopback
// addresses other than 127.0.0.1 as distinct clients.
package reliability
