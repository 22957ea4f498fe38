package server

// Server configuration: SPEC §5's environment variables plus the limits this
// server adds, each overridable by a command-line flag. One table drives the
// environment, the flags, the defaults and the validation, so a setting cannot
// be readable one way and not the other, and every bad value is refused at
// start-up with its name and the reason.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"

	"nielsgpt/hub"
)

// Config is everything `nielsgpt serve` can be told.
type Config struct {
	Host string
	Port int

	// Model names the model to serve: a .gguf path, a .pt path, "demo", or
	// "" for SPEC §5's CKPT_DIR/CKPT_FILENAME-or-Hub behaviour.
	Model   string
	Device  string
	Threads int // 0: the engine default (one per core, less one for the Go side)
	// Baseline serves with the original service's algorithm (no KV cache,
	// one request at a time), so `nielsgpt bench` can measure both.
	Baseline bool

	// Hub holds CKPT_REPO_ID, CKPT_FILENAME, CKPT_DIR, HF_TOKEN, HF_ENDPOINT
	// and HF_HUB_OFFLINE. Progress and Client are left to the caller.
	Hub hub.Options

	MaxPromptBytes  int
	MaxBodyBytes    int64
	MaxNewTokens    int
	MaxConcurrent   int
	RateLimitPerMin float64
	RateLimitBurst  int
	AllowedOrigins  []string
	TrustedProxies  []netip.Prefix

	// WriteTimeout bounds each write to a client (each SSE event, each JSON
	// response), so a client that stops reading frees its slot.
	WriteTimeout time.Duration
	// ReadTimeout bounds reading one request body.
	ReadTimeout time.Duration
	// ShutdownTimeout bounds how long SIGTERM waits for in-flight streams.
	ShutdownTimeout time.Duration
	LogFormat       string // "json" or "text"
}

// setting is one row of the configuration table. env or flag may be empty
// when a value is only settable one way (HF_TOKEN never appears as a flag, so
// it cannot leak through the process list).
type setting struct {
	env, flag, def, usage string
	apply                 func(c *Config, v string) error
}

