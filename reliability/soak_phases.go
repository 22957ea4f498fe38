//go:build linux

package reliability

// The soak's phases after the setup in soak.go: the warm-up and its
// baselines, the main phase under the workers' load (soak_load.go) with its
// RSS sampling, settling back to idle, the exact concurrency cap and rate
// limit, and the clean exit on SIGTERM. Each phase adds its checks to the
// report.

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"nielsgpt/internal/harness"
)

// warmUp runs one of each request kind, so the baselines include what the
// server starts once and keeps (engine scheduler, pools), then records the
// goroutine baseline once the count has settled.
func (r *soakRun) warmUp(ctx context.Context, s *harness.Server) error {
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
	if r.report.IdleRSSBefore, _, err = harness.Memory(s.PID()); err != nil {
		return err
	}
	r.logf("warm-up done; %v goroutines and %.1f MiB RSS at rest", g, mib(r.report.IdleRSSBefore))
	return nil
}

// settledGoroutines waits for three equal goroutine counts in a row.
func settledGoroutines(s *harness.Server, timeout time.Duration) (float64, error) {
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

// mainPhase runs the workers for Duration while sampling the server.
func (r *soakRun) mainPhase(ctx context.Context, s *harness.Server) {
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
		r.sample(s, start, stopSampler)
	}()

	var wg sync.WaitGroup
	for w := range o.Streams {
		wg.Go(func() { r.worker(workCtx, s, adm, w, stopAt) })
	}
	wg.Wait()
	r.report.Seconds = time.Since(start).Seconds()
	close(stopSampler)
	<-samplerDone
	if _, peak, err := harness.Memory(s.PID()); err == nil {
		r.report.PeakRSS = peak
	}

	total := r.collectMain(adm)
	r.logf("main phase done: %d requests, %d tokens in %.0fs", total, r.report.Tokens, r.report.Seconds)
	r.checkMain(total)
	r.checkRSS()
}

// sample records the server's RSS and gauges every SampleEvery until stop
// is closed.
func (r *soakRun) sample(s *harness.Server, start time.Time, stop <-chan struct{}) {
	tick := time.NewTicker(r.o.SampleEvery)
	defer tick.Stop()
	for {
		if rss, _, err := harness.Memory(s.PID()); err == nil {
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
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// collectMain copies the workers' tallies and the admission waits into the
// report once every worker has finished, and returns the requests sent.
func (r *soakRun) collectMain(adm *admission) (total int) {
	r.report.Admitted = adm.admitted
	if adm.admitted > 0 {
		r.report.AdmitMean = adm.waited / time.Duration(adm.admitted)
	}
	r.report.AdmitMax = adm.maxWait
	r.report.Requests = r.requests
	r.report.Outcomes = r.outcomes
	r.report.Unexpected = r.unexpected
	r.report.Tokens = r.tokens.Load()
	for _, n := range r.requests {
		total += n
	}
	return total
}

// checkMain asks whether every answer of the main phase was the one a
// healthy server gives, and whether the load was really applied.
func (r *soakRun) checkMain(total int) {
	r.report.check("no 5xx", r.fivexx.Load() == 0, "%d responses or stream errors with a 5xx status or engine_error", r.fivexx.Load())
	r.report.check("no busy within the cap", r.busy.Load() == 0, "%d requests got 503 busy while the driver kept within MAX_CONCURRENT", r.busy.Load())
	r.report.check("no 429 within the rate limit", r.limited.Load() == 0, "%d requests got 429 although each client stayed under %d/min", r.limited.Load(), soakRatePerMin)
	r.report.check("every answer as expected", len(r.unexpected) == 0, "%d distinct surprises", len(r.unexpected))
	r.report.check("load applied", total >= r.o.Streams && r.report.Tokens > 0, "%d requests, %d tokens", total, r.report.Tokens)
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

// settle waits for the server to be idle again and compares goroutines.
func (r *soakRun) settle(s *harness.Server) {
	var m Metrics
	harness.Poll(30*time.Second, func() bool {
		var err error
		m, err = Scrape(s.URL)
		return err == nil && m.Get("nielsgpt_active_streams") == 0 && m.Get("nielsgpt_active_generations") == 0
	})
	r.report.check("streams and slots back to 0", m.Get("nielsgpt_active_streams") == 0 && m.Get("nielsgpt_active_generations") == 0,
		"active streams %v, active generations %v", m.Get("nielsgpt_active_streams"), m.Get("nielsgpt_active_generations"))

	after := math.Inf(1)
	harness.Poll(30*time.Second, func() bool {
		if m, err := Scrape(s.URL); err == nil {
			after = m.Get("go_goroutines")
		}
		return after <= r.report.GoroutinesBefore
	})
	r.report.GoroutinesAfter = after
	r.report.check("goroutines back to baseline", after <= r.report.GoroutinesBefore, "%v before, %v after", r.report.GoroutinesBefore, after)
	r.report.IdleRSSAfter, _, _ = harness.Memory(s.PID())
	// The allocators keep some of what the peak needed (ggml's compute
	// buffer stays at its largest step, glibc keeps freed small chunks), and
	// the KV pool keeps what the most streams at once used, by design (it is
	// reused, not returned and faulted in again), but nothing in proportion
	// to the thousands of requests served.
	limit := r.report.IdleRSSBefore + r.kvPool + 32<<20
	r.report.check("idle RSS back near its start", r.report.IdleRSSAfter <= limit,
		"%.1f MiB at rest after the warm-up, %.1f MiB at rest after the main phase (limit +%.0f MiB: the KV pool's %.0f MiB and 32 MiB)",
		mib(r.report.IdleRSSBefore), mib(r.report.IdleRSSAfter), mib(limit-r.report.IdleRSSBefore), mib(r.kvPool))
	r.logf("settled: goroutines %v before, %v after", r.report.GoroutinesBefore, after)
}

// capPhase starts MaxConcurrent+CapExtra long streams at once, from
// distinct clients: exactly CapExtra must be refused with 503 busy.
func (r *soakRun) capPhase(ctx context.Context, s *harness.Server) {
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
func (r *soakRun) ratePhase(ctx context.Context, s *harness.Server) {
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
func (r *soakRun) stopServer(s *harness.Server, name string) {
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
