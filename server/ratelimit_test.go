//go:build unix

package server

// The shared buckets (REDIS_URL) against a real redis-server: the same
// answers as the local buckets, one bucket for several servers, and the
// fall-back to local buckets when Redis is gone or frozen, and back.

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"nielsgpt/internal/testkit"
	"nielsgpt/metrics"
)

// startRedisServer is startServer with its buckets in Redis and its log
// kept, once the server uses Redis (or, with wantShared false, without
// waiting for that).
func startRedisServer(t *testing.T, cfg Config, redisURL string, wantShared bool) (*testServer, *testkit.SyncBuffer) {
	t.Helper()
	cfg.RedisURL = redisURL
	logs := &testkit.SyncBuffer{}
	s, err := New(cfg, metrics.New(), slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.closeRateLimiter) // runs after the HTTP server below is closed
	s.SetEngine(newFakeEngine())
	ts := &testServer{Server: s, URL: startWith(t, s)}
	if wantShared {
		waitBackend(t, ts, metrics.BackendRedis)
	}
	return ts, logs
}

func waitBackend(t *testing.T, ts *testServer, backend string) {
	t.Helper()
	testkit.Eventually(t, waitLimit, "the rate limiter to use "+backend, func() bool { return ts.Metrics().RateLimitBackend() == backend })
}

// postStatus sends one small /inspect/full_attn request (cheap, and it
// draws on the same bucket as /chat/stream) and returns its status.
func postStatus(t *testing.T, url string) int {
	t.Helper()
	resp := postJSON(t, url+"/inspect/full_attn", `{"messages":[{"role":"user","content":"a"}],"trace_layer":0,"head":0}`)
	readAll(t, resp)
	return resp.StatusCode
}

// The Redis buckets give the answers the local buckets give, call for call:
// a full bucket at first, one token per request, none taken by a refusal,
// separate clients apart, and refilling at the configured rate.
func TestRedisBucketsMatchLocal(t *testing.T) {
	r := testkit.StartRedis(t)
	opts, err := redisOptions(r.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		perMin float64
		burst  int
	}{{1, 3}, {600, 2}} { // 600 a minute: a token every 100 ms
		shared := newRedisBuckets(opts, c.perMin, c.burst)
		t.Cleanup(func() { shared.client.Close() })
		local := newLocalBuckets(c.perMin, c.burst)
		ctx := context.Background()
		check := func(step, key string) {
			t.Helper()
			want := local.allow(ctx, key)
			got, err := shared.take(ctx, key)
			if err != nil || got != want {
				t.Fatalf("rate %v/min burst %d, %s (%s): Redis %v %v, local %v", c.perMin, c.burst, step, key, got, err, want)
			}
		}
		key := strings.Repeat("k", c.burst) // a fresh key per case
		for i := range c.burst + 2 {
			check("request "+string(rune('0'+i)), key)
		}
		check("another client", key+"-other")
		if c.perMin == 600 {
			time.Sleep(130 * time.Millisecond) // one token back, not two
			check("after one refill", key)
			check("right after", key)
		}
		// The bucket is forgotten once it would be full again, not kept forever.
		ttl, err := shared.client.PTTL(ctx, redisKeyPrefix+key).Result()
		full := time.Duration(float64(c.burst)/c.perMin*float64(time.Minute)) + time.Second
		if err != nil || ttl <= 0 || ttl > full+time.Second {
			t.Fatalf("bucket TTL %v %v, want at most the refill time %v", ttl, err, full)
		}
	}
}

// Two servers with one REDIS_URL share each client's bucket: a client
// alternating between them gets RATE_LIMIT_BURST requests in all, not each.
func TestRedisBucketSharedByServers(t *testing.T) {
	r := testkit.StartRedis(t)
	cfg := testConfig()
	cfg.RateLimitBurst, cfg.RateLimitPerMin = 3, 1
	a, _ := startRedisServer(t, cfg, r.URL, true)
	b, _ := startRedisServer(t, cfg, r.URL, true)
	served := 0
	for i := range 8 {
		switch status := postStatus(t, []*testServer{a, b}[i%2].URL); status {
		case http.StatusOK:
			served++
		case http.StatusTooManyRequests:
		default:
			t.Fatalf("request %d: status %d", i, status)
		}
	}
	if served != cfg.RateLimitBurst {
		t.Fatalf("%d requests served across two servers, want %d (one shared bucket)", served, cfg.RateLimitBurst)
	}
	if got := a.Metrics().Rejections(metrics.RejectRateLimited) + b.Metrics().Rejections(metrics.RejectRateLimited); got != 5 {
		t.Fatalf("rate_limited rejections %v, want 5", got)
	}
}

