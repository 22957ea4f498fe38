package server

// The model's internals over HTTP against the fake engine: deeper traces,
// the logit lens and ablation on /chat/stream and /v1, /inspect/score, the
// fields a request may carry that the server does not know, and the limits
// that hold on every POST endpoint.

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"nielsgpt/engine"
	"nielsgpt/internal/testkit"
)

type candidateJSON struct {
	TokenID      int     `json:"token_id"`
	TokenText    string  `json:"token_text"`
	TokenDisplay string  `json:"token_display"`
	Prob         float64 `json:"prob"`
}

// deepTraceEvent is a trace event with every optional member.
type deepTraceEvent struct {
	Step    int             `json:"step"`
	Entropy float64         `json:"entropy"`
	TopK    []candidateJSON `json:"topk"`
	Attn    [][]float64     `json:"attn"`
	Layers  []struct {
		Layer *int        `json:"layer"`
		Attn  [][]float64 `json:"attn"`
	} `json:"layers"`
	Lens []struct {
		Layer   *int            `json:"layer"`
		Entropy *float64        `json:"entropy"`
		TopK    []candidateJSON `json:"topk"`
	} `json:"lens"`
}

func TestChatStreamDeeperTraces(t *testing.T) {
	fake := newFakeEngine()
	ts := startServer(t, testConfig(), fake)
	body := `{"messages":[{"role":"user","content":"hi"}],"trace_layer":1,"max_new_tokens":3,
		"trace_layers":[3,0],"logit_lens":true,"ablate":[{"layer":2,"head":1},{"layer":0,"head":0}]}`
	events := readEvents(t, postJSON(t, ts.URL+"/chat/stream", body))
	if len(events) != 7 || events[6].Type != "done" {
		t.Fatalf("events %+v", events)
	}
	got := fake.lastGenerate()
	if !slices.Equal(got.TraceLayers, []int{3, 0}) || !got.LogitLens || got.TraceLayer != 1 ||
		!slices.Equal(got.Ablate, []engine.Head{{Layer: 2, Head: 1}, {Layer: 0, Head: 0}}) {
		t.Fatalf("engine request %+v", got)
	}
	window := len("user: hi\nassistant: ")
	for i := range 3 {
		var tr deepTraceEvent
		decodeStrict(t, events[2*i+1].Data, &tr)
		// Two ablated heads: the fake's entropy says so.
		if math.Abs(tr.Entropy-fakeEntropy(got.Ablate)) > 1e-6 || len(tr.Attn) != fakeConfig.Heads {
			t.Fatalf("step %d: %s", i, events[2*i+1].Data)
		}
		if len(tr.Layers) != 2 || *tr.Layers[0].Layer != 3 || *tr.Layers[1].Layer != 0 {
			t.Fatalf("step %d: layers not in the requested order: %s", i, events[2*i+1].Data)
		}
		for _, l := range tr.Layers {
			if len(l.Attn) != fakeConfig.Heads {
				t.Fatalf("step %d layer %d: %d heads", i, *l.Layer, len(l.Attn))
			}
			for h, row := range l.Attn {
				if len(row) != window+i || row[(*l.Layer+h)%(window+i)] != 1 {
					t.Fatalf("step %d layer %d head %d: row %v", i, *l.Layer, h, row)
				}
			}
		}
		if len(tr.Lens) != fakeConfig.Layers {
			t.Fatalf("step %d: lens has %d layers, want every layer", i, len(tr.Lens))
		}
		tok := int(fake.reply[i])
		for l, lens := range tr.Lens {
			c := lens.TopK
			if *lens.Layer != l || *lens.Entropy != float64(l)/8 || len(c) != 2 || len(c) > engine.LensTop ||
				c[0].TokenID != (tok+l)%256 || c[0].TokenText != engine.TokenText(c[0].TokenID) ||
				c[0].TokenDisplay != engine.TokenDisplay(c[0].TokenID) || c[0].Prob != 0.5 {
				t.Fatalf("step %d lens %d: %+v", i, l, lens)
			}
		}
	}

	// "all" is every layer in order; an empty list asks for none.
	readEvents(t, postJSON(t, ts.URL+"/chat/stream", `{"messages":[{"role":"user","content":"hi"}],"trace_layer":0,"max_new_tokens":1,"trace_layers":"all"}`))
	if got := fake.lastGenerate(); !slices.Equal(got.TraceLayers, []int{0, 1, 2, 3}) || got.LogitLens || got.Ablate != nil {
		t.Fatalf(`"all": engine request %+v`, got)
	}
	events = readEvents(t, postJSON(t, ts.URL+"/chat/stream", `{"messages":[{"role":"user","content":"hi"}],"trace_layer":0,"max_new_tokens":1,"trace_layers":[],"logit_lens":false,"ablate":[]}`))
	var plain traceEvent // strict: neither layers nor lens
	decodeStrict(t, events[1].Data, &plain)
}

