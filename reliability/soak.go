//go:build linux

package reliability

// The soak (issue 6 item 5): the real server under many concurrent streams
// for minutes, with clients that misbehave the ways real ones do (hang up
// after a few tokens, read slowly, send garbage), and then the questions
// that only time answers: did anything fail with a 5xx, did goroutines or
// memory pile up, and are the concurrency and rate caps still exact?
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
// free (admission below), so any 503 in the main phase is a server fault,
// not a race between a client hanging up and its slot being given back.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"nielsgpt/bench"
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

// Main-phase rate limit: per client, generous enough that no worker
// reaches it (a worker makes at most a few requests a second), so any 429
// there means clients were not told apart.
const (
	soakRatePerMin = 600
	soakRateBurst  = 20
)

// Sample is one reading of the server during the main phase.
type Sample struct {
	At          time.Duration // since the main phase started
	RSS         int64
	GoHeap      float64 // go_memstats_heap_inuse_bytes: tells Go's share of RSS from C's (ggml, malloc)
	Goroutines  float64
	Generations float64 // slots in use
}

// Check is one pass/fail question the soak answers.
type Check struct {
	Name   string
	OK     bool
	Detail string
}

// SoakReport is what a soak run found.
type SoakReport struct {
	Options  SoakOptions
	Started  time.Time
	Host     string
	LoadAvg  [2]float64 // 1-minute load average at the start and the end
	Requests map[string]int
	Outcomes map[string]int // by "kind status/final"
	Tokens   int64          // token events received in the main phase
	Seconds  float64        // main phase, measured
	// Unexpected lists the first few distinct surprises.
	Unexpected []string

	// Admissions of stream and full_attn requests, and their waits.
	Admitted                          int
	AdmitMean, AdmitMax               time.Duration
	GoroutinesBefore, GoroutinesAfter float64
	// IdleRSSBefore and IdleRSSAfter are the server's RSS with nothing in
	// flight, after the warm-up and after the main phase has drained: with
	// no live streams, what is left over is what the load leaked or the
	// allocators kept.
	IdleRSSBefore, IdleRSSAfter int64
	Samples                     []Sample
	WarmUp                      time.Duration
	PeakRSS                     int64 // VmHWM at the end of the main phase

	Checks []Check
}

// OK reports whether every check passed.
func (r *SoakReport) OK() bool {
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return len(r.Checks) > 0
}

