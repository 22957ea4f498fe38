//go:build linux

package reliability

// The soak (docs/RELIABILITY.md, "Load and soak"): the real server under many
// concurrent streams for minutes, with clients that misbehave the ways real
// ones do (hang up after a few tokens, read slowly, send garbage), and then
// the questions that only time answers: did anything fail with a 5xx, did
// goroutines or memory pile up, and are the concurrency and rate caps still
// exact?
//
// Phases, each on a fresh view of the server's own metrics:
//  1. warm-up and baselines (goroutines, RSS);
//  2. the main phase: Streams workers for Duration, each its own client
//     (its own loopback address, so its own rate-limit bucket);
//  3. settling: gauges back to 0, goroutines back to the baseline;
//  4. the concurrency cap: MaxConcurrent+CapExtra streams at once, exactly
//     CapExtra must get 503 busy;
//  5. the rate limit, on a second server whose bucket refills once a minute:
//     exactly RateBurst requests pass from one client, the rest get 429;
//  6. SIGTERM to both servers: each must exit 0.
//
// The driver never asks for more generation slots than the server has
// free (admission, in soak_load.go), so any 503 in the main phase is a
// server fault, not a race between a client hanging up and its slot being
// given back.
//
// This file holds the options and RunSoak, which starts the servers and
// runs the phases in order; the phases are in soak_phases.go, the workers'
// load mix in soak_load.go, and the report in soak_report.go.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"nielsgpt/internal/harness"
)

// SoakOptions configure a soak run; a zero field takes the default noted.
type SoakOptions struct {
	Exe           string        // the nielsgpt binary (required)
	Model         string        // a .gguf to serve; "" writes a deployed-size model with random weights
	Duration      time.Duration // the main phase; default 3m
	Streams       int           // concurrent client workers; default 64
	MaxConcurrent int           // the server's MAX_CONCURRENT; default Streams
	CapExtra      int           // streams beyond the cap in phase 4; default 8
	RateBurst     int           // RATE_LIMIT_BURST of phase 5; default 5
	Threads       int           // THREADS for the server; 0 = the server's default
	SampleEvery   time.Duration // RSS and goroutine sampling; default 2s
	Seed          uint64        // the workers' random choices
	Progress      io.Writer     // one line per phase; nil for silence
}

func (o SoakOptions) withDefaults() SoakOptions {
	if o.Duration <= 0 {
		o.Duration = 3 * time.Minute
	}
	if o.Streams <= 0 {
		o.Streams = 64
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = o.Streams
	}
	if o.CapExtra <= 0 {
		o.CapExtra = 8
	}
	if o.RateBurst <= 0 {
		o.RateBurst = 5
	}
	if o.SampleEvery <= 0 {
		o.SampleEvery = 2 * time.Second
	}
	return o
}

// mainServerEnv configures the server of phases 1 to 4: the concurrency cap
// under test and a rate limit no worker reaches.
func (o SoakOptions) mainServerEnv() []string {
	env := []string{
		fmt.Sprintf("MAX_CONCURRENT=%d", o.MaxConcurrent),
		fmt.Sprintf("RATE_LIMIT_PER_MIN=%d", soakRatePerMin),
		fmt.Sprintf("RATE_LIMIT_BURST=%d", soakRateBurst),
	}
	if o.Threads > 0 {
		return append(env, fmt.Sprintf("THREADS=%d", o.Threads))
	}
	return append(env, "THREADS=0") // the server's own default, not the tests' single thread
}

// Main-phase rate limit: per client, generous enough that no worker
// reaches it (a worker makes at most a few requests a second), so any 429
// there means clients were not told apart.
const (
	soakRatePerMin = 600
	soakRateBurst  = 20
)

// soakStartTimeout bounds each server's start, model load included: a
// deployed-size model loads in seconds; the rest is room for a busy machine.
const soakStartTimeout = 150 * time.Second

// soakRun is the state of one run.
type soakRun struct {
	o      SoakOptions
	report *SoakReport
	// layers and heads of the served model bound the trace layer and head
	// the workers ask for.
	layers, heads int
	// kvPool is the server's KV pool (KV_CACHE_MB's default for its
	// MAX_CONCURRENT), which by design stays resident once used.
	kvPool int64
	logf   func(format string, args ...any)

	mu         sync.Mutex
	outcomes   map[string]int
	requests   map[string]int
	unexpected []string
	fivexx     atomic.Int64
	limited    atomic.Int64
	busy       atomic.Int64
	tokens     atomic.Int64
}

// RunSoak runs every phase and returns the report. The error is for a run
// that could not be carried out (the server would not start); failed checks
// are in the report.
func RunSoak(ctx context.Context, o SoakOptions) (*SoakReport, error) {
	o = o.withDefaults()
	if o.Exe == "" {
		return nil, errors.New("soak: no server executable")
	}
	r := &soakRun{o: o, outcomes: map[string]int{}, requests: map[string]int{}}
	r.report = &SoakReport{Options: o, Started: time.Now(), Host: hostDescription()}
	r.report.LoadAvg[0] = loadAvg()
	r.logf = func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "soak: "+format+"\n", args...)
		}
	}

	model, remove, err := harness.ModelToServe(o.Model)
	if err != nil {
		return nil, err
	}
	defer remove()
	cfg, err := harness.ModelConfigOf(model)
	if err != nil {
		return nil, err
	}
	r.layers, r.heads = cfg.Layers, cfg.Heads
	// A full window of keys and values (positions in blocks of 32, F32) for
	// each slot: docs/API.md §11, KV_CACHE_MB.
	r.kvPool = int64(o.MaxConcurrent) * int64((cfg.Context+31)/32*32) * 2 * int64(cfg.Layers) * int64(cfg.Embd) * 4
	s, err := harness.StartReady(ctx, harness.Spec{Exe: o.Exe, Model: model, Env: o.mainServerEnv()}, soakStartTimeout)
	if err != nil {
		return nil, err
	}
	defer s.Stop(30 * time.Second)
	r.logf("server pid %d on %s (MAX_CONCURRENT=%d, %d workers, %s)", s.PID(), s.Addr, o.MaxConcurrent, o.Streams, o.Duration)

	if err := r.warmUp(ctx, s); err != nil {
		return nil, err
	}
	r.mainPhase(ctx, s)
	r.settle(s)
	r.capPhase(ctx, s)
	r.stopServer(s, "main server")

	limits, err := harness.StartReady(ctx, harness.Spec{Exe: o.Exe, Model: model, Env: []string{
		fmt.Sprintf("RATE_LIMIT_BURST=%d", o.RateBurst), "RATE_LIMIT_PER_MIN=1", "THREADS=1",
	}}, soakStartTimeout)
	if err != nil {
		return nil, err
	}
	defer limits.Stop(30 * time.Second)
	r.ratePhase(ctx, limits)
	r.stopServer(limits, "rate-limit server")

	r.report.LoadAvg[1] = loadAvg()
	return r.report, nil
}