// A request that asks for none of the extensions gets neither member, and
// the engine is asked for nothing extra.
func TestChatStreamWithoutExtensions(t *testing.T) {
	fake := newFakeEngine()
	ts := startServer(t, testConfig(), fake)
	events := readEvents(t, postJSON(t, ts.URL+"/chat/stream", helloChat))
	var tr traceEvent
	decodeStrict(t, events[1].Data, &tr)
	if got := fake.lastGenerate(); got.TraceLayers != nil || got.LogitLens || got.Ablate != nil {
		t.Fatalf("engine request %+v", got)
	}
}

type scoreJSON struct {
	Offset        *int     `json:"offset"`
	TokenIDs      []int    `json:"token_ids"`
	Tokens        []string `json:"tokens"`
	TokensDisplay []string `json:"tokens_display"`
	Scores        []*struct {
		Logprob *float64 `json:"logprob"`
		Entropy *float64 `json:"entropy"`
		Rank    *int     `json:"rank"`
		TopK    []struct {
			TokenID      int     `json:"token_id"`
			TokenText    string  `json:"token_text"`
			TokenDisplay string  `json:"token_display"`
			Logprob      float64 `json:"logprob"`
		} `json:"topk"`
	} `json:"scores"`
	MeanLogprob *float64 `json:"mean_logprob"`
	BitsPerByte *float64 `json:"bits_per_byte"`
}

func postScore(t *testing.T, url, body string) scoreJSON {
	t.Helper()
	resp := postJSON(t, url+"/inspect/score", body)
	data := readAll(t, resp)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("status %d (%s): %s", resp.StatusCode, resp.Header.Get("Content-Type"), data)
	}
	var out scoreJSON
	decodeStrict(t, string(data), &out)
	return out
}

