package server

// The HTTP settings: defaults, environment, flags over environment, and a
// clear refusal of every bad value.

import (
	"errors"
	"flag"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"nielsgpt/internal/settings"
	"nielsgpt/internal/testkit"
)

// parseConfig parses the HTTP rows alone; the serve command adds the model
// rows to the same FlagSet, which its own tests cover.
func parseConfig(args []string, lookupEnv func(string) (string, bool), usageOut io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("nielsgpt serve", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	err := settings.Parse(fs, args, lookupEnv, Settings(&c))
	return c, err
}

func TestConfigDefaults(t *testing.T) {
	c := DefaultConfig()
	if c.Host != "0.0.0.0" || c.Port != 8000 ||
		c.MaxPromptBytes != 16384 || c.RateLimitPerMin != 10 || c.RateLimitBurst != 3 ||
		c.MaxNewTokens != 1024 || c.MaxConcurrent != 64 || c.MaxBodyBytes != 1<<20 ||
		len(c.TrustedProxies) != 0 || c.WriteTimeout != 30*time.Second || c.ShutdownTimeout != 30*time.Second ||
		c.LogFormat != "json" || c.RedisURL != "" || c.DrainDelay != 0 || c.WindowHop != 1 {
		t.Fatalf("defaults %+v", c)
	}
	if want := []string{"https://nielseriknandal.com", "http://localhost:3000", "http://localhost:5173"}; !slices.Equal(c.AllowedOrigins, want) {
		t.Fatalf("origins %v", c.AllowedOrigins)
	}
}

func TestConfigEnvAndFlags(t *testing.T) {
	env := testkit.EnvLookup(map[string]string{
		"API_HOST": "127.0.0.1", "API_PORT": "9000", "MAX_PROMPT_BYTES": "100",
		"RATE_LIMIT_PER_MIN": "2.5", "RATE_LIMIT_BURST": "7", "ALLOWED_ORIGINS": " https://a.example , http://b.example:8080 ",
		"TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1,::1", "MAX_NEW_TOKENS": "50", "MAX_CONCURRENT": "4",
		"MAX_BODY_BYTES": "2048", "SHUTDOWN_TIMEOUT": "5s", "LOG_FORMAT": "text", "DRAIN_DELAY": "5s", "WINDOW_HOP": "8",
	})
	c, err := parseConfig([]string{"--port", "9100", "--max-concurrent=8", "--log-format", "json", "--window-hop", "32"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Host != "127.0.0.1" || c.Port != 9100 || c.MaxConcurrent != 8 || c.LogFormat != "json" ||
		c.MaxPromptBytes != 100 || c.RateLimitPerMin != 2.5 || c.RateLimitBurst != 7 || c.MaxNewTokens != 50 ||
		c.MaxBodyBytes != 2048 || c.ShutdownTimeout != 5*time.Second || c.DrainDelay != 5*time.Second || c.WindowHop != 32 {
		t.Fatalf("config %+v", c)
	}
	if !slices.Equal(c.AllowedOrigins, []string{"https://a.example", "http://b.example:8080"}) {
		t.Fatalf("origins %v", c.AllowedOrigins)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.1/32"), netip.MustParsePrefix("::1/128")}
	if !slices.Equal(c.TrustedProxies, want) {
		t.Fatalf("proxies %v", c.TrustedProxies)
	}

	// Set but empty: no cross-origin access at all.
	c, err = parseConfig(nil, testkit.EnvLookup(map[string]string{"ALLOWED_ORIGINS": ""}), io.Discard)
	if err != nil || len(c.AllowedOrigins) != 0 {
		t.Fatalf("empty ALLOWED_ORIGINS: %v %v", c.AllowedOrigins, err)
	}
}

// REDIS_URL takes the URL forms go-redis reads; a bad one is refused at
// start-up without its text, which may carry a password.
func TestConfigRedisURL(t *testing.T) {
	for _, good := range []string{"redis://localhost:6379/0", "redis://:pw@redis.example:6380/2", "rediss://user:pw@redis.example", "unix:///run/redis.sock"} {
		c, err := parseConfig(nil, testkit.EnvLookup(map[string]string{"REDIS_URL": good}), io.Discard)
		if err != nil || c.RedisURL != good {
			t.Errorf("REDIS_URL=%s: %q %v", good, c.RedisURL, err)
		}
	}
	for _, bad := range []string{"http://user:s3cret@redis.example", "redis://user:s3cret@redis.example/notadb", "redis://user:s3cret@[::1", "s3cret"} {
		_, err := parseConfig(nil, testkit.EnvLookup(map[string]string{"REDIS_URL": bad}), io.Discard)
		if err == nil || !strings.Contains(err.Error(), "REDIS_URL") || !strings.Contains(err.Error(), "redis://") {
			t.Errorf("REDIS_URL=%s: error %v, want one naming REDIS_URL and the form", bad, err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("REDIS_URL=%s: the error shows the password: %v", bad, err)
		}
	}
}

func TestConfigRefusesBadValues(t *testing.T) {
	cases := []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"API_PORT": "http"}, nil, `API_PORT: invalid value "http": must be an integer in [0, 65535]`},
		{nil, []string{"--port", "70000"}, `--port: invalid value "70000"`},
		{map[string]string{"API_PORT": ""}, nil, `API_PORT: invalid value ""`},
		{map[string]string{"RATE_LIMIT_PER_MIN": "0"}, nil, "RATE_LIMIT_PER_MIN"},
		{map[string]string{"RATE_LIMIT_PER_MIN": "NaN"}, nil, "RATE_LIMIT_PER_MIN"},
		{map[string]string{"RATE_LIMIT_BURST": "-1"}, nil, "RATE_LIMIT_BURST"},
		{map[string]string{"MAX_CONCURRENT": "0"}, nil, "MAX_CONCURRENT"},
		{map[string]string{"MAX_PROMPT_BYTES": "lots"}, nil, "MAX_PROMPT_BYTES"},
		{map[string]string{"MAX_BODY_BYTES": "0"}, nil, "MAX_BODY_BYTES"},
		{map[string]string{"MAX_NEW_TOKENS": "-5"}, nil, "MAX_NEW_TOKENS"},
		{map[string]string{"ALLOWED_ORIGINS": "*"}, nil, "wildcards are not allowed"},
		{map[string]string{"ALLOWED_ORIGINS": "https://*.example.com"}, nil, "wildcards are not allowed"},
		{map[string]string{"ALLOWED_ORIGINS": "/example/"}, nil, "an origin is scheme://host[:port]"},
		{map[string]string{"ALLOWED_ORIGINS": "https://a.example/path"}, nil, "an origin is scheme://host[:port]"},
		{map[string]string{"ALLOWED_ORIGINS": "example.com"}, nil, "an origin is scheme://host[:port]"},
		{map[string]string{"TRUSTED_PROXIES": "10.0.0.0/33"}, nil, "not an IP address or CIDR"},
		{map[string]string{"TRUSTED_PROXIES": "proxy.local"}, nil, "not an IP address or CIDR"},
		{map[string]string{"SHUTDOWN_TIMEOUT": "30"}, nil, "positive duration"},
		{map[string]string{"LOG_FORMAT": "xml"}, nil, "LOG_FORMAT"},
		{map[string]string{"DRAIN_DELAY": "-1s"}, nil, "DRAIN_DELAY"},
		{map[string]string{"DRAIN_DELAY": "5"}, nil, "DRAIN_DELAY"},
		{nil, []string{"--drain-delay", "2h"}, "--drain-delay"},
		{map[string]string{"WINDOW_HOP": "0"}, nil, "WINDOW_HOP"},
		{nil, []string{"--window-hop", "x"}, "--window-hop"},
		{nil, []string{"extra"}, `unexpected argument "extra"`},
	}
	for _, tc := range cases {
		_, err := parseConfig(tc.args, testkit.EnvLookup(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("env %v args %v: error %v, want it to mention %q", tc.env, tc.args, err, tc.want)
		}
	}
	// Every problem is reported at once.
	_, err := parseConfig(nil, testkit.EnvLookup(map[string]string{"API_PORT": "x", "RATE_LIMIT_BURST": "y"}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "API_PORT") || !strings.Contains(err.Error(), "RATE_LIMIT_BURST") {
		t.Fatalf("combined error %v", err)
	}
	if _, err := parseConfig([]string{"--nope"}, testkit.EnvLookup(nil), io.Discard); err == nil {
		t.Fatal("unknown flag accepted")
	}
	if _, err := parseConfig([]string{"-h"}, testkit.EnvLookup(nil), io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
}
