package server

// The endpoints of the HTTP API (docs/API.md) over real HTTP against the fake
// engine: field names, defaults, event order, headers and error bodies.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"testing"

	"nielsgpt/engine"
	"nielsgpt/internal/testkit"
)

func TestHealth(t *testing.T) {
	ts := startServer(t, testConfig(), nil)
	get := func() string {
		resp, err := http.Get(ts.URL + "/health")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return strings.TrimSpace(string(readAll(t, resp)))
	}
	if got := get(); got != `{"model_ready":false,"ok":true}` {
		t.Fatalf("before load: %s", got)
	}
	ts.SetEngine(newFakeEngine())
	if got := get(); got != `{"model_ready":true,"ok":true}` {
		t.Fatalf("after load: %s", got)
	}
}

// /livez answers whatever the model does; /readyz only once the model is
// loaded. Both answer HEAD, and a successful probe leaves no log line.
func TestLivezReadyz(t *testing.T) {
	logs := &testkit.SyncBuffer{}
	s, err := New(testConfig(), nil, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	url := startWith(t, s)
	probe := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, url+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, strings.TrimSpace(string(readAll(t, resp)))
	}
	for _, step := range []struct {
		path, want string
		status     int
	}{
		{"/livez", `{"ok":true}`, 200},
		{"/readyz", `{"draining":false,"model_ready":false,"ready":false}`, 503},
	} {
		if status, body := probe(http.MethodGet, step.path); status != step.status || body != step.want {
			t.Fatalf("GET %s while loading: %d %s", step.path, status, body)
		}
	}
	s.SetEngine(newFakeEngine())
	if status, body := probe(http.MethodGet, "/readyz"); status != 200 || body != `{"draining":false,"model_ready":true,"ready":true}` {
		t.Fatalf("GET /readyz once loaded: %d %s", status, body)
	}
	for _, path := range []string{"/livez", "/readyz"} {
		if status, body := probe(http.MethodHead, path); status != 200 || body != "" {
			t.Fatalf("HEAD %s: %d %q", path, status, body)
		}
	}
	if out := logs.String(); strings.Contains(out, `"route":"/livez"`) || strings.Count(out, `"route":"/readyz"`) != 1 {
		t.Fatalf("want only the failed /readyz logged:\n%s", out)
	}
}

type tokenEvent struct {
	Step         *int    `json:"step"`
	TokenID      *int    `json:"token_id"`
	TokenText    *string `json:"token_text"`
	TokenDisplay *string `json:"token_display"`
}

type traceEvent struct {
	Step    *int     `json:"step"`
	Entropy *float64 `json:"entropy"`
	TopK    []struct {
		TokenID      int     `json:"token_id"`
		TokenText    string  `json:"token_text"`
		TokenDisplay string  `json:"token_display"`
		Prob         float64 `json:"prob"`
	} `json:"topk"`
	Attn [][]float64 `json:"attn"`
}