func TestScore(t *testing.T) {
	fake := newFakeEngine()
	ts := startServer(t, testConfig(), fake)

	// The fake gives position i the log-probability log(1/(i+1)) and rank i.
	out := postScore(t, ts.URL, `{"text":"h\u00e9!"}`)
	text := "h\u00e9!"
	if *out.Offset != 0 || len(out.TokenIDs) != len(text) || len(out.Scores) != len(text) || out.Scores[0] != nil {
		t.Fatalf("score %+v", out)
	}
	for i := range len(text) {
		id := int(text[i])
		if out.TokenIDs[i] != id || out.Tokens[i] != engine.TokenText(id) || out.TokensDisplay[i] != engine.TokenDisplay(id) {
			t.Fatalf("token %d: %d %q %q", i, out.TokenIDs[i], out.Tokens[i], out.TokensDisplay[i])
		}
		if i == 0 {
			continue
		}
		s := out.Scores[i]
		if *s.Logprob != math.Log(1/float64(i+1)) || *s.Rank != i || *s.Entropy != 1 || len(s.TopK) != 1 ||
			s.TopK[0].TokenID != id || s.TopK[0].Logprob != *s.Logprob {
			t.Fatalf("scores[%d] %+v", i, s)
		}
	}
	mean := (math.Log(1.0/2) + math.Log(1.0/3) + math.Log(1.0/4)) / 3
	if math.Abs(*out.MeanLogprob-mean) > 1e-12 || math.Abs(*out.BitsPerByte+mean/math.Ln2) > 1e-12 {
		t.Fatalf("mean_logprob %v bits_per_byte %v, want %v and %v", *out.MeanLogprob, *out.BitsPerByte, mean, -mean/math.Ln2)
	}
	if got := fake.lastScoreRequest(); string(got.Text) != text || got.TopN != 5 || got.Ablate != nil {
		t.Fatalf("engine request %+v", got)
	}

	// Messages are the transcript without the generation prompt; top_k and
	// ablate reach the engine.
	postScore(t, ts.URL, `{"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}],"top_k":0,"ablate":[{"layer":3,"head":1}]}`)
	if got := fake.lastScoreRequest(); string(engine.FormatConversation(got.Messages)) != "system: s\nuser: u\n" || got.Text != nil || got.TopN != 0 ||
		!slices.Equal(got.Ablate, []engine.Head{{Layer: 3, Head: 1}}) {
		t.Fatalf("engine request %+v", got)
	}
	postScore(t, ts.URL, `{"messages":[{"role":"user","content":"u"},{"role":"assistant","content":""}]}`)
	if got := string(engine.FormatConversation(fake.lastScoreRequest().Messages)); got != "user: u\nassistant: " {
		t.Fatalf("an empty last assistant message: scored %q", got)
	}

	// Longer than the window (T = 64): offset counts the bytes left out.
	long := strings.Repeat("ab", 50)
	out = postScore(t, ts.URL, `{"text":"`+long+`","top_k":1}`)
	if *out.Offset != 36 || len(out.TokenIDs) != 64 || out.TokenIDs[0] != int(long[36]) {
		t.Fatalf("offset %d, %d tokens", *out.Offset, len(out.TokenIDs))
	}

	// One token scores nothing: the mean is null, not NaN.
	out = postScore(t, ts.URL, `{"text":"a"}`)
	if len(out.Scores) != 1 || out.Scores[0] != nil || out.MeanLogprob != nil || out.BitsPerByte != nil {
		t.Fatalf("one token: %+v", out)
	}

	// MAX_PROMPT_BYTES applies to the scored text.
	cfg := testConfig()
	cfg.MaxPromptBytes = 10
	small := startServer(t, cfg, fake)
	wantError(t, postJSON(t, small.URL+"/inspect/score", `{"text":"01234567890"}`), 413, "prompt_too_large", "Prompt too large: 11 bytes (max 10)")
	postScore(t, small.URL, `{"text":"0123456789"}`)
}

func TestScoreEngineFailure(t *testing.T) {
	fake := newFakeEngine()
	fake.refuse = errFakeEngine
	ts := startServer(t, testConfig(), fake)
	wantError(t, postJSON(t, ts.URL+"/inspect/score", `{"text":"ab"}`), 500, "engine_error", "Scoring failed")
	fake.refuse = fmt.Errorf("scoring: %w", engine.ErrKVFull)
	resp := postJSON(t, ts.URL+"/inspect/score", `{"text":"ab"}`)
	if resp.Header.Get("Retry-After") != "1" {
		t.Errorf("busy without Retry-After")
	}
	wantError(t, resp, 503, "busy", "Server busy, please retry")
}

