package bench

// Unit tests of the driver's parts on canned input: the latency summary, the
// prompts, one stream against a scripted HTTP server, a concurrency phase,
// and the three renderings of a report.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSummariseLatency(t *testing.T) {
	l := summariseLatency([]time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond})
	if l.Samples != 3 || l.P50ms != 2 || l.MaxMs != 3 || math.Abs(l.P95ms-2.9) > 1e-9 {
		t.Errorf("got %+v", l)
	}
	// No samples must still encode as JSON (NaN would not).
	if _, err := json.Marshal(summariseLatency(nil)); err != nil {
		t.Error(err)
	}
}

func TestPrompts(t *testing.T) {
	seen := map[string]bool{}
	for v := range 5 {
		msgs := longPrompt(v)
		if n := formattedLen(msgs); n != longPromptBytes {
			t.Errorf("variant %d: formatted transcript is %d bytes, want %d", v, n, longPromptBytes)
		}
		if len(msgs) < 4 || msgs[len(msgs)-1].Role != "user" || msgs[len(msgs)-2].Role != "assistant" {
			t.Errorf("variant %d: want several turns ending on a user turn, got %d messages", v, len(msgs))
		}
		b, _ := json.Marshal(msgs)
		if seen[string(b)] {
			t.Errorf("variant %d repeats an earlier one", v)
		}
		seen[string(b)] = true
	}
	// The server must accept it: MAX_PROMPT_BYTES is set to 20000 for the
	// bench, and the JSON body stays far below MAX_BODY_BYTES.
	if formattedLen(longPrompt(0)) > 20000 {
		t.Error("the long prompt exceeds the MAX_PROMPT_BYTES the bench sets")
	}
	if formattedLen(shortPrompt(1)) > 100 {
		t.Error("the short prompt is not short")
	}
	// Past T: every token of the stream must already be past the context.
	for _, T := range []int{24, 64, 256, 512} {
		if n := formattedLen(pastTPrompt(T)(3)); n < T+T/2 || n > 20000 {
			t.Errorf("past-T prompt for T=%d is %d bytes", T, n)
		}
	}
}