// When Redis dies the server keeps serving on its own buckets, says so once,
// and goes back to Redis by itself when Redis is back.
func TestRedisKilledFallsBackAndRecovers(t *testing.T) {
	r := testkit.StartRedis(t)
	cfg := testConfig()
	cfg.RateLimitBurst, cfg.RateLimitPerMin = 2, 1
	ts, logs := startRedisServer(t, cfg, r.URL, true)
	if postStatus(t, ts.URL) != http.StatusOK {
		t.Fatal("first request through Redis refused")
	}

	r.Kill()
	// The local bucket is fresh: two requests pass, then the limit holds.
	for i, want := range []int{200, 200, 429, 429} {
		start := time.Now()
		if got := postStatus(t, ts.URL); got != want {
			t.Fatalf("request %d with Redis gone: %d, want %d", i, got, want)
		}
		if elapsed := time.Since(start); elapsed > time.Second {
			t.Fatalf("request %d took %v with Redis gone", i, elapsed)
		}
	}
	if ts.Metrics().RateLimitBackend() != metrics.BackendLocal {
		t.Fatal("backend still redis after Redis died")
	}
	if n := strings.Count(logs.String(), "Redis failed"); n != 1 {
		t.Fatalf("%d 'Redis failed' lines, want exactly 1:\n%s", n, logs)
	}

	r.Restart() // empty: the client's shared bucket is full again
	waitBackend(t, ts, metrics.BackendRedis)
	for i, want := range []int{200, 200, 429} {
		if got := postStatus(t, ts.URL); got != want {
			t.Fatalf("request %d with Redis back: %d, want %d", i, got, want)
		}
	}
	if n := strings.Count(logs.String(), "buckets shared through Redis"); n != 2 {
		t.Fatalf("%d 'shared through Redis' lines, want 2 (start and recovery):\n%s", n, logs)
	}
}

// A Redis that stops answering (frozen, not gone) costs a request at most
// the call timeout; the server falls back and returns when Redis does.
func TestRedisFrozenFallsBack(t *testing.T) {
	r := testkit.StartRedis(t)
	cfg := testConfig()
	ts, _ := startRedisServer(t, cfg, r.URL, true)
	r.Pause()
	defer r.Resume()
	start := time.Now()
	if got := postStatus(t, ts.URL); got != http.StatusOK {
		t.Fatalf("request with Redis frozen: %d", got)
	}
	if elapsed := time.Since(start); elapsed > redisCallTimeout+500*time.Millisecond {
		t.Fatalf("request took %v with Redis frozen; the call timeout is %v", elapsed, redisCallTimeout)
	}
	waitBackend(t, ts, metrics.BackendLocal)
	r.Resume()
	waitBackend(t, ts, metrics.BackendRedis)
}

// A Redis that is not there at start: the server starts, serves on its own
// buckets and says so once.
func TestRedisDownAtStart(t *testing.T) {
	cfg := testConfig()
	cfg.RateLimitBurst, cfg.RateLimitPerMin = 1, 1
	ts, logs := startRedisServer(t, cfg, "redis://user:s3cret@127.0.0.1:1/0", false)
	testkit.Eventually(t, waitLimit, "the start-up line about Redis", func() bool { return strings.Contains(logs.String(), "Redis unreachable") })
	if got := postStatus(t, ts.URL); got != http.StatusOK {
		t.Fatalf("first request: %d", got)
	}
	if got := postStatus(t, ts.URL); got != http.StatusTooManyRequests {
		t.Fatalf("second request: %d, want 429 from the local bucket", got)
	}
	time.Sleep(2 * redisProbeInterval) // probes fail quietly
	out := logs.String()
	if strings.Count(out, "Redis unreachable") != 1 || strings.Contains(out, "s3cret") {
		t.Fatalf("want one line about Redis and never its password:\n%s", out)
	}
	if !strings.Contains(out, `"redis":"127.0.0.1:1/0"`) {
		t.Fatalf("the line should name Redis's address:\n%s", out)
	}
	if ts.Metrics().RateLimitBackend() != metrics.BackendLocal {
		t.Fatal("backend is not local")
	}
}