// Unknown fields are ignored, as the original's request models ignored
// extras, on every POST endpoint and inside nested objects; the request's
// log line names them.
func TestUnknownFieldsIgnoredAndLogged(t *testing.T) {
	logs := &testkit.SyncBuffer{}
	s, err := New(testConfig(), nil, NewLogger("json", logs))
	if err != nil {
		t.Fatal(err)
	}
	fake := newFakeEngine()
	s.SetEngine(fake)
	url := startWith(t, s)
	cases := []struct {
		path, body string
		ignored    []string
	}{
		{"/chat/stream", `{"messages":[{"role":"user","content":"hi","name":"x"}],"trace_layer":1,"stream":true,"zz":{"deep":[1]},
			"ablate":[{"layer":0,"head":1,"why":"curious"}]}`, []string{"stream", "zz", "messages[0].name", "ablate[0].why"}},
		{"/inspect/full_attn", `{"messages":[{"role":"user","content":"a"}],"trace_layer":1,"head":0,"temperature":1}`, []string{"temperature"}},
		{"/inspect/score", `{"text":"abc","model":"niels","messages_":[]}`, []string{"messages_", "model"}},
		{"/v1/chat/completions", chatHi + `,"frequency_penalty":0,"nielsgpt":{"trace_layer":0,"colour":"red"}}`, []string{"frequency_penalty", "nielsgpt.colour"}},
	}
	for _, c := range cases {
		from := len(logs.String())
		resp := postJSON(t, url+c.path, c.body)
		body := readAll(t, resp)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d: %s", c.path, resp.StatusCode, body)
		}
		line := waitLogLine(t, logs, from)
		var got []string
		list, _ := line["ignored_fields"].([]any)
		for _, v := range list {
			got = append(got, v.(string))
		}
		if !slices.Equal(got, c.ignored) {
			t.Errorf("%s: ignored_fields %v, want %v", c.path, got, c.ignored)
		}
	}
	// A request with no unknown field has no ignored_fields at all.
	from := len(logs.String())
	readEvents(t, postJSON(t, url+"/chat/stream", helloChat))
	if line := waitLogLine(t, logs, from); line["ignored_fields"] != nil {
		t.Fatalf("ignored_fields %v on a request without unknown fields", line["ignored_fields"])
	}
}

// waitLogLine waits for the access log's line written after the first from
// bytes of the log, and decodes it.
func waitLogLine(t *testing.T, logs *testkit.SyncBuffer, from int) map[string]any {
	t.Helper()
	testkit.Eventually(t, waitLimit, "the access log line", func() bool { return strings.Contains(logs.String()[from:], "\n") })
	var line map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(logs.String()[from:])), &line); err != nil {
		t.Fatalf("log is not one JSON line: %q", logs.String()[from:])
	}
	return line
}

// Every POST endpoint needs the API key, draws on the one rate-limit
// bucket, takes a generation slot, and is counted under its own route.
func TestInspectEndpointsShareLimits(t *testing.T) {
	cfg := testConfig()
	cfg.APIKeys = []string{"k"}
	cfg.RateLimitBurst = 3
	cfg.RateLimitPerMin = 1
	cfg.MaxConcurrent = 1
	fake := newFakeEngine()
	ts := startServer(t, cfg, fake)
	score := `{"text":"abc"}`

	wantError(t, postJSON(t, ts.URL+"/inspect/score", score), 401, "unauthorized", "")
	wantError(t, postJSON(t, ts.URL+"/inspect/attention", `{"messages":[{"role":"user","content":"a"}]}`), 401, "unauthorized", "")
	resp := postJSON(t, ts.URL+"/inspect/score", score, "Authorization", "Bearer k")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("with the key: %d", resp.StatusCode)
	}
	readAll(t, resp)

	// The one slot is taken by a stream: the score is busy.
	fake.delay = 50 * time.Millisecond
	stream := postJSON(t, ts.URL+"/chat/stream", helloChat, "Authorization", "Bearer k")
	wantError(t, postJSON(t, ts.URL+"/inspect/score", score, "Authorization", "Bearer k"), 503, "busy", "")
	readAll(t, stream)
	// The bucket (3) is spent by now: the two scores and the stream drew on it.
	wantError(t, postJSON(t, ts.URL+"/inspect/score", score, "Authorization", "Bearer k"), 429, "rate_limited", "")

	resp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readAll(t, resp))
	for _, status := range []int{200, 401, 503, 429} {
		want := fmt.Sprintf(`nielsgpt_http_requests_total{route="/inspect/score",status="%d"} 1`, status)
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if want := `nielsgpt_http_requests_total{route="/inspect/attention",status="401"} 1`; !strings.Contains(text, want) {
		t.Errorf("/metrics lacks %s", want)
	}
}

