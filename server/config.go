package server

// The HTTP side of `nielsgpt serve`'s configuration: listening, limits,
// CORS, proxies, timeouts and logs (docs/API.md lists them for users). The
// model side (which model, on which device) is modelsource's; both are rows
// of the same kind of table (internal/settings), parsed together by the
// serve command.

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"nielsgpt/internal/settings"
)

// Config is the HTTP side of what `nielsgpt serve` can be told.
type Config struct {
	Host string
	Port int

	MaxPromptBytes int
	MaxBodyBytes   int64
	MaxNewTokens   int
	MaxConcurrent  int
	// MaxAttentionFloats bounds one /inspect/attention answer: layers × H ×
	// t × t probabilities, which the engine holds and the response carries
	// (4 bytes each as .npz, about 11 as JSON).
	MaxAttentionFloats int
	// WindowHop is window_hop for requests that leave it out (docs/API.md):
	// how far the window jumps once a conversation outgrows the context.
	WindowHop       int
	RateLimitPerMin float64
	RateLimitBurst  int
	AllowedOrigins  []string
	TrustedProxies  []netip.Prefix
	// StreamPace is the least time between two steps' events on one
	// /chat/stream stream, and before its `done`: for front ends that keep
	// only the last update of each animation frame. 0 sends at once.
	StreamPace time.Duration
	// RedisURL, when set, puts the rate-limit buckets in Redis so that
	// replicas share them. It may hold a password: never log it.
	RedisURL string

	// WriteTimeout bounds each write to a client (each SSE event, each JSON
	// response), so a client that stops reading frees its slot.
	WriteTimeout time.Duration
	// ReadTimeout bounds reading one request body.
	ReadTimeout time.Duration
	// DrainDelay is how long the server keeps accepting after SIGTERM, with
	// /readyz answering 503, before it closes its listener: the time a load
	// balancer needs to notice and stop sending new connections.
	DrainDelay time.Duration
	// ShutdownTimeout bounds how long SIGTERM waits for in-flight streams.
	ShutdownTimeout time.Duration
	LogFormat       string // "json" or "text"
	// APIKeys, when not empty, are the bearer tokens every POST endpoint
	// and every /v1 route requires.
	APIKeys []string
}

// Settings are the rows of the HTTP settings, each filling its field of c.
// The serve command parses them together with modelsource's rows.
func Settings(c *Config) []settings.Row {
	return []settings.Row{
		{Env: "API_HOST", Flag: "host", Default: "0.0.0.0", Usage: "address to listen on", Apply: func(v string) error {
			if v != "" && strings.ContainsAny(v, " /") {
				return errors.New("must be a host name or IP address")
			}
			c.Host = v
			return nil
		}},
		{Env: "API_PORT", Flag: "port", Default: "8000", Usage: "TCP port to listen on (0 picks a free one)", Apply: settings.Int(&c.Port, 0, 65535)},
		{Env: "MAX_PROMPT_BYTES", Flag: "max-prompt-bytes", Default: "16384", Usage: "largest formatted transcript accepted, in bytes", Apply: settings.Int(&c.MaxPromptBytes, 1, 1<<30)},
		{Env: "MAX_BODY_BYTES", Flag: "max-body-bytes", Default: "1048576", Usage: "largest request body accepted, in bytes (checked before parsing)", Apply: func(v string) error {
			n, err := settings.ParseInt(v, 1, 1<<30)
			c.MaxBodyBytes = int64(n)
			return err
		}},
		{Env: "MAX_NEW_TOKENS", Flag: "max-new-tokens", Default: "1024", Usage: "largest max_new_tokens a request may ask for", Apply: settings.Int(&c.MaxNewTokens, 0, 1<<20)},
		{Env: "MAX_CONCURRENT", Flag: "max-concurrent", Default: "64", Usage: "generations served at once; more get 503 busy", Apply: settings.Int(&c.MaxConcurrent, 1, 1<<16)},
		{Env: "MAX_ATTENTION_FLOATS", Flag: "max-attention-floats", Default: "4194304", Usage: "most attention probabilities (layers × heads × t × t) one /inspect/attention answer may hold; larger requests get 422", Apply: settings.Int(&c.MaxAttentionFloats, 1, 1<<30)},
		{Env: "WINDOW_HOP", Flag: "window-hop", Default: "1", Usage: "how many tokens the window jumps once a conversation outgrows the context (1: every token, as the original; larger is faster and keeps T-hop+1..T tokens); the default for window_hop, at most T-1", Apply: settings.Int(&c.WindowHop, 1, 1<<20)},
		{Env: "STREAM_PACE_MS", Flag: "stream-pace-ms", Default: "0", Usage: "least milliseconds between two steps of one /chat/stream stream, and before done (0: none); 50 for front ends that draw once per animation frame", Apply: func(v string) error {
			ms, err := settings.ParseInt(v, 0, int(maxStreamPace/time.Millisecond))
			c.StreamPace = time.Duration(ms) * time.Millisecond
			return err
		}},
		{Env: "RATE_LIMIT_PER_MIN", Flag: "rate-limit-per-min", Default: "10", Usage: "per-client token bucket refill, requests per minute", Apply: func(v string) error {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f <= 0 || f > 1e9 {
				return errors.New("must be a number > 0")
			}
			c.RateLimitPerMin = f
			return nil
		}},
		{Env: "RATE_LIMIT_BURST", Flag: "rate-limit-burst", Default: "3", Usage: "per-client token bucket capacity", Apply: settings.Int(&c.RateLimitBurst, 1, 1<<30)},
		{Env: "ALLOWED_ORIGINS", Flag: "allowed-origins", Default: "https://nielseriknandal.com,http://localhost:3000,http://localhost:5173", Usage: "comma-separated exact origins allowed by CORS (with credentials)", Apply: func(v string) (err error) {
			c.AllowedOrigins, err = parseOrigins(v)
			return err
		}},
		{Env: "TRUSTED_PROXIES", Flag: "trusted-proxies", Default: "", Usage: "comma-separated IPs/CIDRs of reverse proxies whose X-Forwarded-For / X-Real-IP is believed", Apply: func(v string) (err error) {
			c.TrustedProxies, err = parsePrefixes(v)
			return err
		}},
		{Env: "REDIS_URL", Flag: "redis-url", Default: "", Secret: true, Usage: "Redis for rate-limit buckets shared by every replica, redis://[[user]:password@]host[:port][/db]; empty: each process keeps its own (prefer the variable: a flag shows in the process list)", Apply: func(v string) error {
			if v != "" {
				if _, err := redisOptions(v); err != nil {
					return err
				}
			}
			c.RedisURL = v
			return nil
		}},
		{Env: "WRITE_TIMEOUT", Flag: "write-timeout", Default: "30s", Usage: "deadline for each write to a client", Apply: settings.Duration(&c.WriteTimeout)},
		{Env: "READ_TIMEOUT", Flag: "read-timeout", Default: "30s", Usage: "deadline for reading a request body", Apply: settings.Duration(&c.ReadTimeout)},
		{Env: "SHUTDOWN_TIMEOUT", Flag: "shutdown-timeout", Default: "30s", Usage: "how long SIGTERM waits for in-flight requests before cutting them", Apply: settings.Duration(&c.ShutdownTimeout)},
		{Env: "DRAIN_DELAY", Flag: "drain-delay", Default: "0s", Usage: "after SIGTERM, keep accepting this long with /readyz answering 503, so load balancers stop sending before the listener closes", Apply: func(v string) error {
			d, err := time.ParseDuration(strings.TrimSpace(v))
			if err != nil || d < 0 || d > time.Hour {
				return errors.New(`must be a duration from "0s" to "1h"`)
			}
			c.DrainDelay = d
			return nil
		}},
		// API_KEYS has no flag, so the keys never show in the process list.
		{Env: "API_KEYS", Secret: true, Apply: func(v string) (err error) {
			c.APIKeys, err = parseAPIKeys(v)
			return err
		}},
		{Env: "LOG_FORMAT", Flag: "log-format", Default: "json", Usage: "request log format: json or text", Apply: func(v string) error {
			if v != "json" && v != "text" {
				return errors.New(`must be "json" or "text"`)
			}
			c.LogFormat = v
			return nil
		}},
	}
}

