// Package metrics holds the server's Prometheus collectors on a registry of
// its own, so that tests can create as many as they like and /metrics shows
// exactly what this program measures (plus the Go runtime and the process).
// The server calls the small methods below; nothing else needs to know about
// Prometheus types.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// Rejection reasons: the label values of nielsgpt_rejections_total. A fixed
// set keeps the label's cardinality bounded whatever clients send.
const (
	RejectRateLimited    = "rate_limited"
	RejectPromptTooLarge = "prompt_too_large"
	RejectBodyTooLarge   = "body_too_large"
	RejectBusy           = "busy"
	RejectInvalid        = "invalid"
	RejectModelLoading   = "model_loading"
	RejectUnauthorized   = "unauthorized"
)

// Rate-limit backends: the label values of nielsgpt_rate_limit_backend.
const (
	BackendLocal = "local" // this process's own buckets
	BackendRedis = "redis" // buckets shared by every replica through Redis
)

// Metrics is every collector the server updates. Create it with New; the
// zero value is not usable. All methods are safe for concurrent use.
type Metrics struct {
	registry *prometheus.Registry

	requests         *prometheus.CounterVec
	requestDuration  *prometheus.HistogramVec
	timeToFirstToken prometheus.Histogram
	interToken       prometheus.Histogram
	generatedTokens  prometheus.Counter
	promptTokens     prometheus.Counter
	activeStreams    prometheus.Gauge
	activeGenerate   prometheus.Gauge
	rejections       *prometheus.CounterVec
	modelLoad        prometheus.Gauge
	modelReady       prometheus.Gauge
	engineStep       *prometheus.HistogramVec
	engineTokens     *prometheus.CounterVec
	rateBackend      *prometheus.GaugeVec
	redisErrors      prometheus.Counter
}

// Latency buckets from 1 ms to ~33 s: token steps on a small CPU model take
// milliseconds, whole streams take seconds to tens of seconds.
var latencyBuckets = prometheus.ExponentialBuckets(0.001, 2, 16)

// New registers all collectors on a fresh registry.
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nielsgpt_http_requests_total",
			Help: "HTTP requests answered, by matched route and status code.",
		}, []string{"route", "status"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nielsgpt_http_request_duration_seconds",
			Help:    "Time from receiving a request to finishing its response (whole stream for SSE), by route.",
			Buckets: latencyBuckets,
		}, []string{"route"}),
		timeToFirstToken: newLatency("nielsgpt_time_to_first_token_seconds",
			"Time from accepting a chat request (body read and validated) to writing its first token event."),
		interToken: newLatency("nielsgpt_inter_token_latency_seconds",
			"Time between consecutive token events written to one stream."),
		generatedTokens: newCounter("nielsgpt_generated_tokens_total",
			"Tokens generated and streamed to clients."),
		promptTokens: newCounter("nielsgpt_prompt_tokens_total",
			"Prompt tokens (transcript bytes) submitted for generation."),
		activeStreams: newGauge("nielsgpt_active_streams",
			"Server-sent event streams currently open."),
		activeGenerate: newGauge("nielsgpt_active_generations",
			"Generation slots in use (streams and full-attention requests), out of MAX_CONCURRENT."),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nielsgpt_rejections_total",
			Help: "Requests refused before generating, by reason.",
		}, []string{"reason"}),
		modelLoad: newGauge("nielsgpt_model_load_seconds",
			"Time it took to obtain and load the model (download and conversion included)."),
		modelReady: newGauge("nielsgpt_model_ready",
			"1 once the model is loaded and requests can be served, else 0."),
		engineStep: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nielsgpt_engine_step_seconds",
			Help:    "Time the engine spent in one forward evaluation, by phase (e.g. prefill, decode).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"phase"}),
		engineTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nielsgpt_engine_tokens_total",
			Help: "Tokens evaluated by the engine, by phase.",
		}, []string{"phase"}),
		rateBackend: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nielsgpt_rate_limit_backend",
			Help: "Where the rate-limit buckets live now: 1 for the backend in use (redis: shared by every replica; local: this process's own), 0 for the other.",
		}, []string{"backend"}),
		redisErrors: newCounter("nielsgpt_rate_limit_redis_errors_total",
			"Calls to Redis for the rate limit that failed or timed out (requests and reconnection probes)."),
	}
	m.registry.MustRegister(
		m.requests, m.requestDuration, m.timeToFirstToken, m.interToken,
		m.generatedTokens, m.promptTokens, m.activeStreams, m.activeGenerate,
		m.rejections, m.modelLoad, m.modelReady, m.engineStep, m.engineTokens,
		m.rateBackend, m.redisErrors,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	// Pre-create the rejection series so dashboards see zeros instead of
	// missing series before the first refusal.
	for _, reason := range []string{RejectRateLimited, RejectPromptTooLarge, RejectBodyTooLarge, RejectBusy, RejectInvalid, RejectModelLoading, RejectUnauthorized} {
		m.rejections.WithLabelValues(reason)
	}
	m.SetRateLimitBackend(BackendLocal)
	return m
}