func TestChatStream(t *testing.T) {
	fake := newFakeEngine()
	ts := startServer(t, testConfig(), fake)
	resp := postJSON(t, ts.URL+"/chat/stream", `{"messages":[{"role":"system","content":"be terse"},{"role":"user","content":"hi"}],"trace_layer":3}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
	}
	for header, want := range map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache",
		"X-Accel-Buffering": "no",
	} {
		if got := resp.Header.Get(header); got != want {
			t.Errorf("%s = %q, want %q", header, got, want)
		}
	}
	// Unframed, so each step is one write: the stream ends with the connection.
	if len(resp.TransferEncoding) != 0 || resp.ContentLength != -1 || !resp.Close {
		t.Errorf("framing: Transfer-Encoding %v, Content-Length %d, close %v; want none, unknown, close",
			resp.TransferEncoding, resp.ContentLength, resp.Close)
	}
	events := readEvents(t, resp)

	reply := fake.reply
	if len(events) != 2*len(reply)+1 {
		t.Fatalf("%d events, want %d token/trace pairs and done", len(events), len(reply))
	}
	prompt := "system: be terse\nuser: hi\nassistant: "
	for i := range len(reply) {
		tok, tr := events[2*i], events[2*i+1]
		if tok.Type != "token" || tr.Type != "trace" {
			t.Fatalf("step %d: events %q, %q; want token then trace", i, tok.Type, tr.Type)
		}
		for _, data := range []string{tok.Data, tr.Data} {
			var compact bytes.Buffer
			if err := json.Compact(&compact, []byte(data)); err != nil || compact.String() != data {
				t.Fatalf("step %d: not compact JSON: %s", i, data)
			}
		}
		var te tokenEvent
		decodeStrict(t, tok.Data, &te)
		id := int(reply[i])
		if te.Step == nil || *te.Step != i || te.TokenID == nil || *te.TokenID != id ||
			te.TokenText == nil || *te.TokenText != engine.TokenText(id) ||
			te.TokenDisplay == nil || *te.TokenDisplay != engine.TokenDisplay(id) {
			t.Fatalf("step %d: token event %s", i, tok.Data)
		}
		var tre traceEvent
		decodeStrict(t, tr.Data, &tre)
		if tre.Step == nil || *tre.Step != i || tre.Entropy == nil || math.Abs(*tre.Entropy-0.5623351) > 1e-6 {
			t.Fatalf("step %d: trace event %s", i, tr.Data)
		}
		if len(tre.TopK) != 2 || tre.TopK[0].TokenID != id || tre.TopK[0].Prob != 0.75 ||
			tre.TopK[1].TokenText != "\ufffd" || tre.TopK[1].TokenDisplay != `\xff` {
			t.Fatalf("step %d: topk %+v", i, tre.TopK)
		}
		window := len(prompt) + i
		if len(tre.Attn) != fakeConfig.Heads || len(tre.Attn[0]) != window {
			t.Fatalf("step %d: attn is %d×%d, want %d×%d", i, len(tre.Attn), len(tre.Attn[0]), fakeConfig.Heads, window)
		}
		if math.Abs(tre.Attn[1][0]-1/float64(window)) > 1e-6 {
			t.Fatalf("step %d: attn value %v", i, tre.Attn[1][0])
		}
	}
	done := events[len(events)-1]
	var d struct {
		Reply *string `json:"reply"`
	}
	decodeStrict(t, done.Data, &d)
	if done.Type != "done" || d.Reply == nil || *d.Reply != engine.ExtractReply([]byte(prompt+reply)) {
		t.Fatalf("done event %+v", done)
	}

	// The documented defaults reach the engine.
	got := fake.lastGenerate()
	if string(engine.FormatTranscript(got.Messages)) != prompt || got.MaxNewTokens != 256 || got.TraceLayer != 3 || got.WindowHop != 1 ||
		got.Sampling != (engine.Sampling{Temperature: 0.9, TopK: 50, Seed: 42}) {
		t.Fatalf("engine request %+v", got)
	}
	if ts.Metrics().GeneratedTokens() != float64(len(reply)) {
		t.Fatalf("generated tokens metric %v", ts.Metrics().GeneratedTokens())
	}
}

func TestChatStreamFields(t *testing.T) {
	fake := newFakeEngine()
	ts := startServer(t, testConfig(), fake)
	resp := postJSON(t, ts.URL+"/chat/stream", `{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":""}],
		"max_new_tokens":3,"temperature":0,"top_k":null,"seed":-7,"trace_layer":0}`)
	events := readEvents(t, resp)
	if len(events) != 7 || events[6].Type != "done" {
		t.Fatalf("events %+v", events)
	}
	got := fake.lastGenerate()
	if string(engine.FormatTranscript(got.Messages)) != "user: x\nassistant: " || got.MaxNewTokens != 3 || got.TraceLayer != 0 ||
		got.Sampling != (engine.Sampling{Temperature: 0, TopK: 0, Seed: -7}) {
		t.Fatalf("engine request %+v", got)
	}

	// top_k above the vocabulary keeps every token: clamped, not refused.
	readEvents(t, postJSON(t, ts.URL+"/chat/stream", `{"messages":[{"role":"user","content":"x"}],"top_k":100000,"max_new_tokens":1,"trace_layer":0,"seed":3.0}`))
	if got := fake.lastGenerate().Sampling; got.TopK != 256 || got.Seed != 3 {
		t.Fatalf("sampling %+v", got)
	}

	// max_new_tokens 0: no steps, just the reply of the prompt as it stands.
	events = readEvents(t, postJSON(t, ts.URL+"/chat/stream", `{"messages":[{"role":"user","content":"x"}],"max_new_tokens":0,"trace_layer":0}`))
	if len(events) != 1 || events[0].Type != "done" || events[0].Data != `{"reply":""}` {
		t.Fatalf("events %+v", events)
	}
}

// window_hop (an extension): WINDOW_HOP when absent, the request's own value
// when given, on both POST endpoints; a WINDOW_HOP beyond the model's T-1
// means the largest hop it has.
func TestWindowHopReachesTheEngine(t *testing.T) {
	fake := newFakeEngine()
	cfg := testConfig()
	cfg.WindowHop = 16
	ts := startServer(t, cfg, fake)
	readEvents(t, postJSON(t, ts.URL+"/chat/stream", helloChat))
	if got := fake.lastGenerate().WindowHop; got != 16 {
		t.Fatalf("default window_hop %d, want WINDOW_HOP 16", got)
	}
	readEvents(t, postJSON(t, ts.URL+"/chat/stream", `{"messages":[{"role":"user","content":"x"}],"trace_layer":0,"window_hop":63}`))
	if got := fake.lastGenerate().WindowHop; got != 63 {
		t.Fatalf("window_hop %d, want 63", got)
	}
	readAll(t, postJSON(t, ts.URL+"/inspect/full_attn", `{"messages":[{"role":"user","content":"a"}],"trace_layer":0,"head":0,"window_hop":5}`))
	if got := fake.lastFullAttn().WindowHop; got != 5 {
		t.Fatalf("full_attn window_hop %d, want 5", got)
	}

	cfg.WindowHop = 1000 // beyond fakeConfig's T-1 = 63
	ts = startServer(t, cfg, fake)
	readAll(t, postJSON(t, ts.URL+"/inspect/full_attn", `{"messages":[{"role":"user","content":"a"}],"trace_layer":0,"head":0}`))
	if got := fake.lastFullAttn().WindowHop; got != 63 {
		t.Fatalf("WINDOW_HOP 1000 on T=64: window_hop %d, want 63", got)
	}
}

func TestChatStreamEngineErrorMidStream(t *testing.T) {
	fake := newFakeEngine()
	fake.failAt = 2
	ts := startServer(t, testConfig(), fake)
	events := readEvents(t, postJSON(t, ts.URL+"/chat/stream", helloChat))
	if len(events) != 5 {
		t.Fatalf("events %+v", events)
	}
	last := events[4]
	if last.Type != "error" || last.Data != `{"error":"Generation failed","code":"engine_error"}` {
		t.Fatalf("last event %+v", last)
	}
	// The server keeps serving.
	fake.failAt = -1
	if events := readEvents(t, postJSON(t, ts.URL+"/chat/stream", helloChat)); events[len(events)-1].Type != "done" {
		t.Fatalf("after a failure: %+v", events[len(events)-1])
	}
}

func TestFullAttn(t *testing.T) {
	fake := newFakeEngine()
	ts := startServer(t, testConfig(), fake)
	resp := postJSON(t, ts.URL+"/inspect/full_attn", `{"messages":[{"role":"user","content":"hé"}],"trace_layer":2,"head":1,"max_new_tokens":2,"seed":9}`)
	body := readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("status %d %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var out struct {
		Layer         *int        `json:"layer"`
		Head          *int        `json:"head"`
		TokenIDs      []int       `json:"token_ids"`
		Tokens        []string    `json:"tokens"`
		TokensDisplay []string    `json:"tokens_display"`
		Attn          [][]float64 `json:"attn"`
	}
	decodeStrict(t, string(body), &out)
	window := "user: hé\nassistant: " + fake.reply[:2]
	if *out.Layer != 2 || *out.Head != 1 || len(out.TokenIDs) != len(window) {
		t.Fatalf("layer %d head %d, %d tokens, want %d", *out.Layer, *out.Head, len(out.TokenIDs), len(window))
	}
	for i := range len(window) {
		id := int(window[i])
		if out.TokenIDs[i] != id || out.Tokens[i] != engine.TokenText(id) || out.TokensDisplay[i] != engine.TokenDisplay(id) {
			t.Fatalf("token %d: %d %q %q", i, out.TokenIDs[i], out.Tokens[i], out.TokensDisplay[i])
		}
	}
	wantCausalRows(t, out.Attn, 1e-5)
	got := fake.lastFullAttn()
	if fmt.Sprint(got.Layers) != "[2]" || got.MaxNewTokens != 2 ||
		got.Sampling != (engine.Sampling{Temperature: 0.9, TopK: 50, Seed: 9}) {
		t.Fatalf("engine request %+v", got)
	}

	// Defaults: seed 42, max_new_tokens 0.
	readAll(t, postJSON(t, ts.URL+"/inspect/full_attn", `{"messages":[{"role":"user","content":"a"}],"trace_layer":0,"head":0}`))
	if got := fake.lastFullAttn(); got.MaxNewTokens != 0 || got.Sampling.Seed != 42 {
		t.Fatalf("defaults %+v", got)
	}
}

func TestUnknownRouteAndMethod(t *testing.T) {
	ts := startServer(t, testConfig(), newFakeEngine())
	resp, err := http.Get(ts.URL + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, resp, 404, "not_found", "Not found")
	resp, err = http.Get(ts.URL + "/chat/stream")
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, resp, 405, "method_not_allowed", "Method not allowed")
}

// /docs and /openapi.json are mounted on the API's router, and HEAD /health
// answers for uptime probes.
func TestDocsAndHeadMounted(t *testing.T) {
	ts := startServer(t, testConfig(), nil)
	for _, path := range []string{"/docs", "/openapi.json"} {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, resp); resp.StatusCode != 200 || len(body) == 0 {
			t.Fatalf("%s: status %d", path, resp.StatusCode)
		}
	}
	resp, err := http.Head(ts.URL + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("HEAD /health: %v %v", err, resp.StatusCode)
	}
	resp.Body.Close()
}

func TestModelLoading(t *testing.T) {
	ts := startServer(t, testConfig(), nil)
	for _, path := range []string{"/chat/stream", "/inspect/full_attn"} {
		resp := postJSON(t, ts.URL+path, helloChat)
		if got := resp.Header.Get("Retry-After"); got != "5" {
			t.Errorf("%s: Retry-After %q, want 5 (seconds; a model loads in a few)", path, got)
		}
		wantError(t, resp, 503, "model_loading", "Model not ready yet, please retry")
	}
	if got := ts.Metrics().Rejections("model_loading"); got != 2 {
		t.Fatalf("model_loading rejections %v", got)
	}
	ts.SetEngine(newFakeEngine())
	if events := readEvents(t, postJSON(t, ts.URL+"/chat/stream", helloChat)); events[len(events)-1].Type != "done" {
		t.Fatal("not served after the engine was set")
	}
}

func TestMetricsEndpoint(t *testing.T) {
	ts := startServer(t, testConfig(), newFakeEngine())
	readEvents(t, postJSON(t, ts.URL+"/chat/stream", helloChat))
	readAll(t, postJSON(t, ts.URL+"/chat/stream", `{}`))
	ts.Metrics().EngineStep("decode", 0.002, 1)
	ts.Metrics().ModelLoaded(1500e6)
	resp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body := string(readAll(t, resp))
	testkit.ContainsAll(t, "/metrics", body,
		`nielsgpt_http_requests_total{route="/chat/stream",status="200"} 1`,
		`nielsgpt_http_requests_total{route="/chat/stream",status="422"} 1`,
		`nielsgpt_http_request_duration_seconds_bucket{route="/chat/stream"`,
		"nielsgpt_time_to_first_token_seconds_count 1",
		fmt.Sprintf("nielsgpt_inter_token_latency_seconds_count %d", len(newFakeEngine().reply)-1),
		fmt.Sprintf("nielsgpt_generated_tokens_total %d", len(newFakeEngine().reply)),
		"nielsgpt_prompt_tokens_total 23",
		"nielsgpt_active_streams 0",
		"nielsgpt_active_generations 0",
		`nielsgpt_rejections_total{reason="invalid"} 1`,
		`nielsgpt_rejections_total{reason="rate_limited"} 0`,
		`nielsgpt_rejections_total{reason="busy"} 0`,
		`nielsgpt_rejections_total{reason="prompt_too_large"} 0`,
		`nielsgpt_rejections_total{reason="model_loading"} 0`,
		"nielsgpt_model_load_seconds 1.5",
		"nielsgpt_model_ready 1",
		`nielsgpt_engine_step_seconds_count{phase="decode"} 1`,
		`nielsgpt_engine_tokens_total{phase="decode"} 1`,
		"go_goroutines",
		"process_resident_memory_bytes",
	)
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "nielsgpt") && strings.Contains(strings.SplitN(line, " ", 2)[0], ":") {
			t.Errorf("metric name with a colon: %s", line)
		}
	}
}

// The access log carries one structured line per request with the client,
// the route and, for streams, the tokens; and never a query string.
func TestAccessLog(t *testing.T) {
	var logs testkit.SyncBuffer
	s, err := New(testConfig(), nil, NewLogger("json", &logs))
	if err != nil {
		t.Fatal(err)
	}
	s.SetEngine(newFakeEngine())
	srv := startWith(t, s)
	readEvents(t, postJSON(t, srv+"/chat/stream?token=hf_secret", helloChat))
	// The line is written after the last byte of the response.
	testkit.Eventually(t, waitLimit, "the access log line", func() bool { return strings.Contains(logs.String(), "\n") })
	var line map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(logs.String())), &line); err != nil {
		t.Fatalf("log is not one JSON line: %q", logs.String())
	}
	if line["route"] != "/chat/stream" || line["status"] != float64(200) || line["client_ip"] != "127.0.0.1" ||
		line["tokens"] != float64(len(newFakeEngine().reply)) || line["method"] != "POST" {
		t.Fatalf("log line %v", line)
	}
	if strings.Contains(logs.String(), "hf_secret") {
		t.Fatal("the query string reached the log")
	}
}
