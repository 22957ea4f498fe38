//go:build linux

// Command soak runs the reliability soak (reliability.RunSoak) against a
// built nielsgpt binary and prints its summary; `make soak` runs it. It
// exits 1 when a check fails, 2 when the run could not be carried out.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"nielsgpt/reliability"
)

func main() {
	// SOAK_DURATION sets the default so `make soak SOAK_DURATION=30s` and a
	// plain environment variable both work.
	defDuration := 3 * time.Minute
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			fmt.Fprintf(os.Stderr, "soak: SOAK_DURATION=%q is not a positive duration\n", v)
			os.Exit(2)
		}
		defDuration = d
	}
	var o reliability.SoakOptions
	flag.StringVar(&o.Exe, "exe", "bin/nielsgpt", "the nielsgpt binary to soak")
	flag.StringVar(&o.Model, "model", "", "a .gguf to serve (default: a deployed-size model with random weights)")
	flag.DurationVar(&o.Duration, "duration", defDuration, "length of the main phase (env SOAK_DURATION)")
	flag.IntVar(&o.Streams, "streams", 64, "concurrent client workers")
	flag.IntVar(&o.MaxConcurrent, "max-concurrent", 0, "the server's MAX_CONCURRENT (default: -streams)")
	flag.IntVar(&o.Threads, "threads", 0, "THREADS for the server (0: its default)")
	flag.Uint64Var(&o.Seed, "seed", 1, "seed of the clients' random choices")
	flag.Parse()
	o.Progress = os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	report, err := reliability.RunSoak(ctx, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		os.Exit(2)
	}
	_ = report.WriteText(os.Stdout)
	if !report.OK() {
		os.Exit(1)
	}
}
