package main

// `nielsgpt bench`: the load benchmark. It starts this very binary's `serve`
// on loopback (once batched, once in the original algorithm's baseline
// mode), drives real SSE streams at it and prints the results table; the
// driver and the report live in package bench.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"nielsgpt/bench"
)

func runBench(args []string) error {
	fs := newFlagSet("bench", os.Stderr, `usage: nielsgpt bench [flags]

Times the engine alone (traced decode steps, in this process), then starts
"nielsgpt serve" on a loopback port, drives real /chat/stream SSE streams at
it, and prints single-stream tokens/s beside the engine's rate (also timed
in turns with single streams), the server's CPU, system calls, context
switches and run-queue wait per token and the driver's CPU, time to first
token for a short and a 16 KB prompt, aggregate tokens/s per concurrency
level, streams past the context at each --hops window_hop, and the server's
peak RSS, next to the same figures for "serve --baseline" (the original
algorithm: the whole window per token, one request at a time).
Without --model it benchmarks a deployed-size model (V=256 T=256 C=256 L=4
H=4 d_ff=1024) with random weights, written to a temporary directory.

flags:
`)
	var (
		opts     bench.Options
		levels   = fs.String("levels", "1,4,16,64", "comma-separated concurrent-stream levels")
		asJSON   = fs.Bool("json", false, "write the report as JSON on stdout (the table then goes to stderr)")
		markdown = fs.Bool("markdown", false, "print the table as Markdown (for docs/BENCHMARKS.md)")
		quiet    = fs.Bool("quiet", false, "no progress lines on stderr")
	)
	fs.StringVar(&opts.Model, "model", "", "a niels-gpt .gguf to benchmark (default: a deployed-size model with random weights)")
	fs.IntVar(&opts.Threads, "threads", 0, "THREADS for the server (0: one per core)")
	fs.BoolVar(&opts.Quick, "quick", false, "small counts and short caps: a smoke run of a few seconds")
	fs.IntVar(&opts.Tokens, "tokens", 0, "max_new_tokens per stream (default 200, --quick 24)")
	fs.IntVar(&opts.BaselineTokens, "baseline-tokens", 0, "max_new_tokens per baseline stream (default: --tokens; --quick 8)")
	fs.DurationVar(&opts.Duration, "duration", 0, "time cap of each measured phase (default 30s, --quick 3s)")
	fs.DurationVar(&opts.BaselineDuration, "baseline-duration", 0, "time cap of each baseline phase (default 10s, --quick 1s)")
	fs.BoolVar(&opts.NoBaseline, "no-baseline", false, "skip the baseline mode")
	hops := fs.String("hops", "1,32", "window_hop values of the past-T scenarios (empty: none)")
	pastLevels := fs.String("past-t-levels", "1,4", "concurrent-stream levels of the past-T scenarios")
	fs.IntVar(&opts.PastTTokens, "past-t-tokens", 0, "max_new_tokens per past-T stream (default 128, --quick 8)")
	fs.StringVar(&opts.CPUProfileDir, "cpuprofile", "", "write a CPU profile of each server's run to DIR/ours.pprof and DIR/baseline.pprof")
	fs.DurationVar(&opts.EngineTime, "engine-time", 0, "how long the engine alone is timed (default 2s, --quick 200ms; negative: skip)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	var err error
	if opts.Levels, err = parseLevels(*levels); err != nil {
		return err
	}
	if opts.PastTLevels, err = parseLevels(*pastLevels); err != nil {
		return err
	}
	opts.PastTHops = []int{}
	if strings.TrimSpace(*hops) != "" {
		if opts.PastTHops, err = parseLevels(*hops); err != nil {
			return fmt.Errorf("--hops: %w", err)
		}
	}
	// The server is this binary: bench measures exactly what `serve` ships.
	if opts.Executable, err = os.Executable(); err != nil {
		return fmt.Errorf("finding this executable to run serve: %w", err)
	}
	if !*quiet {
		opts.Progress = os.Stderr
	}

	// Ctrl-C stops the run cleanly: the server subprocess is stopped and the
	// temporary model removed, rather than left behind.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, opts)
	if err != nil {
		return err
	}

	table := os.Stdout
	if *asJSON {
		table = os.Stderr
	}
	if *markdown {
		err = rep.WriteMarkdown(table)
	} else {
		err = rep.WriteText(table)
	}
	if err == nil && *asJSON {
		err = rep.WriteJSON(os.Stdout)
	}
	if err == nil && rep.BaselineError != "" {
		// The figures are printed, but a run that lost its baseline did
		// not do what was asked: say so in the exit status.
		err = errors.New("the baseline mode failed (see above)")
	}
	return err
}

// parseLevels reads "1,4,16,64".
func parseLevels(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--levels: %q is not a positive integer", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("--levels: no levels given")
	}
	return out, nil
}