// sseServer answers /chat/stream like the real server: per step a token and
// a trace event, then done. script may change that for one test.
func sseServer(t *testing.T, script func(w http.ResponseWriter, r *http.Request, req chatRequest) bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req chatRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		if script != nil && script(w, r, req) {
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range req.MaxNewTokens {
			fmt.Fprintf(w, "event: token\ndata: {\"step\":%d,\"token_id\":%d,\"token_text\":\"a\",\"token_display\":\"a\"}\n\n", i, 97)
			fmt.Fprintf(w, "event: trace\ndata: {\"step\":%d,\"entropy\":1.5,\"topk\":[],\"attn\":[[1]]}\n\n", i)
			w.(http.Flusher).Flush()
		}
		fmt.Fprint(w, "event: done\ndata: {\"reply\":\"a\"}\n\n")
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestStream(t *testing.T) {
	srv := sseServer(t, nil)
	c := newClient(srv.URL, 4)
	defer c.close()
	res := c.stream(context.Background(), chatRequest{Messages: shortPrompt(1), MaxNewTokens: 7, TraceLayer: 0})
	if res.Err != nil || !res.Done || res.Cut || res.Tokens != 7 || res.Traces != 7 {
		t.Fatalf("got %+v", res)
	}
	if res.TTFT <= 0 || res.TTFT > res.Elapsed {
		t.Errorf("TTFT %v outside (0, elapsed %v]", res.TTFT, res.Elapsed)
	}
}

func TestStreamRetriesBusy(t *testing.T) {
	var calls atomic.Int32
	srv := sseServer(t, func(w http.ResponseWriter, r *http.Request, req chatRequest) bool {
		if calls.Add(1) <= 2 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":"Server busy, please retry","code":"busy"}`)
			return true
		}
		return false
	})
	c := newClient(srv.URL, 1)
	defer c.close()
	res := c.stream(context.Background(), chatRequest{MaxNewTokens: 3})
	if res.Err != nil || res.Busy != 2 || res.Tokens != 3 {
		t.Fatalf("got %+v", res)
	}
}

func TestStreamFailures(t *testing.T) {
	cases := map[string]struct {
		body, status string
		want         string
	}{
		"http error":        {status: "422", body: `{"detail":"trace_layer must be in [0, 3]"}`, want: "422"},
		"error event":       {body: "event: token\ndata: {\"step\":0,\"token_id\":1}\n\nevent: error\ndata: {\"error\":\"Generation failed\",\"code\":\"engine_error\"}\n\n", want: "engine_error"},
		"skipped step":      {body: "event: token\ndata: {\"step\":0,\"token_id\":1}\n\nevent: token\ndata: {\"step\":2,\"token_id\":1}\n\n", want: "expected step 1"},
		"not a token event": {body: "event: token\ndata: {\"step\":0}\n\n", want: "without step or token_id"},
		"no done":           {body: "event: token\ndata: {\"step\":0,\"token_id\":1}\n\n", want: "without a done event"},
		"cut mid-event":     {body: "event: token\ndata: {\"step\":0,\"token_id\":1}\n\nevent: tr", want: "unexpected EOF"},
	}
	for name, c := range cases {
		srv := sseServer(t, func(w http.ResponseWriter, r *http.Request, req chatRequest) bool {
			if c.status != "" {
				w.WriteHeader(http.StatusUnprocessableEntity)
			}
			fmt.Fprint(w, c.body)
			return true
		})
		cl := newClient(srv.URL, 1)
		res := cl.stream(context.Background(), chatRequest{MaxNewTokens: 3})
		cl.close()
		if res.Err == nil || !strings.Contains(res.Err.Error(), c.want) || res.Done || res.Cut {
			t.Errorf("%s: got %+v, want an error containing %q", name, res, c.want)
		}
	}
}

func TestStreamCutByDeadline(t *testing.T) {
	srv := sseServer(t, func(w http.ResponseWriter, r *http.Request, req chatRequest) bool {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: token\ndata: {\"step\":0,\"token_id\":1}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // a generation far slower than the phase cap
		return true
	})
	c := newClient(srv.URL, 1)
	defer c.close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	res := c.stream(ctx, chatRequest{MaxNewTokens: 100})
	if res.Err != nil || !res.Cut || res.Done || res.Tokens != 1 {
		t.Fatalf("got %+v, want a cut stream with its one token counted", res)
	}
}

func TestThroughputPhase(t *testing.T) {
	var seeds seedSet
	srv := sseServer(t, func(w http.ResponseWriter, r *http.Request, req chatRequest) bool {
		seeds.add(req.Seed)
		if req.Temperature != benchTemperature || req.TopK != benchTopK || req.TraceLayer != 3 {
			t.Errorf("request with unexpected settings: %+v", req)
		}
		return false
	})
	c := newClient(srv.URL, 4)
	defer c.close()
	r := &modeRunner{client: c, plan: plan{cap: 10 * time.Second}, traceLayer: 3, report: &ModeReport{}}
	tp := r.throughput(context.Background(), 4, 3, 5)
	if tp.Concurrency != 4 || tp.Streams != 12 || tp.Completed != 12 || tp.Tokens != 60 || tp.Errors != 0 || tp.Cut != 0 {
		t.Fatalf("got %+v", tp)
	}
	if tp.Seconds <= 0 || math.Abs(tp.TokensPerS-60/tp.Seconds) > 1e-6 {
		t.Errorf("rate %g for %d tokens in %g s", tp.TokensPerS, tp.Tokens, tp.Seconds)
	}
	if seeds.distinct() != 12 {
		t.Errorf("%d distinct seeds over 12 streams, want every stream to sample differently", seeds.distinct())
	}
}

func TestTTFTPhaseCountsTraceMismatch(t *testing.T) {
	srv := sseServer(t, func(w http.ResponseWriter, r *http.Request, req chatRequest) bool {
		// A server that forgets the trace: the stream completes, but the
		// benchmark must not count it as a traced stream.
		fmt.Fprint(w, "event: token\ndata: {\"step\":0,\"token_id\":1}\n\nevent: done\ndata: {\"reply\":\"\"}\n\n")
		return true
	})
	c := newClient(srv.URL, 1)
	defer c.close()
	rep := &ModeReport{}
	r := &modeRunner{client: c, plan: plan{cap: 10 * time.Second, ttftRuns: 3}, report: rep}
	l := r.ttft(context.Background(), shortPrompt)
	if l.Samples != 3 {
		t.Errorf("the token still arrived, so its time counts: got %+v", l)
	}
	if len(rep.Errors) != 1 || !strings.Contains(rep.Errors[0], "0 trace events for 1 tokens") {
		t.Errorf("errors noted: %q", rep.Errors)
	}
}

// seedSet collects seeds from concurrent handlers.
type seedSet struct {
	mu sync.Mutex
	m  map[int64]bool
}

func (s *seedSet) add(seed int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[int64]bool{}
	}
	s.m[seed] = true
}

func (s *seedSet) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
