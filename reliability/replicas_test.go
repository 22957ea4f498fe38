//go:build linux

package reliability

// Replicas that share their rate-limit buckets through Redis (REDIS_URL),
// end to end: two `nielsgpt serve` processes and one real redis-server, a
// client alternating between the two as a load balancer would send it.

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"nielsgpt/internal/harness"
	"nielsgpt/internal/testkit"
)

// Two replicas share one bucket per client; killing Redis keeps both
// serving, each on its own buckets; restarting it brings the sharing back.
func TestReplicasShareRateLimitThroughRedis(t *testing.T) {
	const burst = 3
	redis := testkit.StartRedis(t)
	env := []string{
		"REDIS_URL=" + redis.URL,
		fmt.Sprintf("RATE_LIMIT_BURST=%d", burst),
		"RATE_LIMIT_PER_MIN=1", // nothing refills during the test: counts are exact
	}
	replicas := []*harness.Server{startServer(t, harness.Spec{Env: env}), startServer(t, harness.Spec{Env: env})}
	waitBackends(t, replicas, "redis")

	// One bucket for both replicas: burst requests in all.
	if got := alternate(t, replicas, LoopbackIP(70), 8); got != burst {
		t.Fatalf("with Redis: %d of 8 requests served across two replicas, want %d", got, burst)
	}

	redis.Kill()
	// Each replica falls back to a bucket of its own: burst requests from
	// each, and not one request fails for want of Redis.
	if got := alternate(t, replicas, LoopbackIP(71), 8); got != 2*burst {
		t.Fatalf("Redis gone: %d of 8 requests served, want %d (each replica's own bucket)", got, 2*burst)
	}
	waitBackends(t, replicas, "local")
	for i, s := range replicas {
		if n := strings.Count(s.Output(), "Redis failed"); n != 1 {
			t.Errorf("replica %d logged the fall-back %d times, want once", i, n)
		}
	}

	redis.Restart()
	waitBackends(t, replicas, "redis")
	if got := alternate(t, replicas, LoopbackIP(72), 8); got != burst {
		t.Fatalf("Redis back: %d of 8 requests served, want %d", got, burst)
	}
	for i, s := range replicas {
		if n := strings.Count(s.Output(), "buckets shared through Redis"); n != 2 {
			t.Errorf("replica %d logged the sharing %d times, want twice (start, recovery)", i, n)
		}
		if m := scrape(t, s); m.Get("nielsgpt_rate_limit_redis_errors_total") < 1 {
			t.Errorf("replica %d counted no Redis errors", i)
		}
	}
}

// alternate sends n requests from one client address to the replicas in
// turn, both endpoints in turn, and counts those served. Anything other
// than 200 or 429 fails the test.
func alternate(t *testing.T, replicas []*harness.Server, ip string, n int) int {
	t.Helper()
	client := ClientFrom(ip)
	served := 0
	for i := range n {
		s := replicas[i%len(replicas)]
		url, body := s.URL+"/inspect/full_attn", `{"messages":[{"role":"user","content":"hi"}],"trace_layer":0,"head":0}`
		if i%4 >= 2 {
			url, body = s.URL+"/chat/stream", ChatBody("hi", 1, 0, int64(i))
		}
		start := time.Now()
		status, code, header, err := Post(t.Context(), client, url, body, nil)
		switch {
		case err != nil:
			t.Fatalf("request %d from %s: %v", i, ip, err)
		case status == http.StatusOK:
			served++
		case status != http.StatusTooManyRequests || header.Get("Retry-After") != "60":
			t.Fatalf("request %d from %s: %d %s (Retry-After %q), want 200 or 429 with Retry-After 60", i, ip, status, code, header.Get("Retry-After"))
		}
		if elapsed := time.Since(start); elapsed > 10*time.Second {
			t.Fatalf("request %d from %s took %v", i, ip, elapsed)
		}
	}
	return served
}

// waitBackends waits until every replica reports backend in
// nielsgpt_rate_limit_backend.
func waitBackends(t *testing.T, replicas []*harness.Server, backend string) {
	t.Helper()
	for i, s := range replicas {
		testkit.Eventually(t, 10*time.Second, fmt.Sprintf("replica %d to use %s buckets", i, backend), func() bool {
			m, err := Scrape(s.URL)
			return err == nil && m.Get(`nielsgpt_rate_limit_backend{backend="`+backend+`"}`) == 1
		})
	}
}

// A rolling update, as the process sees it: on SIGTERM with DRAIN_DELAY set,
// /readyz turns 503 at once while new connections are still accepted and
// served, so the load balancer can take the replica out; then the listener
// closes and the process exits 0.
func TestDrainDelayTakesReplicaOutBeforeClosing(t *testing.T) {
	const delay = 2 * time.Second
	s := startServer(t, harness.Spec{Env: []string{"DRAIN_DELAY=" + delay.String(), "SHUTDOWN_TIMEOUT=5s"}})
	client := ClientFrom(LoopbackIP(80))
	get := func(path string) (int, error) {
		resp, err := client.Get(s.URL + path)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if status, err := get("/readyz"); err != nil || status != http.StatusOK {
		t.Fatalf("/readyz with the model loaded: %d %v", status, err)
	}
	signalled := time.Now()
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, time.Second, "/readyz to answer 503", func() bool {
		status, err := get("/readyz")
		return err == nil && status == http.StatusServiceUnavailable
	})
	if status, err := get("/livez"); err != nil || status != http.StatusOK {
		t.Fatalf("/livez during the drain delay: %d %v", status, err)
	}
	if status, code, _, err := Post(t.Context(), client, s.URL+"/chat/stream", ChatBody("hi", 2, 0, 1), nil); err != nil || status != http.StatusOK {
		t.Fatalf("a request during the drain delay: %d %s %v", status, code, err)
	}
	code, err := s.WaitExit(delay + 10*time.Second)
	if err != nil || code != 0 {
		t.Fatalf("exit %d %v", code, err)
	}
	if elapsed := time.Since(signalled); elapsed < delay {
		t.Fatalf("exited %v after SIGTERM, before DRAIN_DELAY (%v)", elapsed, delay)
	}
	if _, err := get("/livez"); err == nil {
		t.Fatal("still answering after exit")
	}
}