// DefaultConfig is the configuration with no environment and no flags.
func DefaultConfig() Config {
	var c Config
	if err := settings.Defaults(Settings(&c)); err != nil {
		panic("server: built-in defaults are invalid: " + err.Error()) // a bug in the table above
	}
	return c
}

// parseOrigins accepts only exact origins (scheme://host[:port]). A "*" or a
// pattern is refused outright: credentials must never be paired with a
// wildcard, and gin-contrib/cors would treat "/.../" values as regular
// expressions.
func parseOrigins(v string) ([]string, error) {
	var origins []string
	for _, item := range strings.Split(v, ",") {
		o := strings.TrimSpace(item)
		if o == "" {
			continue
		}
		if strings.Contains(o, "*") {
			return nil, fmt.Errorf("%q: wildcards are not allowed (credentials are enabled); list exact origins", o)
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, fmt.Errorf("%q: an origin is scheme://host[:port], e.g. https://example.com", o)
		}
		origins = append(origins, o)
	}
	return origins, nil
}

// parsePrefixes reads IPs and CIDRs; a bare IP is its own /32 or /128.
func parsePrefixes(v string) ([]netip.Prefix, error) {
	var prefixes []netip.Prefix
	for _, item := range strings.Split(v, ",") {
		s := strings.TrimSpace(item)
		if s == "" {
			continue
		}
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("%q is not an IP address or CIDR", s)
			}
			if p.Addr().Is4In6() {
				return nil, fmt.Errorf("%q: write IPv4 networks in IPv4 form", s)
			}
			prefixes = append(prefixes, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address or CIDR", s)
		}
		a = a.Unmap().WithZone("")
		prefixes = append(prefixes, netip.PrefixFrom(a, a.BitLen()))
	}
	return prefixes, nil
}

// parseAPIKeys reads a comma-separated list of keys. Keys are opaque, but
// whitespace inside one is certainly a mistake in the list.
func parseAPIKeys(v string) ([]string, error) {
	var keys []string
	for _, k := range strings.Split(v, ",") {
		k = strings.TrimSpace(k)
		switch {
		case k == "":
			continue
		case strings.ContainsAny(k, " \t\r\n"):
			return nil, errors.New("keys must not contain whitespace")
		}
		keys = append(keys, k)
	}
	return keys, nil
}
