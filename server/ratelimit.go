package server

// The per-client token buckets (docs/API.md §10.5): capacity
// RATE_LIMIT_BURST, refilled continuously at RATE_LIMIT_PER_MIN, one bucket
// per client address shared by both generation endpoints. The middleware
// sees only the rateLimiter interface, so where the buckets live (in this
// process, or in Redis for replicas that share them) is decided once, here.

import (
	"context"
	"time"

	"github.com/didip/tollbooth/v7/limiter"
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
