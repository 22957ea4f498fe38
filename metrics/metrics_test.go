package metrics

// The exposition is what dashboards depend on: the names, their units, the
// label sets, and independence between registries.

import (
	"io"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"nielsgpt/internal/testkit"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("status %d", rec.Code)
	}
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func TestExposition(t *testing.T) {
	m := New()
	m.ObserveRequest("/chat/stream", 200, 150*time.Millisecond)
	m.ObserveRequest("/chat/stream", 429, time.Millisecond)
	m.ObserveTimeToFirstToken(30 * time.Millisecond)
	m.ObserveInterToken(10 * time.Millisecond)
	m.AddGeneratedTokens(5)
	m.AddPromptTokens(40)
	m.StreamStarted()
	m.GenerationStarted()
	m.Reject(RejectRateLimited)
	m.ModelLoaded(2 * time.Second)
	m.EngineStep("prefill", 0.02, 40)
	m.EngineStep("decode", 0.003, 1)
	m.EngineStep("decode", 0.004, 0)
	m.RedisError()

	body := scrape(t, m)
	testkit.ContainsAll(t, "exposition", body,
		`nielsgpt_http_requests_total{route="/chat/stream",status="200"} 1`,
		`nielsgpt_http_requests_total{route="/chat/stream",status="429"} 1`,
		`nielsgpt_http_request_duration_seconds_count{route="/chat/stream"} 2`,
		`nielsgpt_time_to_first_token_seconds_sum 0.03`,
		`nielsgpt_inter_token_latency_seconds_count 1`,
		`nielsgpt_generated_tokens_total 5`,
		`nielsgpt_prompt_tokens_total 40`,
		`nielsgpt_active_streams 1`,
		`nielsgpt_active_generations 1`,
		`nielsgpt_rejections_total{reason="rate_limited"} 1`,
		`nielsgpt_rejections_total{reason="busy"} 0`,
		`nielsgpt_rejections_total{reason="body_too_large"} 0`,
		`nielsgpt_model_load_seconds 2`,
		`nielsgpt_model_ready 1`,
		`nielsgpt_engine_step_seconds_count{phase="decode"} 2`,
		`nielsgpt_engine_step_seconds_count{phase="prefill"} 1`,
		`nielsgpt_engine_tokens_total{phase="prefill"} 40`,
		`nielsgpt_engine_tokens_total{phase="decode"} 1`,
		`nielsgpt_rate_limit_backend{backend="local"} 1`,
		`nielsgpt_rate_limit_backend{backend="redis"} 0`,
		`nielsgpt_rate_limit_redis_errors_total 1`,
		"go_goroutines ",
		"go_memstats_heap_alloc_bytes ",
		"process_cpu_seconds_total ",
	)
	// Our own names: snake_case, no colons, units on everything measured.
	name := regexp.MustCompile(`^# TYPE (nielsgpt_\S+) (\S+)`)
	for _, line := range strings.Split(body, "\n") {
		match := name.FindStringSubmatch(line)
		if match == nil {
			continue
		}
		n, kind := match[1], match[2]
		if !regexp.MustCompile(`^[a-z][a-z0-9_]*$`).MatchString(n) {
			t.Errorf("%s is not snake_case", n)
		}
		if kind == "counter" && !strings.HasSuffix(n, "_total") {
			t.Errorf("counter %s lacks _total", n)
		}
		if kind == "histogram" && !strings.HasSuffix(n, "_seconds") {
			t.Errorf("histogram %s lacks a unit", n)
		}
	}

	if m.ActiveStreams() != 1 || m.ActiveGenerations() != 1 || m.Rejections(RejectRateLimited) != 1 || m.GeneratedTokens() != 5 {
		t.Fatal("snapshot accessors disagree with the exposition")
	}
	m.StreamEnded()
	m.GenerationEnded()
	if m.ActiveStreams() != 0 || m.ActiveGenerations() != 0 {
		t.Fatal("gauges did not return to zero")
	}
}

// Exactly one rate-limit backend is marked in use, whichever was set last.
func TestRateLimitBackend(t *testing.T) {
	m := New()
	for _, backend := range []string{BackendRedis, BackendLocal, BackendRedis} {
		m.SetRateLimitBackend(backend)
		if got := m.RateLimitBackend(); got != backend {
			t.Fatalf("backend %q after setting %q", got, backend)
		}
		other := map[string]string{BackendRedis: BackendLocal, BackendLocal: BackendRedis}[backend]
		testkit.ContainsAll(t, "exposition", scrape(t, m),
			`nielsgpt_rate_limit_backend{backend="`+backend+`"} 1`,
			`nielsgpt_rate_limit_backend{backend="`+other+`"} 0`)
	}
}

// Each Metrics has its own registry: two servers in one process (or many
// tests) do not collide, and nothing lands on the global default registry.
func TestRegistriesIndependent(t *testing.T) {
	a, b := New(), New()
	a.AddGeneratedTokens(3)
	if b.GeneratedTokens() != 0 {
		t.Fatal("metrics shared between instances")
	}
	if !strings.Contains(scrape(t, b), "nielsgpt_generated_tokens_total 0") {
		t.Fatal("second registry not exposing its own values")
	}
}
