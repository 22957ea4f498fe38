//go:build linux

package reliability

// What a soak run found and how it is printed: the samples, the pass/fail
// checks and the report that holds them, its plain-text summary for people,
// and the small readings of the host (CPU, load average) that put the
// numbers in context.

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"nielsgpt/internal/harness"
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

// WriteText prints the report for people.
func (rep *SoakReport) WriteText(w io.Writer) error {
	o := rep.Options
	var b strings.Builder
	fmt.Fprintf(&b, "nielsgpt soak, %s\n", rep.Started.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "host: %s; load average %.2f at the start, %.2f at the end\n", rep.Host, rep.LoadAvg[0], rep.LoadAvg[1])
	fmt.Fprintf(&b, "main phase: %d workers, MAX_CONCURRENT=%d, %s (measured %.1fs), per-client rate limit %d/min burst %d\n",
		o.Streams, o.MaxConcurrent, o.Duration, rep.Seconds, soakRatePerMin, soakRateBurst)
	rep.writeRequests(&b)
	rep.writeSamples(&b)
	fmt.Fprintf(&b, "admissions: %d, waiting %.0f ms on average, %.0f ms at most\n",
		rep.Admitted, float64(rep.AdmitMean)/float64(time.Millisecond), float64(rep.AdmitMax)/float64(time.Millisecond))
	fmt.Fprintf(&b, "goroutines: %v before, %v after\n", rep.GoroutinesBefore, rep.GoroutinesAfter)
	fmt.Fprintf(&b, "idle RSS: %.1f MiB after the warm-up, %.1f MiB after the main phase\n", mib(rep.IdleRSSBefore), mib(rep.IdleRSSAfter))
	rep.writeVerdict(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeRequests writes the main phase's requests by kind, the tokens
// streamed, and how the requests ended.
func (rep *SoakReport) writeRequests(b *strings.Builder) {
	total := 0
	kinds := make([]string, 0, len(rep.Requests))
	for k, n := range rep.Requests {
		kinds = append(kinds, k)
		total += n
	}
	sort.Strings(kinds)
	fmt.Fprintf(b, "requests: %d (", total)
	for i, k := range kinds {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(b, "%s %d", k, rep.Requests[k])
	}
	fmt.Fprintf(b, "); %d tokens streamed, %.1f tokens/s\n", rep.Tokens, float64(rep.Tokens)/math.Max(rep.Seconds, 1e-9))
	outcomes := make([]string, 0, len(rep.Outcomes))
	for k := range rep.Outcomes {
		outcomes = append(outcomes, k)
	}
	sort.Strings(outcomes)
	b.WriteString("outcomes:\n")
	for _, k := range outcomes {
		fmt.Fprintf(b, "  %6d  %s\n", rep.Outcomes[k], k)
	}
}

// writeSamples summarises the samples taken while the full load lasted,
// then the RSS trajectory over the whole main phase.
func (rep *SoakReport) writeSamples(b *strings.Builder) {
	o := rep.Options
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
		fmt.Fprintf(b, "RSS from %s to %s (%d samples every %s): min %.1f MiB, max %.1f MiB, last %.1f MiB; after the run-down %.1f MiB; peak (VmHWM) %.1f MiB\n",
			rep.WarmUp.Round(time.Second), o.Duration, len(window), o.SampleEvery, mib(minRSS), mib(maxRSS), mib(window[len(window)-1].RSS),
			mib(rep.Samples[len(rep.Samples)-1].RSS), mib(rep.PeakRSS))
		fmt.Fprintf(b, "slots in use over the same samples: median %.0f, max %.0f of %d; goroutines median %.0f, max %.0f\n",
			harness.Percentile(gens, 50), slices.Max(gens), o.MaxConcurrent, harness.Percentile(gors, 50), slices.Max(gors))
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
		fmt.Fprintf(b, "mean RSS per %s of the main phase: %s MiB (Go heap in use: %s MiB)\n", step, strings.Join(rss, ", "), strings.Join(heap, ", "))
	}
}

// writeVerdict writes the surprises, every check and the overall result.
func (rep *SoakReport) writeVerdict(b *strings.Builder) {
	if len(rep.Unexpected) > 0 {
		b.WriteString("unexpected:\n")
		for _, u := range rep.Unexpected {
			fmt.Fprintf(b, "  %s\n", u)
		}
	}
	b.WriteString("checks:\n")
	for _, c := range rep.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(b, "  %s %s: %s\n", mark, c.Name, c.Detail)
	}
	if rep.OK() {
		b.WriteString("result: PASS\n")
	} else {
		b.WriteString("result: FAIL\n")
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func meanInt(xs []int64) float64 {
	sum := 0.0
	for _, x := range xs {
		sum += float64(x)
	}
	return sum / float64(len(xs))
}

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

// loadAvg is the load average, NaN where it cannot be read.
func loadAvg() float64 {
	if l, ok := harness.LoadAverage(); ok {
		return l
	}
	return math.NaN()
}