// Registry is the registry everything is registered on (for tests and for
// callers that want to add collectors of their own).
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// ObserveRequest records one finished HTTP request. route must come from a
// bounded set (the router's patterns), never the raw path.
func (m *Metrics) ObserveRequest(route string, status int, elapsed time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.requestDuration.WithLabelValues(route).Observe(elapsed.Seconds())
}

// ObserveTimeToFirstToken records the delay before a stream's first token.
func (m *Metrics) ObserveTimeToFirstToken(d time.Duration) { m.timeToFirstToken.Observe(d.Seconds()) }

// ObserveInterToken records the gap between two token events of one stream.
func (m *Metrics) ObserveInterToken(d time.Duration) { m.interToken.Observe(d.Seconds()) }

// AddGeneratedTokens counts generated tokens.
func (m *Metrics) AddGeneratedTokens(n int) { m.generatedTokens.Add(float64(n)) }

// AddPromptTokens counts prompt tokens handed to the engine.
func (m *Metrics) AddPromptTokens(n int) { m.promptTokens.Add(float64(n)) }

// StreamStarted and StreamEnded bracket one open SSE stream.
func (m *Metrics) StreamStarted() { m.activeStreams.Inc() }

// StreamEnded is StreamStarted's pair; call it exactly once per stream.
func (m *Metrics) StreamEnded() { m.activeStreams.Dec() }

// GenerationStarted and GenerationEnded bracket one held concurrency slot.
func (m *Metrics) GenerationStarted() { m.activeGenerate.Inc() }

// GenerationEnded is GenerationStarted's pair.
func (m *Metrics) GenerationEnded() { m.activeGenerate.Dec() }

// Reject counts a refused request; reason is one of the Reject* constants.
func (m *Metrics) Reject(reason string) { m.rejections.WithLabelValues(reason).Inc() }

// ModelLoaded records how long obtaining the model took and marks it ready.
func (m *Metrics) ModelLoaded(d time.Duration) {
	m.modelLoad.Set(d.Seconds())
	m.modelReady.Set(1)
}

// EngineStep records one engine evaluation; its signature matches the
// engine's Options.OnStep so it can be passed directly.
func (m *Metrics) EngineStep(phase string, seconds float64, tokens int) {
	m.engineStep.WithLabelValues(phase).Observe(seconds)
	if tokens > 0 {
		m.engineTokens.WithLabelValues(phase).Add(float64(tokens))
	}
}

// SetRateLimitBackend marks backend (BackendLocal or BackendRedis) as the
// one in use, and the other as not.
func (m *Metrics) SetRateLimitBackend(backend string) {
	for _, b := range []string{BackendLocal, BackendRedis} {
		v := 0.0
		if b == backend {
			v = 1
		}
		m.rateBackend.WithLabelValues(b).Set(v)
	}
}

// RedisError counts one failed or timed-out Redis call.
func (m *Metrics) RedisError() { m.redisErrors.Inc() }

// Snapshot values for tests and the soak script: reading a metric back
// without scraping and parsing the text format.

// ActiveStreams is the current value of the active-streams gauge.
func (m *Metrics) ActiveStreams() float64 { return gaugeValue(m.activeStreams) }

// ActiveGenerations is the current number of held generation slots.
func (m *Metrics) ActiveGenerations() float64 { return gaugeValue(m.activeGenerate) }

// Rejections is how many requests were refused for reason.
func (m *Metrics) Rejections(reason string) float64 {
	return counterValue(m.rejections.WithLabelValues(reason))
}

// RateLimitBackend is the backend the rate limiter uses now.
func (m *Metrics) RateLimitBackend() string {
	if gaugeValue(m.rateBackend.WithLabelValues(BackendRedis)) == 1 {
		return BackendRedis
	}
	return BackendLocal
}

// GeneratedTokens is the total of generated tokens.
func (m *Metrics) GeneratedTokens() float64 { return counterValue(m.generatedTokens) }

func gaugeValue(g prometheus.Gauge) float64 {
	var out dto.Metric
	if err := g.Write(&out); err != nil {
		return 0
	}
	return out.GetGauge().GetValue()
}

func counterValue(c prometheus.Counter) float64 {
	var out dto.Metric
	if err := c.Write(&out); err != nil {
		return 0
	}
	return out.GetCounter().GetValue()
}

// The constructors below keep each metric's definition to its name and help.

func newCounter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
}

func newGauge(name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
}

// newLatency is a histogram on the buckets every latency here shares.
func newLatency(name, help string) prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: latencyBuckets})
}
