package bench

// Summaries of measured samples: percentiles of latencies and rates over a
// set of streams.

import (
	"slices"
	"time"

	"nielsgpt/internal/harness"
)

// Latency summarises time-to-first-token samples, in milliseconds (JSON
// readers want plain numbers, not Go duration strings).
type Latency struct {
	Samples int     `json:"samples"`
	P50ms   float64 `json:"p50_ms"`
	P95ms   float64 `json:"p95_ms"`
	MaxMs   float64 `json:"max_ms"`
	Errors  int     `json:"errors"` // requests that failed before their first token
	// Capped is true when the phase's time cap ended it before every planned
	// request ran.
	Capped bool `json:"capped,omitempty"`
}

func summariseLatency(ds []time.Duration) Latency {
	ms := make([]float64, len(ds))
	for i, d := range ds {
		ms[i] = float64(d) / float64(time.Millisecond)
	}
	if len(ms) == 0 {
		// Zeros, not NaN: encoding/json refuses NaN, and Samples == 0 already
		// tells readers (and the table) there is nothing to show.
		return Latency{}
	}
	return Latency{Samples: len(ms), P50ms: harness.Percentile(ms, 50), P95ms: harness.Percentile(ms, 95), MaxMs: slices.Max(ms)}
}

// Throughput is tokens received over a wall-clock span.
type Throughput struct {
	Concurrency int     `json:"concurrency"`
	Streams     int     `json:"streams"`   // streams started
	Completed   int     `json:"completed"` // streams that reached their `done` event
	Cut         int     `json:"cut"`       // streams cut by the phase's time cap (their tokens still count)
	Errors      int     `json:"errors"`    // streams that failed (HTTP error, `error` event, broken stream)
	Tokens      int     `json:"tokens"`    // `token` events received
	Seconds     float64 `json:"seconds"`
	TokensPerS  float64 `json:"tokens_per_s"`
}

func (t *Throughput) finish(elapsed time.Duration) {
	t.Seconds = elapsed.Seconds()
	if t.Seconds > 0 {
		t.TokensPerS = float64(t.Tokens) / t.Seconds
	}
}
