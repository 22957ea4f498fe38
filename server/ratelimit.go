package server

// The per-client token buckets (docs/API.md §10.5): capacity
// RATE_LIMIT_BURST, refilled continuously at RATE_LIMIT_PER_MIN, one bucket
// per client address shared by every POST endpoint. The middleware
// sees only the rateLimiter interface, so where the buckets live (in this
// process, or in Redis for replicas that share them) is decided once, here.

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/didip/tollbooth/v7/limiter"

	"nielsgpt/metrics"
)

// rateLimiter takes one token from a client's bucket.
type rateLimiter interface {
	// allow reports whether key's bucket had a token, and takes it if so.
	// A refused request takes none. It never fails: a limiter that cannot
	// decide must decide locally rather than fail the request.
	allow(ctx context.Context, key string) bool
}

// localBuckets keeps the buckets in this process.
type localBuckets struct {
	limiter *limiter.Limiter
}

// newLocalBuckets builds the in-process buckets: capacity burst, refilled at
// perMin per minute.
//
// tollbooth forgets a bucket a fixed time after creating it, not after its
// last use, and a forgotten bucket comes back full. The lifetime is
// therefore kept long (an hour, or longer when refilling an empty bucket
// takes longer), which bounds the extra allowance for a client that never
// pauses to `burst` requests per hour; sweep frees expired buckets so memory
// follows the number of clients seen in that window.
func newLocalBuckets(perMin float64, burst int) *localBuckets {
	refill := time.Duration(float64(burst) / perMin * float64(time.Minute))
	ttl := max(time.Hour, 2*refill)
	return &localBuckets{limiter: limiter.New(&limiter.ExpirableOptions{DefaultExpirationTTL: ttl}).
		SetMax(perMin / 60).
		SetBurst(burst).
		SetTokenBucketExpirationTTL(ttl)}
}

func (b *localBuckets) allow(_ context.Context, key string) bool {
	return !b.limiter.LimitReached(key)
}

// sweep frees expired buckets; tollbooth only replaces one when its client
// comes back.
func (b *localBuckets) sweep() { b.limiter.DeleteExpiredTokenBuckets() }

// redisProbeInterval is how often a replica that fell back to its own
// buckets asks Redis whether it is back. One small script call a second per
// replica costs Redis nothing and ends a fallback within about a second.
const redisProbeInterval = time.Second

// failoverBuckets is the only place that decides between the shared buckets
// and the local ones. While Redis answers, every request takes its token
// there. The first call that fails or times out switches this replica to
// its own buckets (a circuit breaker: no request waits on Redis again), and
// a background probe switches back once Redis answers. Each switch is one
// log line and a change of nielsgpt_rate_limit_backend; a request is never
// refused because Redis failed.
type failoverBuckets struct {
	shared *redisBuckets
	local  *localBuckets
	log    *slog.Logger
	m      *metrics.Metrics
	where  string // Redis's address for log lines, without credentials

	useShared atomic.Bool // Redis answered last time it was asked
	probing   atomic.Bool // a probe goroutine is running
	// switching serialises the switches, so the gauge and the log lines
	// follow the order of the switches themselves. Requests only read
	// useShared.
	switching sync.Mutex
	stop      context.Context
	cancel    context.CancelFunc
	probes    sync.WaitGroup
}

// newFailoverBuckets starts on the local buckets and probes Redis at once,
// so a replica whose Redis is down at start says so in its log.
func newFailoverBuckets(shared *redisBuckets, local *localBuckets, where string, log *slog.Logger, m *metrics.Metrics) *failoverBuckets {
	f := &failoverBuckets{shared: shared, local: local, log: log, m: m, where: where}
	f.stop, f.cancel = context.WithCancel(context.Background())
	m.SetRateLimitBackend(metrics.BackendLocal)
	f.startProbe(true)
	return f
}

func (f *failoverBuckets) allow(ctx context.Context, key string) bool {
	if f.useShared.Load() {
		taken, err := f.shared.take(ctx, key)
		if err == nil {
			return taken
		}
		f.fallBack(err)
	}
	return f.local.allow(ctx, key)
}

// fallBack switches to the local buckets after a failed call; of several
// requests failing at once, one switches, logs and starts the probe.
func (f *failoverBuckets) fallBack(err error) {
	f.m.RedisError()
	f.switching.Lock()
	defer f.switching.Unlock()
	if !f.useShared.CompareAndSwap(true, false) {
		return
	}
	f.m.SetRateLimitBackend(metrics.BackendLocal)
	f.log.Warn("rate limit: Redis failed; this replica uses its own buckets until Redis answers again",
		"redis", f.where, "error", err.Error())
	f.startProbe(false)
}

// startProbe starts the probe unless one runs. atStart makes it log its
// first failure: nothing else has said yet that Redis is not in use.
func (f *failoverBuckets) startProbe(atStart bool) {
	if f.probing.CompareAndSwap(false, true) {
		f.probes.Add(1)
		go f.probe(atStart)
	}
}

// probe asks Redis once a second until it answers, then switches back to
// the shared buckets. It asks with the real script on a bucket of its own,
// so a Redis that answers PING but refuses writes (a read-only replica)
// does not count as back.
func (f *failoverBuckets) probe(atStart bool) {
	defer f.probes.Done()
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			select {
			case <-f.stop.Done():
				f.probing.Store(false)
				return
			case <-time.After(redisProbeInterval):
			}
		}
		_, err := f.shared.take(f.stop, "probe")
		if err == nil {
			break
		}
		f.m.RedisError()
		if attempt == 0 && atStart {
			f.log.Warn("rate limit: Redis unreachable; this replica uses its own buckets until Redis answers",
				"redis", f.where, "error", err.Error())
		}
	}
	f.switching.Lock()
	defer f.switching.Unlock()
	// probing is cleared first: a request that fails right after the
	// switch must be able to start the next probe.
	f.probing.Store(false)
	f.useShared.Store(true)
	f.m.SetRateLimitBackend(metrics.BackendRedis)
	f.log.Info("rate limit: buckets shared through Redis", "redis", f.where)
}

// close stops the probe and closes the connections to Redis.
func (f *failoverBuckets) close() {
	f.cancel()
	f.probes.Wait()
	_ = f.shared.client.Close()
}