var settings = []setting{
	{"API_HOST", "host", "0.0.0.0", "address to listen on", func(c *Config, v string) error {
		if v != "" && strings.ContainsAny(v, " /") {
			return errors.New("must be a host name or IP address")
		}
		c.Host = v
		return nil
	}},
	{"API_PORT", "port", "8000", "TCP port to listen on (0 picks a free one)", func(c *Config, v string) (err error) {
		c.Port, err = parseInt(v, 0, 65535)
		return err
	}},
	{"MODEL", "model", "", `model to serve: a .gguf file, a .pt checkpoint (converted once, cached beside it), "demo" (embedded), or empty for CKPT_DIR/CKPT_FILENAME, else the Hub`, func(c *Config, v string) error {
		c.Model = v
		return nil
	}},
	{"DEVICE", "device", defaultDevice(), "compute device: cpu, or metal/mps/gpu where built", func(c *Config, v string) error {
		if v == "" {
			return errors.New("must not be empty")
		}
		c.Device = v
		return nil
	}},
	{"THREADS", "threads", "0", "CPU threads for the engine (0: one per core less one, at least 1)", func(c *Config, v string) (err error) {
		c.Threads, err = parseInt(v, 0, 1024)
		return err
	}},
	{"BASELINE", "baseline", "0", "run the original algorithm: whole window per token, one request at a time (for benchmarks)", func(c *Config, v string) (err error) {
		c.Baseline, err = parseBool(v)
		return err
	}},
	{"CKPT_REPO_ID", "ckpt-repo-id", hub.DefaultRepoID, "Hugging Face Hub model repository", func(c *Config, v string) error {
		if v == "" {
			return errors.New("must not be empty")
		}
		c.Hub.RepoID = v
		return nil
	}},
	{"CKPT_FILENAME", "ckpt-filename", hub.DefaultFilename, "checkpoint file name in the repository and in CKPT_DIR", func(c *Config, v string) error {
		if v == "" || strings.ContainsAny(v, `/\`) || v == "." || v == ".." {
			return errors.New("must be a plain file name")
		}
		c.Hub.Filename = v
		return nil
	}},
	{"CKPT_DIR", "ckpt-dir", hub.DefaultDir, "directory holding (or receiving) the checkpoint", func(c *Config, v string) error {
		if v == "" {
			return errors.New("must not be empty")
		}
		c.Hub.Dir = v
		return nil
	}},
	{"HF_ENDPOINT", "", hub.DefaultEndpoint, "", func(c *Config, v string) error {
		if v == "" { // huggingface_hub reads an empty HF_ENDPOINT as unset
			v = hub.DefaultEndpoint
		}
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return errors.New("must be an http(s) URL")
		}
		c.Hub.Endpoint = strings.TrimRight(v, "/")
		return nil
	}},
	{"HF_TOKEN", "", "", "", func(c *Config, v string) error {
		c.Hub.Token = strings.TrimSpace(v)
		return nil
	}},
	{"HF_HUB_OFFLINE", "offline", "0", "never use the network for the model (1/true/yes/on)", func(c *Config, v string) (err error) {
		c.Hub.Offline, err = parseBool(v)
		return err
	}},
	{"MAX_PROMPT_BYTES", "max-prompt-bytes", "16384", "largest formatted transcript accepted, in bytes", func(c *Config, v string) (err error) {
		c.MaxPromptBytes, err = parseInt(v, 1, 1<<30)
		return err
	}},
	{"MAX_BODY_BYTES", "max-body-bytes", "1048576", "largest request body accepted, in bytes (checked before parsing)", func(c *Config, v string) error {
		n, err := parseInt(v, 1, 1<<30)
		c.MaxBodyBytes = int64(n)
		return err
	}},
	{"MAX_NEW_TOKENS", "max-new-tokens", "1024", "largest max_new_tokens a request may ask for", func(c *Config, v string) (err error) {
		c.MaxNewTokens, err = parseInt(v, 0, 1<<20)
		return err
	}},
	{"MAX_CONCURRENT", "max-concurrent", "64", "generations served at once; more get 503 busy", func(c *Config, v string) (err error) {
		c.MaxConcurrent, err = parseInt(v, 1, 1<<16)
		return err
	}},
	{"RATE_LIMIT_PER_MIN", "rate-limit-per-min", "10", "per-client token bucket refill, requests per minute", func(c *Config, v string) error {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f <= 0 || f > 1e9 {
			return errors.New("must be a number > 0")
		}
		c.RateLimitPerMin = f
		return nil
	}},
	{"RATE_LIMIT_BURST", "rate-limit-burst", "3", "per-client token bucket capacity", func(c *Config, v string) (err error) {
		c.RateLimitBurst, err = parseInt(v, 1, 1<<30)
		return err
	}},
	{"ALLOWED_ORIGINS", "allowed-origins", "https://nielseriknandal.com,http://localhost:3000,http://localhost:5173", "comma-separated exact origins allowed by CORS (with credentials)", func(c *Config, v string) (err error) {
		c.AllowedOrigins, err = parseOrigins(v)
		return err
	}},
	{"TRUSTED_PROXIES", "trusted-proxies", "", "comma-separated IPs/CIDRs of reverse proxies whose X-Forwarded-For / X-Real-IP is believed", func(c *Config, v string) (err error) {
		c.TrustedProxies, err = parsePrefixes(v)
		return err
	}},
	{"WRITE_TIMEOUT", "write-timeout", "30s", "deadline for each write to a client", func(c *Config, v string) (err error) {
		c.WriteTimeout, err = parseDuration(v)
		return err
	}},
	{"READ_TIMEOUT", "read-timeout", "30s", "deadline for reading a request body", func(c *Config, v string) (err error) {
		c.ReadTimeout, err = parseDuration(v)
		return err
	}},
	{"SHUTDOWN_TIMEOUT", "shutdown-timeout", "30s", "how long SIGTERM waits for in-flight requests before cutting them", func(c *Config, v string) (err error) {
		c.ShutdownTimeout, err = parseDuration(v)
		return err
	}},
	{"LOG_FORMAT", "log-format", "json", "request log format: json or text", func(c *Config, v string) error {
		if v != "json" && v != "text" {
			return errors.New(`must be "json" or "text"`)
		}
		c.LogFormat = v
		return nil
	}},
}

// defaultDevice follows SPEC §5: the CPU, except on Apple Silicon, where
// ggml's Metal backend is built in.
func defaultDevice() string {
	if runtime.GOOS == "darwin" && runtime.GOARCH == "arm64" {
		return "metal"
	}
	return "cpu"
}

// DefaultConfig is the configuration with no environment and no flags.
func DefaultConfig() Config {
	c, err := ParseConfig(nil, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		panic("server: built-in defaults are invalid: " + err.Error()) // a bug in the table above
	}
	return c
}

// ParseConfig reads the environment through lookupEnv (usually os.LookupEnv)
// and then args (flags without the subcommand name); a flag wins over its
// variable. A variable that is set but empty counts as set, so that
// ALLOWED_ORIGINS= can switch cross-origin access off. Usage and flag errors
// go to usageOut. flag.ErrHelp is returned for -h.
func ParseConfig(args []string, lookupEnv func(string) (string, bool), usageOut io.Writer) (Config, error) {
	fs := flag.NewFlagSet("nielsgpt serve", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	flagValues := map[string]*string{}
	for _, s := range settings {
		if s.flag == "" {
			continue
		}
		usage := s.usage
		if s.env != "" {
			usage += " (env " + s.env + ")"
		}
		value := s.def
		flagValues[s.flag] = &value
		if boolFlags[s.flag] {
			fs.Var((*boolText)(&value), s.flag, usage)
		} else {
			fs.StringVar(&value, s.flag, s.def, usage)
		}
	}
	fs.Usage = func() {
		fmt.Fprintf(usageOut, "usage: nielsgpt serve [flags]\n\nServes niels-gpt over HTTP (SSE streaming, attention traces, /metrics, /docs).\nEvery flag can also be set through the environment variable named beside it.\nHF_TOKEN and HF_ENDPOINT are read from the environment only.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (flags only; see nielsgpt serve -h)", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	var c Config
	var problems []string
	for _, s := range settings {
		value, source := s.def, ""
		if s.env != "" {
			if v, ok := lookupEnv(s.env); ok {
				value, source = v, s.env
			}
		}
		if s.flag != "" && given[s.flag] {
			value, source = *flagValues[s.flag], "--"+s.flag
		}
		if err := s.apply(&c, value); err != nil {
			if source == "" {
				source = s.env
			}
			shown := strconv.Quote(value)
			if s.env == "HF_TOKEN" {
				shown = "(hidden)"
			}
			problems = append(problems, fmt.Sprintf("%s: invalid value %s: %v", source, shown, err))
		}
	}
	if len(problems) > 0 {
		return Config{}, errors.New("invalid configuration:\n  " + strings.Join(problems, "\n  "))
	}
	return c, nil
}

// boolFlags are switches: `--offline` alone means on, as users expect, while
// `--offline=0` and the environment variable keep parseBool's spellings.
var boolFlags = map[string]bool{"offline": true, "baseline": true}

// boolText is a flag.Value that keeps the text for parseBool and lets the
// flag package accept the flag without a value.
type boolText string

func (b *boolText) String() string     { return string(*b) }
func (b *boolText) Set(v string) error { *b = boolText(v); return nil }
func (b *boolText) IsBoolFlag() bool   { return true }

func parseInt(v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("must be an integer in [%d, %d]", lo, hi)
	}
	return n, nil
}

// parseBool accepts what huggingface_hub accepts for its switches, so the
// same environment works for the Python tools and for this server.
func parseBool(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "on":
		return true, nil
	case "", "0", "false", "no", "off":
		return false, nil
	}
	return false, errors.New("must be a boolean (1/0, true/false, yes/no, on/off)")
}

func parseDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil || d <= 0 {
		return 0, errors.New(`must be a positive duration such as "30s"`)
	}
	return d, nil
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