func (r *SoakReport) check(name string, ok bool, format string, args ...any) {
	r.Checks = append(r.Checks, Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
}

// soakRun is the state of one run.
type soakRun struct {
	o      SoakOptions
	report *SoakReport
	// layers and heads of the served model bound the trace layer and head
	// the workers ask for.
	layers, heads int
	logf          func(format string, args ...any)

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

	model := o.Model
	if model == "" {
		dir, err := os.MkdirTemp("", "nielsgpt-soak-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		if model, err = bench.WriteSyntheticModel(dir, bench.Deployed, 1); err != nil {
			return nil, err
		}
	}
	cfg, err := bench.ModelConfigOf(model)
	if err != nil {
		return nil, err
	}
	r.layers, r.heads = cfg.Layers, cfg.Heads
	env := []string{
		fmt.Sprintf("MAX_CONCURRENT=%d", o.MaxConcurrent),
		fmt.Sprintf("RATE_LIMIT_PER_MIN=%d", soakRatePerMin),
		fmt.Sprintf("RATE_LIMIT_BURST=%d", soakRateBurst),
	}
	if o.Threads > 0 {
		env = append(env, fmt.Sprintf("THREADS=%d", o.Threads))
	} else {
		env = append(env, "THREADS=0") // the server's own default, not the tests' single thread
	}
	s, err := startReady(ctx, ServerSpec{Exe: o.Exe, Model: model, Env: env})
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

	limits, err := startReady(ctx, ServerSpec{Exe: o.Exe, Model: model, Env: []string{
		fmt.Sprintf("RATE_LIMIT_BURST=%d", o.RateBurst), "RATE_LIMIT_PER_MIN=1", "THREADS=1",
	}})
	if err != nil {
		return nil, err
	}
	defer limits.Stop(30 * time.Second)
	r.ratePhase(ctx, limits)
	r.stopServer(limits, "rate-limit server")

	r.report.LoadAvg[1] = loadAvg()
	return r.report, nil
}

func startReady(ctx context.Context, spec ServerSpec) (*Server, error) {
	s, err := Start(ctx, spec, 30*time.Second)
	if err != nil {
		return nil, err
	}
	if err := s.WaitReady(2 * time.Minute); err != nil {
		s.Kill()
		return nil, err
	}
	return s, nil
}

// warmUp runs one of each request kind, so the baselines include what the
// server starts once and keeps (engine scheduler, pools), then records the
// goroutine baseline once the count has settled.
func (r *soakRun) warmUp(ctx context.Context, s *Server) error {
	client := ClientFrom(LoopbackIP(9000))
	if e := PostStream(ctx, client, s.URL+"/chat/stream", ChatBody("warm up", 8, 0, 1), StreamOptions{}); e.Final != "done" {
		return fmt.Errorf("warm-up stream failed: %+v", e)
	}
	if status, code, _, err := Post(ctx, client, s.URL+"/inspect/full_attn", fullAttnBody("warm up", 0, 0, 2), nil); err != nil || status != http.StatusOK {
		return fmt.Errorf("warm-up full_attn failed: %d %s %v", status, code, err)
	}
	g, err := settledGoroutines(s, 30*time.Second)
	if err != nil {
		return err
	}
	r.report.GoroutinesBefore = g
	if r.report.IdleRSSBefore, _, err = Memory(s.PID()); err != nil {
		return err
	}
	r.logf("warm-up done; %v goroutines and %.1f MiB RSS at rest", g, mib(r.report.IdleRSSBefore))
	return nil
}

// settledGoroutines waits for three equal goroutine counts in a row.
func settledGoroutines(s *Server, timeout time.Duration) (float64, error) {
	last, same := -1.0, 0
	deadline := time.Now().Add(timeout)
	for same < 3 {
		if time.Now().After(deadline) {
			return last, fmt.Errorf("the goroutine count did not settle within %s (last %v)", timeout, last)
		}
		m, err := Scrape(s.URL)
		if err != nil {
			return 0, err
		}
		if g := m.Get("go_goroutines"); g == last {
			same++
		} else {
			last, same = g, 1
		}
		time.Sleep(200 * time.Millisecond)
	}
	return last, nil
}

// admission keeps the driver's demand within the server's free slots: a
// stream may start only while the slots in use (from /metrics) plus the
// requests sent but not yet answered stay under the cap. One waiter polls
// at a time, so two workers cannot both take the last slot.
type admission struct {
	url   string
	limit int

	gate    sync.Mutex // one admission decision at a time
	mu      sync.Mutex
	pending int

	// How long requests waited to be admitted: a driver that cannot keep
	// the slots busy would measure its own bottleneck, not the server's.
	admitted int
	waited   time.Duration
	maxWait  time.Duration
}

func (a *admission) enter(ctx context.Context) error {
	start := time.Now()
	a.gate.Lock()
	defer a.gate.Unlock()
	for {
		m, err := Scrape(a.url)
		if err != nil {
			return err
		}
		a.mu.Lock()
		free := int(m.Get("nielsgpt_active_generations"))+a.pending < a.limit
		if free {
			a.pending++
			wait := time.Since(start)
			a.admitted++
			a.waited += wait
			a.maxWait = max(a.maxWait, wait)
		}
		a.mu.Unlock()
		if free {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// answered is called once the server has answered (it has taken its slot
// and the gauge shows it, or it refused).
func (a *admission) answered() {
	a.mu.Lock()
	a.pending--
	a.mu.Unlock()
}

// mainPhase runs the workers for Duration while sampling the server.
func (r *soakRun) mainPhase(ctx context.Context, s *Server) {
	o := r.o
	r.logf("main phase: %d workers for %s", o.Streams, o.Duration)
	adm := &admission{url: s.URL, limit: o.MaxConcurrent}
	start := time.Now()
	stopAt := start.Add(o.Duration)
	// Whatever is still running at the end is cut there: one last burst of
	// disconnects for the server to absorb, and a phase that lasts what it
	// says (a stream over a long transcript re-reads its whole window for
	// every token and could otherwise run on for minutes).
	workCtx, cancelWork := context.WithDeadline(ctx, stopAt)
	defer cancelWork()

	samplerDone := make(chan struct{})
	stopSampler := make(chan struct{})
	go func() {
		defer close(samplerDone)
		tick := time.NewTicker(o.SampleEvery)
		defer tick.Stop()
		for {
			if rss, _, err := Memory(s.PID()); err == nil {
				smp := Sample{At: time.Since(start), RSS: rss}
				if m, err := Scrape(s.URL); err == nil {
					smp.Goroutines = m.Get("go_goroutines")
					smp.GoHeap = m.Get("go_memstats_heap_inuse_bytes")
					smp.Generations = m.Get("nielsgpt_active_generations")
				}
				r.mu.Lock()
				r.report.Samples = append(r.report.Samples, smp)
				r.mu.Unlock()
			}
			select {
			case <-stopSampler:
				return
			case <-tick.C:
			}
		}
	}()

	var wg sync.WaitGroup
	for w := range o.Streams {
		wg.Go(func() { r.worker(workCtx, s, adm, w, stopAt) })
	}
	wg.Wait()
	r.report.Seconds = time.Since(start).Seconds()
	close(stopSampler)
	<-samplerDone
	if _, peak, err := Memory(s.PID()); err == nil {
		r.report.PeakRSS = peak
	}

	r.report.Admitted = adm.admitted
	if adm.admitted > 0 {
		r.report.AdmitMean = adm.waited / time.Duration(adm.admitted)
	}
	r.report.AdmitMax = adm.maxWait
	r.report.Requests = r.requests
	r.report.Outcomes = r.outcomes
	r.report.Unexpected = r.unexpected
	r.report.Tokens = r.tokens.Load()
	total := 0
	for _, n := range r.requests {
		total += n
	}
	r.logf("main phase done: %d requests, %d tokens in %.0fs", total, r.report.Tokens, r.report.Seconds)

	r.report.check("no 5xx", r.fivexx.Load() == 0, "%d responses or stream errors with a 5xx status or engine_error", r.fivexx.Load())
	r.report.check("no busy within the cap", r.busy.Load() == 0, "%d requests got 503 busy while the driver kept within MAX_CONCURRENT", r.busy.Load())
	r.report.check("no 429 within the rate limit", r.limited.Load() == 0, "%d requests got 429 although each client stayed under %d/min", r.limited.Load(), soakRatePerMin)
	r.report.check("every answer as expected", len(r.unexpected) == 0, "%d distinct surprises", len(r.unexpected))
	r.report.check("load applied", total >= o.Streams && r.report.Tokens > 0, "%d requests, %d tokens", total, r.report.Tokens)
	r.checkRSS()
}

// soakKinds are the request kinds a worker chooses from, with weights.
var soakKinds = []struct {
	name   string
	weight int
}{
	{"stream", 40}, // read to the end
	{"cancel", 20}, // hang up after a few tokens
	{"slow", 15},   // read slowly, to the end
	{"full_attn", 10},
	{"bad", 15}, // malformed or out-of-range
}

// badRequest is a hostile body and the refusal it must get.
type badRequest struct {
	name, path, body, contentType string
	status                        int
	code                          string
}

func soakBadRequests() []badRequest {
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	huge := ChatBody(strings.Repeat("x", 16<<10), 4, 0, 1) // formatted > MAX_PROMPT_BYTES
	return []badRequest{
		{"truncated json", "/chat/stream", `{"messages":`, "", 422, "invalid"},
		{"unknown role", "/chat/stream", `{"messages":[{"role":"root","content":"hi"}],"trace_layer":0}`, "", 422, "invalid"},
		{"huge max_new_tokens", "/chat/stream", `{` + msgs + `,"trace_layer":0,"max_new_tokens":1000000000000}`, "", 422, "invalid"},
		{"top_k 0", "/chat/stream", `{` + msgs + `,"trace_layer":0,"top_k":0}`, "", 422, "invalid"},
		{"layer out of range", "/chat/stream", `{` + msgs + `,"trace_layer":99}`, "", 422, "invalid"},
		{"NaN", "/chat/stream", `{` + msgs + `,"trace_layer":0,"temperature":NaN}`, "", 422, "invalid"},
		{"invalid UTF-8", "/chat/stream", "{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}],\"trace_layer\":0}", "", 422, "invalid"},
		{"empty messages", "/inspect/full_attn", `{"messages":[],"trace_layer":0,"head":0}`, "", 422, "invalid"},
		{"head out of range", "/inspect/full_attn", `{` + msgs + `,"trace_layer":0,"head":-1}`, "", 422, "invalid"},
		{"deep nesting", "/chat/stream", `{"messages":` + strings.Repeat("[", 3000) + strings.Repeat("]", 3000) + `}`, "", 422, "invalid"},
		{"text/plain", "/chat/stream", `{` + msgs + `,"trace_layer":0}`, "text/plain", 422, "invalid"},
		{"prompt too large", "/chat/stream", huge, "", 413, "prompt_too_large"},
	}
}

func fullAttnBody(content string, layer, head, maxNew int) string {
	return fmt.Sprintf(`{"messages":[{"role":"user","content":%q}],"trace_layer":%d,"head":%d,"max_new_tokens":%d}`, content, layer, head, maxNew)
}

// worker is one client: its own address, its own random choices.
func (r *soakRun) worker(ctx context.Context, s *Server, adm *admission, w int, stopAt time.Time) {
	rng := rand.New(rand.NewPCG(r.o.Seed, uint64(w)))
	client := ClientFrom(LoopbackIP(w))
	bad := soakBadRequests()
	totalWeight := 0
	for _, k := range soakKinds {
		totalWeight += k.weight
	}
	layers, heads := r.layers, r.heads
	for n := 0; time.Now().Before(stopAt) && ctx.Err() == nil; n++ {
		pick, kind := rng.IntN(totalWeight), ""
		for _, k := range soakKinds {
			if pick < k.weight {
				kind = k.name
				break
			}
			pick -= k.weight
		}
		content := fmt.Sprintf("worker %d request %d: what are you working on?", w, n)
		long := rng.IntN(10) == 0
		if long {
			// A long transcript: prefill in chunks and a window re-cut
			// every token once past T.
			content += strings.Repeat(" tell me more about attention.", 60+rng.IntN(400))
		}
		seed := rng.Int64()
		switch kind {
		case "bad":
			b := bad[rng.IntN(len(bad))]
			hdr := http.Header{}
			if b.contentType != "" {
				hdr.Set("Content-Type", b.contentType)
			}
			status, code, _, err := Post(ctx, client, s.URL+b.path, b.body, hdr)
			if endOfPhase(ctx, err) {
				r.recordCut("bad")
				return
			}
			r.record("bad", status, code, err, status == b.status && code == b.code, "bad request "+b.name)
		case "full_attn":
			if adm.enter(ctx) != nil {
				return
			}
			status, code, _, err := Post(ctx, client, s.URL+"/inspect/full_attn", fullAttnBody(content, rng.IntN(layers), rng.IntN(heads), rng.IntN(9)), nil)
			adm.answered()
			if endOfPhase(ctx, err) {
				r.recordCut("full_attn")
				return
			}
			r.record("full_attn", status, code, err, status == http.StatusOK, "full_attn")
		default:
			opts := StreamOptions{}
			maxNew := 16 + rng.IntN(81)
			switch kind {
			case "cancel":
				opts.CancelAfter = 1 + rng.IntN(30)
				maxNew = 256
			case "slow":
				opts.EventDelay = time.Duration(20+rng.IntN(41)) * time.Millisecond
				maxNew = 8 + rng.IntN(17)
			}
			if long {
				// Past T every token re-reads the whole window, so such a
				// stream costs T times as much per token. Left long, they
				// would pile up among the live streams over minutes and the
				// load (and with it the KV-cache memory in use) would keep
				// shifting; kept short, the mix is steady after the warm-up
				// and the RSS trend means something.
				maxNew = min(maxNew, 24)
				opts.CancelAfter = min(opts.CancelAfter, 12)
			}
			if adm.enter(ctx) != nil {
				return
			}
			opts.OnResponse = sync.OnceFunc(adm.answered)
			e := PostStream(ctx, client, s.URL+"/chat/stream", ChatBody(content, maxNew, rng.IntN(layers), seed), opts)
			opts.OnResponse() // in case the request failed before any answer
			r.tokens.Add(int64(e.Tokens))
			if endOfPhase(ctx, e.Err) {
				r.recordCut(kind)
				return
			}
			r.recordStream(kind, e, opts.CancelAfter)
		}
	}
}

// endOfPhase tells a request the driver cut at the end of the main phase
// from one that failed on its own.
func endOfPhase(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() != nil
}

// recordCut counts a request still running when the phase ended.
func (r *soakRun) recordCut(kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests[kind]++
	r.outcomes[kind+" cut at the end of the phase"]++
}

// record counts one non-stream answer.
func (r *soakRun) record(kind string, status int, code string, err error, ok bool, what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests[kind]++
	key := fmt.Sprintf("%s %d", kind, status)
	if code != "" {
		key += " " + code
	}
	if err != nil {
		key = kind + " transport error"
	}
	r.outcomes[key]++
	r.classify(status, code)
	if err != nil || !ok {
		r.surprise(fmt.Sprintf("%s: status %d code %q err %v", what, status, code, err))
	}
}

// recordStream counts one stream by how it ended.
func (r *soakRun) recordStream(kind string, e StreamEnd, cancelAfter int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests[kind]++
	final := e.Final
	if final == "" {
		final = "no final event"
	}
	key := fmt.Sprintf("%s %d %s", kind, e.Status, final)
	if e.Status != http.StatusOK {
		key = fmt.Sprintf("%s %d %s", kind, e.Status, e.Code)
	}
	r.outcomes[key]++
	r.classify(e.Status, e.Code)
	if strings.HasPrefix(e.Final, "error:") {
		r.fivexx.Add(1) // an error event is a 5xx that came too late for the status line
	}
	ok := e.Status == http.StatusOK && e.Err == nil
	switch {
	case !ok:
	case kind == "cancel":
		// Hung up as planned, or the stream was shorter than the patience.
		ok = (e.Final == "" && e.Tokens == cancelAfter) || (e.Final == "done" && e.Clean)
	default:
		ok = e.Final == "done" && e.Clean
	}
	if !ok {
		r.surprise(fmt.Sprintf("%s stream: status %d code %q final %q after %d tokens, clean %v, err %v", kind, e.Status, e.Code, e.Final, e.Tokens, e.Clean, e.Err))
	}
}

// classify counts the statuses the checks are about. Called with r.mu held.
func (r *soakRun) classify(status int, code string) {
	switch {
	case status == http.StatusServiceUnavailable && code == "busy":
		r.busy.Add(1)
	case status >= 500:
		r.fivexx.Add(1)
	case status == http.StatusTooManyRequests:
		r.limited.Add(1)
	}
}

// surprise keeps the first few distinct unexpected outcomes. r.mu held.
func (r *soakRun) surprise(s string) {
	if len(r.unexpected) < 20 && !slices.Contains(r.unexpected, s) {
		r.unexpected = append(r.unexpected, s)
	}
}

// checkRSS asks whether memory was flat after the warm-up: the mean of the
// last third of the samples against the mean of the first third.
func (r *soakRun) checkRSS() {
	// Under full load the live memory (KV caches as the mix of short and
	// long streams settles, allocator arenas, ggml's compute buffer at its
	// largest step) takes about a minute to level off on two cores.
	warm := min(time.Minute, r.o.Duration/3)
	r.report.WarmUp = warm
	var after []int64
	for _, s := range r.report.Samples {
		// Only while the full load lasts: after Duration the workers finish
		// their last streams and the load (and the heap) runs down.
		if s.At >= warm && s.At <= r.o.Duration {
			after = append(after, s.RSS)
		}
	}
	if len(after) < 3 {
		r.report.check("RSS flat after warm-up", false, "only %d samples after the warm-up", len(after))
		return
	}
	third := len(after) / 3
	first, last := meanInt(after[:third]), meanInt(after[len(after)-third:])
	// 10% and 8 MiB of slack: the garbage collector's heap target moves with
	// load, and a third of a short run is a handful of samples.
	limit := first*1.10 + 8<<20
	r.report.check("RSS flat after warm-up", last <= limit,
		"mean of the first third %.0f MiB, of the last third %.0f MiB (limit %.0f MiB)", first/(1<<20), last/(1<<20), limit/(1<<20))
}

func meanInt(xs []int64) float64 {
	sum := 0.0
	for _, x := range xs {
		sum += float64(x)
	}
	return sum / float64(len(xs))
}

// settle waits for the server to be idle again and compares goroutines.
func (r *soakRun) settle(s *Server) {
	var m Metrics
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		m, err = Scrape(s.URL)
		if err == nil && m.Get("nielsgpt_active_streams") == 0 && m.Get("nielsgpt_active_generations") == 0 {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.report.check("streams and slots back to 0", m.Get("nielsgpt_active_streams") == 0 && m.Get("nielsgpt_active_generations") == 0,
		"active streams %v, active generations %v", m.Get("nielsgpt_active_streams"), m.Get("nielsgpt_active_generations"))

	after := math.Inf(1)
	deadline = time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m, err := Scrape(s.URL); err == nil {
			after = m.Get("go_goroutines")
			if after <= r.report.GoroutinesBefore {
				break
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.report.GoroutinesAfter = after
	r.report.check("goroutines back to baseline", after <= r.report.GoroutinesBefore, "%v before, %v after", r.report.GoroutinesBefore, after)
	r.report.IdleRSSAfter, _, _ = Memory(s.PID())
	// The allocators keep some of what the peak needed (ggml's compute
	// buffer stays at its largest step, glibc keeps freed small chunks), but
	// nothing in proportion to the thousands of requests served.
	r.report.check("idle RSS back near its start", r.report.IdleRSSAfter <= r.report.IdleRSSBefore+32<<20,
		"%.1f MiB at rest after the warm-up, %.1f MiB at rest after the main phase (limit +32 MiB)", mib(r.report.IdleRSSBefore), mib(r.report.IdleRSSAfter))
	r.logf("settled: goroutines %v before, %v after", r.report.GoroutinesBefore, after)
}

// capPhase starts MaxConcurrent+CapExtra long streams at once, from
// distinct clients: exactly CapExtra must be refused with 503 busy.
func (r *soakRun) capPhase(ctx context.Context, s *Server) {
	n := r.o.MaxConcurrent + r.o.CapExtra
	r.logf("concurrency cap: %d streams at once against MAX_CONCURRENT=%d", n, r.o.MaxConcurrent)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var (
		ready, answered sync.WaitGroup
		release         = make(chan struct{})
		mu              sync.Mutex
		statuses        = map[string]int{}
		done            sync.WaitGroup
	)
	ready.Add(n)
	answered.Add(n)
	start := make(chan struct{})
	for i := range n {
		done.Go(func() {
			client := ClientFrom(LoopbackIP(20000 + i))
			sctx, scancel := context.WithCancel(ctx)
			defer scancel()
			go func() { <-release; scancel() }()
			ready.Done()
			<-start
			once := sync.OnceFunc(answered.Done)
			e := PostStream(sctx, client, s.URL+"/chat/stream", ChatBody(fmt.Sprintf("cap %d", i), 1024, 0, int64(i)), StreamOptions{OnResponse: once})
			once()
			key := fmt.Sprint(e.Status)
			if e.Status != http.StatusOK {
				key += " " + e.Code
			}
			if e.Status == 0 {
				key = "transport error: " + fmt.Sprint(e.Err)
			}
			mu.Lock()
			statuses[key]++
			mu.Unlock()
		})
	}
	ready.Wait()
	close(start)
	answered.Wait() // every request has its answer: the admitted ones hold their slots
	m, _ := Scrape(s.URL)
	close(release)
	done.Wait()
	busy := statuses["503 busy"]
	ok := statuses["200"] == r.o.MaxConcurrent && busy == r.o.CapExtra && len(statuses) == 2
	r.report.check("concurrency cap exact", ok, "%d streams at once: %v (slots in use while held: %v)", n, statuses, m.Get("nielsgpt_active_generations"))
	r.logf("concurrency cap: %v", statuses)
}

// ratePhase sends RateBurst+k requests from one client, alternating the two
// endpoints and forging proxy headers, to a server whose bucket refills once
// a minute: exactly the first RateBurst pass. A second client then gets its
// own full burst.
func (r *soakRun) ratePhase(ctx context.Context, s *Server) {
	burst, extra := r.o.RateBurst, r.o.RateBurst+3
	r.logf("rate limit: %d requests from one client, RATE_LIMIT_BURST=%d", burst+extra, burst)
	var seq []string
	for i := range burst + extra {
		url, body := s.URL+"/chat/stream", ChatBody("rate", 1, 0, int64(i))
		if i%2 == 1 {
			url, body = s.URL+"/inspect/full_attn", fullAttnBody("rate", 0, 0, 0)
		}
		forged := http.Header{"X-Forwarded-For": {fmt.Sprintf("198.51.100.%d", i+1)}, "X-Real-Ip": {fmt.Sprintf("203.0.113.%d", i+1)}}
		status, code, _, err := Post(ctx, ClientFrom(LoopbackIP(30000)), url, body, forged)
		if err != nil {
			seq = append(seq, "error")
			continue
		}
		seq = append(seq, strings.TrimSpace(fmt.Sprintf("%d %s", status, code)))
	}
	want := slices.Repeat([]string{"200"}, burst)
	want = append(want, slices.Repeat([]string{"429 rate_limited"}, extra)...)
	r.report.check("rate limit exact", slices.Equal(seq, want), "one client, burst %d, %d requests: %s", burst, len(seq), summarizeSeq(seq))

	other := 0
	for range burst {
		if status, _, _, err := Post(ctx, ClientFrom(LoopbackIP(30001)), s.URL+"/inspect/full_attn", fullAttnBody("rate", 0, 0, 0), nil); err == nil && status == http.StatusOK {
			other++
		}
	}
	r.report.check("rate limit per client", other == burst, "a second client got %d of its %d", other, burst)
}

// summarizeSeq writes runs of equal answers as "N× answer".
func summarizeSeq(seq []string) string {
	var parts []string
	for i := 0; i < len(seq); {
		j := i
		for j < len(seq) && seq[j] == seq[i] {
			j++
		}
		parts = append(parts, fmt.Sprintf("%d× %s", j-i, seq[i]))
		i = j
	}
	return strings.Join(parts, ", then ")
}

// stopServer sends SIGTERM and checks for a clean exit.
func (r *soakRun) stopServer(s *Server, name string) {
	if err := s.Signal(syscall.SIGTERM); err != nil {
		r.report.check(name+" exits 0 on SIGTERM", false, "%v", err)
		return
	}
	code, err := s.WaitExit(45 * time.Second)
	r.report.check(name+" exits 0 on SIGTERM", err == nil && code == 0, "exit code %d%s", code, errString(err))
	out := s.Output()
	for _, bad := range []string{"panic", "fatal error", "SIGABRT", "GGML_ASSERT", `"level":"ERROR"`} {
		if strings.Contains(out, bad) {
			r.report.check(name+" log clean", false, "its output contains %q", bad)
			return
		}
	}
	r.report.check(name+" log clean", true, "no panic, abort or ERROR line")
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return " (" + err.Error() + ")"
}

// WriteText prints the report for people.
func (rep *SoakReport) WriteText(w io.Writer) error {
	o := rep.Options
	var b strings.Builder
	fmt.Fprintf(&b, "nielsgpt soak, %s\n", rep.Started.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "host: %s; load average %.2f at the start, %.2f at the end\n", rep.Host, rep.LoadAvg[0], rep.LoadAvg[1])
	fmt.Fprintf(&b, "main phase: %d workers, MAX_CONCURRENT=%d, %s (measured %.1fs), per-client rate limit %d/min burst %d\n",
		o.Streams, o.MaxConcurrent, o.Duration, rep.Seconds, soakRatePerMin, soakRateBurst)

	total := 0
	kinds := make([]string, 0, len(rep.Requests))
	for k, n := range rep.Requests {
		kinds = append(kinds, k)
		total += n
	}
	sort.Strings(kinds)
	fmt.Fprintf(&b, "requests: %d (", total)
	for i, k := range kinds {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, rep.Requests[k])
	}
	fmt.Fprintf(&b, "); %d tokens streamed, %.1f tokens/s\n", rep.Tokens, float64(rep.Tokens)/math.Max(rep.Seconds, 1e-9))
	outcomes := make([]string, 0, len(rep.Outcomes))
	for k := range rep.Outcomes {
		outcomes = append(outcomes, k)
	}
	sort.Strings(outcomes)
	b.WriteString("outcomes:\n")
	for _, k := range outcomes {
		fmt.Fprintf(&b, "  %6d  %s\n", rep.Outcomes[k], k)
	}

	var window []Sample // after the warm-up, while the full load lasted
	for _, s := range rep.Samples {
		if s.At >= rep.WarmUp && s.At <= o.Duration {
			window = append(window, s)
		}
	}
	if len(window) > 0 {
		minRSS, maxRSS := int64(math.MaxInt64), int64(0)
		var gens, gors []float64
		for _, s := range window {
			minRSS, maxRSS = min(minRSS, s.RSS), max(maxRSS, s.RSS)
			gens = append(gens, s.Generations)
			gors = append(gors, s.Goroutines)
		}
		fmt.Fprintf(&b, "RSS from %s to %s (%d samples every %s): min %.1f MiB, max %.1f MiB, last %.1f MiB; after the run-down %.1f MiB; peak (VmHWM) %.1f MiB\n",
			rep.WarmUp.Round(time.Second), o.Duration, len(window), o.SampleEvery, mib(minRSS), mib(maxRSS), mib(window[len(window)-1].RSS),
			mib(rep.Samples[len(rep.Samples)-1].RSS), mib(rep.PeakRSS))
		fmt.Fprintf(&b, "slots in use over the same samples: median %.0f, max %.0f of %d; goroutines median %.0f, max %.0f\n",
			bench.Percentile(gens, 50), slices.Max(gens), o.MaxConcurrent, bench.Percentile(gors, 50), slices.Max(gors))
	}
	if len(rep.Samples) > 0 {
		// The trajectory, so "flat" can be seen rather than taken on trust.
		step := max(o.Duration/6, o.SampleEvery)
		var rss, heap []string
		for from := time.Duration(0); from < o.Duration; from += step {
			var r, h []int64
			for _, s := range rep.Samples {
				if s.At >= from && s.At < from+step {
					r, h = append(r, s.RSS), append(h, int64(s.GoHeap))
				}
			}
			if len(r) > 0 {
				rss = append(rss, fmt.Sprintf("%.0f", meanInt(r)/(1<<20)))
				heap = append(heap, fmt.Sprintf("%.0f", meanInt(h)/(1<<20)))
			}
		}
		fmt.Fprintf(&b, "mean RSS per %s of the main phase: %s MiB (Go heap in use: %s MiB)\n", step, strings.Join(rss, ", "), strings.Join(heap, ", "))
	}
	fmt.Fprintf(&b, "admissions: %d, waiting %.0f ms on average, %.0f ms at most\n",
		rep.Admitted, float64(rep.AdmitMean)/float64(time.Millisecond), float64(rep.AdmitMax)/float64(time.Millisecond))
	fmt.Fprintf(&b, "goroutines: %v before, %v after\n", rep.GoroutinesBefore, rep.GoroutinesAfter)
	fmt.Fprintf(&b, "idle RSS: %.1f MiB after the warm-up, %.1f MiB after the main phase\n", mib(rep.IdleRSSBefore), mib(rep.IdleRSSAfter))
	if len(rep.Unexpected) > 0 {
		b.WriteString("unexpected:\n")
		for _, u := range rep.Unexpected {
			fmt.Fprintf(&b, "  %s\n", u)
		}
	}
	b.WriteString("checks:\n")
	for _, c := range rep.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "  %s %s: %s\n", mark, c.Name, c.Detail)
	}
	if rep.OK() {
		b.WriteString("result: PASS\n")
	} else {
		b.WriteString("result: FAIL\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// hostDescription names the machine the numbers come from.
func hostDescription() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%s/%s, %d CPUs (%s)", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cpu)
}

func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return math.NaN()
	}
	var l float64
	_, _ = fmt.Sscanf(string(b), "%f", &l)
	return l
}
