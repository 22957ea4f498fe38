//go:build unix

package testkit

import (
	"testing"
	"time"
)

// The helper's own promises: a fresh server answers, a killed one does not,
// a restarted one answers on the same address, a paused one is silent
// until resumed.
func TestRedisLifecycle(t *testing.T) {
	r := StartRedis(t)
	addr := r.Addr
	if !r.answers() {
		t.Fatal("a started redis-server does not answer PING")
	}
	r.Pause()
	if r.answers() {
		t.Fatal("a paused redis-server answered")
	}
	r.Resume()
	Eventually(t, 5*time.Second, "the resumed redis-server to answer", r.answers)
	r.Kill()
	if r.answers() {
		t.Fatal("a killed redis-server answered")
	}
	r.Restart()
	if r.Addr != addr || !r.answers() {
		t.Fatalf("restarted on %s (was %s), answers %v", r.Addr, addr, r.answers())
	}
}
