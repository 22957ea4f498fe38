package main

// `nielsgpt serve`: the HTTP API. Configuration comes from the environment
// and flags: the server's HTTP settings and modelsource's model settings,
// parsed as one table; the server listens at once and loads the model in the
// background; SIGTERM or Ctrl-C drains in-flight streams and exits 0; a
// model that cannot be obtained or loaded exits non-zero with the reason.

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"syscall"

	"nielsgpt/internal/settings"
	"nielsgpt/metrics"
	"nielsgpt/modelsource"
	"nielsgpt/server"
)

// parseServeConfig reads both tables into one FlagSet, so that -h lists
// every setting once and a flag wins over its variable whichever package
// owns it. Usage and flag errors go to usageOut; flag.ErrHelp is returned
// for -h.
func parseServeConfig(args []string, lookupEnv func(string) (string, bool), usageOut io.Writer) (server.Config, modelsource.Config, error) {
	var cfg server.Config
	var modelCfg modelsource.Config
	fs := newFlagSet("nielsgpt serve", usageOut, "usage: nielsgpt serve [flags]\n\nServes niels-gpt over HTTP (SSE streaming, attention traces, /metrics, /docs).\nEvery flag can also be set through the environment variable named beside it.\nHF_TOKEN and HF_ENDPOINT are read from the environment only.\n\n")
	rows := append(server.Settings(&cfg), modelsource.Settings(&modelCfg)...)
	if err := settings.Parse(fs, args, lookupEnv, rows); err != nil {
		return server.Config{}, modelsource.Config{}, err
	}
	// KV_CACHE_MB=0: room for a full window per generation slot, so that by
	// default MAX_CONCURRENT is the only limit.
	modelCfg.KVWindows = cfg.MaxConcurrent
	return cfg, modelCfg, nil
}

func runServe(args []string) error {
	cfg, modelCfg, err := parseServeConfig(args, os.LookupEnv, os.Stderr)
	if err != nil {
		return err
	}
	// A CPU profile of the whole run, for `nielsgpt bench --cpuprofile`
	// (docs/BENCHMARKS.md): written when the server stops.
	if path := os.Getenv("NIELSGPT_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("NIELSGPT_CPUPROFILE: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return fmt.Errorf("NIELSGPT_CPUPROFILE: %w", err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	log := server.NewLogger(cfg.LogFormat, os.Stderr)
	m := metrics.New()
	srv, err := server.New(cfg, m, log)
	if err != nil {
		return err
	}

	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", addr, err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		// After the first signal, a second one kills at once, as users expect
		// from a second Ctrl-C during a long drain.
		<-ctx.Done()
		stop()
	}()

	// The download progress bar is for people watching a terminal; in a
	// container log it would be noise.
	var progress io.Writer
	if isTerminal(os.Stderr) {
		progress = os.Stderr
	}
	log.Info("starting", "model", modelName(modelCfg.Model), "device", modelCfg.Device, "backend_dir", modelCfg.BackendDir,
		"max_concurrent", cfg.MaxConcurrent, "max_new_tokens", cfg.MaxNewTokens, "window_hop", cfg.WindowHop,
		"rate_limit_per_min", cfg.RateLimitPerMin, "rate_limit_burst", cfg.RateLimitBurst,
		"allowed_origins", cfg.AllowedOrigins, "trusted_proxies", len(cfg.TrustedProxies),
		"shared_rate_limit", cfg.RedisURL != "") // the URL itself may hold a password
	load := func(ctx context.Context) (server.Engine, error) {
		model, _, err := modelsource.Load(ctx, modelCfg, modelsource.Options{
			Demo:     func() []byte { return demoGGUF },
			Progress: progress,
			OnStep:   m.EngineStep,
			Log:      log,
		})
		if err != nil {
			return nil, err // a nil *engine.Model would make a non-nil Engine
		}
		return model, nil
	}
	if err := srv.Run(ctx, ln, load); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

func modelName(model string) string {
	if model == "" {
		return "(CKPT_DIR/CKPT_FILENAME, else the Hub)"
	}
	return model
}