type attentionJSON struct {
	Layers        []int           `json:"layers"`
	TokenIDs      []int           `json:"token_ids"`
	Tokens        []string        `json:"tokens"`
	TokensDisplay []string        `json:"tokens_display"`
	Attn          [][][][]float64 `json:"attn"`
}

func TestAttention(t *testing.T) {
	fake := newFakeEngine()
	ts := startServer(t, testConfig(), fake)
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	window := []byte("user: hi\nassistant: ")

	resp := postJSON(t, ts.URL+"/inspect/attention", `{`+msgs+`,"layers":[3,1],"seed":5}`)
	data := readAll(t, resp)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("status %d %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), data)
	}
	var out attentionJSON
	decodeStrict(t, string(data), &out)
	if !slices.Equal(out.Layers, []int{3, 1}) || len(out.TokenIDs) != len(window) || len(out.Attn) != 2 {
		t.Fatalf("answer %+v", out)
	}
	for i, id := range out.TokenIDs {
		if id != int(window[i]) || out.Tokens[i] != engine.TokenText(id) || out.TokensDisplay[i] != engine.TokenDisplay(id) {
			t.Fatalf("token %d: %d", i, id)
		}
	}
	for l := range out.Attn {
		if len(out.Attn[l]) != fakeConfig.Heads {
			t.Fatalf("layer %d: %d heads", l, len(out.Attn[l]))
		}
		for h := range out.Attn[l] {
			wantCausalRows(t, out.Attn[l][h], 1e-6)
		}
	}
	if got := fake.lastFullAttn(); got.Sampling.Seed != 5 || got.MaxNewTokens != 0 || string(engine.FormatTranscript(got.Messages)) != string(window) {
		t.Fatalf("engine request %+v", got)
	}

	// ablate reaches the engine, here and on /inspect/full_attn.
	readAll(t, postJSON(t, ts.URL+"/inspect/attention", `{`+msgs+`,"layers":[0],"ablate":[{"layer":1,"head":1}]}`))
	if got := fake.lastFullAttn(); !slices.Equal(got.Ablate, []engine.Head{{Layer: 1, Head: 1}}) || !slices.Equal(got.Layers, []int{0}) {
		t.Fatalf("engine request %+v", got)
	}
	readAll(t, postJSON(t, ts.URL+"/inspect/full_attn", `{`+msgs+`,"trace_layer":2,"head":0,"ablate":[{"layer":0,"head":1}]}`))
	if got := fake.lastFullAttn(); !slices.Equal(got.Ablate, []engine.Head{{Layer: 0, Head: 1}}) || !slices.Equal(got.Layers, []int{2}) {
		t.Fatalf("/inspect/full_attn: engine request %+v", got)
	}

	// Defaults: every layer. Generated tokens join the window.
	resp = postJSON(t, ts.URL+"/inspect/attention", `{`+msgs+`,"max_new_tokens":2}`)
	decodeStrict(t, string(readAll(t, resp)), &out)
	if !slices.Equal(out.Layers, []int{0, 1, 2, 3}) || len(out.TokenIDs) != len(window)+2 || len(out.Attn[3][1]) != len(window)+2 {
		t.Fatalf("defaults: layers %v, %d tokens", out.Layers, len(out.TokenIDs))
	}

	// The archive, read back by numpy.
	python := python3WithNumpy(t)
	resp = postJSON(t, ts.URL+"/inspect/attention?format=npz", `{`+msgs+`,"layers":[2]}`)
	archive := readAll(t, resp)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/zip" ||
		!strings.Contains(resp.Header.Get("Content-Disposition"), `filename="attention.npz"`) {
		t.Fatalf("npz: status %d, headers %v", resp.StatusCode, resp.Header)
	}
	path := filepath.Join(t.TempDir(), "a.npz")
	if err := os.WriteFile(path, archive, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := exec.Command(python, "-c", `import sys, numpy as np
z = np.load(sys.argv[1])
print(z["attn"].dtype, z["attn"].shape, z["layers"].tolist(), z["token_ids"].tolist() == list(sys.argv[2].encode()), float(z["attn"][0, 1, 3].sum()))`,
		path, string(window)).CombinedOutput()
	if err != nil || strings.TrimSpace(string(got)) != fmt.Sprintf("float32 (1, 2, %d, %d) [2] True 1.0", len(window), len(window)) {
		t.Fatalf("numpy read %q (%v)", got, err)
	}
}

func TestAttentionRefusals(t *testing.T) {
	cfg := testConfig()
	cfg.MaxAttentionFloats = 2 * 2 * 20 * 20 // two layers over the 20-token "hi" window
	fake := newFakeEngine()
	ts := startServer(t, cfg, fake)
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	resp := postJSON(t, ts.URL+"/inspect/attention", `{`+msgs+`,"layers":[0,1]}`)
	if readAll(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("at the bound: %d", resp.StatusCode)
	}
	wantDetail(t, postJSON(t, ts.URL+"/inspect/attention", `{`+msgs+`,"layers":[0,1,2]}`),
		"the answer would hold 3 layers × 2 heads × 20 × 20 tokens = 2400 attention probabilities, more than this server's limit of 1600 (MAX_ATTENTION_FLOATS)")
	// The bound counts the tokens still to be generated.
	wantDetail(t, postJSON(t, ts.URL+"/inspect/attention", `{`+msgs+`,"layers":[0],"max_new_tokens":9}`), "1 layers × 2 heads × 29 × 29 tokens")
	wantDetail(t, postJSON(t, ts.URL+"/inspect/attention?format=csv", `{`+msgs+`}`), `format must be "json" or "npz", not "csv"`)
	wantDetail(t, postJSON(t, ts.URL+"/inspect/attention", `{`+msgs+`,"layers":[]}`), "layers must not be empty")
	wantDetail(t, postJSON(t, ts.URL+"/inspect/attention", `{`+msgs+`,"layers":[1,1]}`), "layers lists layer 1 twice")
	wantDetail(t, postJSON(t, ts.URL+"/inspect/attention", `{`+msgs+`,"layers":"every"}`), `layers must be "all" or a list`)
	wantDetail(t, postJSON(t, ts.URL+"/inspect/attention", `{`+msgs+`,"ablate":[{"layer":0,"head":5}]}`), "ablate[0].head must be in [0, 1]")
	wantDetail(t, postJSON(t, ts.URL+"/inspect/attention", `{"layers":[0]}`), "messages is required")

	// A window longer than the bytes (a tokenizer's) is caught once known.
	fake.splitPrompt = true
	wantDetail(t, postJSON(t, ts.URL+"/inspect/attention", `{`+msgs+`,"layers":[0]}`), "1 layers × 2 heads × 40 × 40 tokens = 3200")
	fake.splitPrompt = false

	fake.refuse = fmt.Errorf("attention: %w", engine.ErrKVFull)
	resp = postJSON(t, ts.URL+"/inspect/attention", `{`+msgs+`,"layers":[0]}`)
	if resp.Header.Get("Retry-After") != "1" {
		t.Errorf("busy without Retry-After")
	}
	wantError(t, resp, 503, "busy", "Server busy, please retry")
	fake.refuse = errFakeEngine
	wantError(t, postJSON(t, ts.URL+"/inspect/attention", `{`+msgs+`,"layers":[0]}`), 500, "engine_error", "Attention inspection failed")
}
