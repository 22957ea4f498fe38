package server

// Buckets shared by every replica through Redis (REDIS_URL). Without them,
// N replicas behind one load balancer give each client N times the limit.
//
// A bucket is one Redis hash updated by one Lua script, so taking a token is
// atomic however many replicas ask at once, and the script reads the clock
// of Redis itself, so replicas whose clocks disagree still refill a bucket
// at the same rate. The arithmetic is that of the local buckets
// (golang.org/x/time/rate as tollbooth uses it): a new bucket is full, it
// refills continuously up to its capacity, a request takes one whole token
// or is refused and takes none.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisCallTimeout bounds each call to Redis. Taking a token is one round
// trip inside a data centre (well under a millisecond); a Redis that takes
// longer than this is treated as down, so a request waits at most this long
// before the local buckets decide instead.
const redisCallTimeout = 100 * time.Millisecond

// takeTokenScript takes one token from the bucket KEYS[1] and returns 1, or
// returns 0 when the bucket holds less than one token.
// ARGV[1]: the capacity; ARGV[2]: the refill in tokens per microsecond.
//
// The hash holds the tokens left and the time (microseconds, Redis's clock)
// they were counted at. The key expires once the bucket would be full again:
// a forgotten bucket is a full one, so forgetting it then changes nothing
// (the cap keeps PEXPIRE's argument a plain integer for absurdly slow
// refills).
const takeTokenScript = `
local capacity = tonumber(ARGV[1])
local per_us = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil or at == nil then
  tokens, at = capacity, now
end
if now > at then
  tokens = math.min(capacity, tokens + (now - at) * per_us)
end
local taken = 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
local full_in_ms = math.ceil((capacity - tokens) / per_us / 1000) + 1000
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.min(full_in_ms, 1e12)))
return taken
`

// redisKeyPrefix keeps the buckets apart from anything else in the same
// Redis database.
const redisKeyPrefix = "nielsgpt:ratelimit:"

// redisBuckets takes tokens from buckets kept in Redis. Its calls fail
// rather than wait: the failover around it decides what a failure means.
type redisBuckets struct {
	client   *redis.Client
	script   *redis.Script
	capacity string // the script's arguments, formatted once
	perUs    string
}

// redisOptions reads REDIS_URL into client options whose every call is
// bounded by redisCallTimeout and never retried: a retry would only stretch
// the time a request waits before the local buckets answer.
func redisOptions(rawURL string) (*redis.Options, error) {
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		// The parser's own errors may quote the URL, password included.
		return nil, errors.New("must be redis://[[user]:password@]host[:port][/db], rediss://… (TLS) or unix:///path/to/socket")
	}
	opts.DialTimeout = redisCallTimeout
	opts.ReadTimeout = redisCallTimeout
	opts.WriteTimeout = redisCallTimeout
	opts.PoolTimeout = redisCallTimeout
	opts.ContextTimeoutEnabled = true
	opts.MaxRetries = -1
	opts.DialerRetries = 1
	opts.DialerRetryTimeout = time.Millisecond
	opts.DisableIdentity = true // no CLIENT SETINFO round trip on each new connection
	return opts, nil
}

func newRedisBuckets(opts *redis.Options, perMin float64, burst int) *redisBuckets {
	quietRedisLog.Do(func() { redis.SetLogger(discardRedisLog{}) })
	return &redisBuckets{
		client:   redis.NewClient(opts),
		script:   redis.NewScript(takeTokenScript),
		capacity: strconv.Itoa(burst),
		perUs:    strconv.FormatFloat(perMin/60/1e6, 'g', -1, 64),
	}
}

// take takes one token from key's bucket. The call is bounded by
// redisCallTimeout and does not end early with ctx: a client that leaves
// mid-call must not look like a Redis failure.
func (b *redisBuckets) take(ctx context.Context, key string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), redisCallTimeout)
	defer cancel()
	n, err := b.script.Run(ctx, b.client, []string{redisKeyPrefix + key}, b.capacity, b.perUs).Int()
	if err != nil {
		return false, err
	}
	return n == 1, nil
}

// go-redis writes its own unstructured lines to stderr, one per failed
// dial, every second of an outage. The failover logs each change of state
// once, as JSON like every other line; the library's lines are dropped.
var quietRedisLog sync.Once

type discardRedisLog struct{}

func (discardRedisLog) Printf(context.Context, string, ...any) {}

// where names the Redis server for logs: its address and database, never
// the user or password.
func where(opts *redis.Options) string {
	return fmt.Sprintf("%s/%d", opts.Addr, opts.DB)
}
