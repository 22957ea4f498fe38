package main

// `nielsgpt serve`: the HTTP API. Configuration comes from the environment
// and flags (server.ParseConfig); the server listens at once and loads the
// model in the background; SIGTERM or Ctrl-C drains in-flight streams and
// exits 0; a model that cannot be obtained or loaded exits non-zero with the
// reason.

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"nielsgpt/metrics"
	"nielsgpt/server"
)

func runServe(args []string) error {
	cfg, err := server.ParseConfig(args, os.LookupEnv, os.Stderr)
	if err != nil {
		return err
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
	log.Info("starting", "model", modelName(cfg.Model), "device", cfg.Device,
		"max_concurrent", cfg.MaxConcurrent, "max_new_tokens", cfg.MaxNewTokens,
		"rate_limit_per_min", cfg.RateLimitPerMin, "rate_limit_burst", cfg.RateLimitBurst,
		"allowed_origins", cfg.AllowedOrigins, "trusted_proxies", len(cfg.TrustedProxies))
	load := func(ctx context.Context) (server.Engine, error) {
		return server.LoadModel(ctx, cfg, server.ModelOptions{
			Demo:     func() []byte { return demoGGUF },
			Progress: progress,
			OnStep:   m.EngineStep,
			Log:      log,
		})
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
