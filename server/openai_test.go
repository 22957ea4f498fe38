package server

// The OpenAI-compatible routes against the fake engine: exact shapes,
// streaming order, stop strings, log-probabilities, errors in OpenAI's shape
// and API keys. openai_sdk_test.go drives the same routes with OpenAI's own
// Go SDK over the real engine.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"

	"nielsgpt/engine"
	"nielsgpt/internal/testkit"
)

const chatHi = `{"model":"anything","messages":[{"role":"user","content":"hello"}]`

// readChunks reads an OpenAI stream: every `data:` payload up to [DONE],
// which must come last.
func readChunks(t *testing.T, resp *http.Response) []map[string]any {
	t.Helper()
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var chunks []map[string]any
	done := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || done {
			t.Fatalf("unexpected line %q (after [DONE]: %v)", line, done)
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var chunk map[string]any
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			t.Fatalf("chunk %q: %v", data, err)
		}
		chunks = append(chunks, chunk)
	}
	if !done {
		t.Fatal("stream did not end with data: [DONE]")
	}
	return chunks
}

func decodeBody(t *testing.T, resp *http.Response, status int) map[string]any {
	t.Helper()
	body := readAll(t, resp)
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	return v
}

func TestOpenAIModels(t *testing.T) {
	ts := startServer(t, testConfig(), newFakeEngine())
	resp, err := http.Get(ts.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	v := decodeBody(t, resp, http.StatusOK)
	data := v["data"].([]any)
	if v["object"] != "list" || len(data) != 1 || data[0].(map[string]any)["id"] != modelID {
		t.Fatalf("models %v", v)
	}
}

func TestOpenAIChatCompletion(t *testing.T) {
	fake := newFakeEngine()
	ts := startServer(t, testConfig(), fake)
	v := decodeBody(t, postJSON(t, ts.URL+"/v1/chat/completions",
		chatHi+`,"max_tokens":5,"temperature":0,"seed":3,"logprobs":true,"top_logprobs":2,"frequency_penalty":0.5}`), http.StatusOK)
	choice := v["choices"].([]any)[0].(map[string]any)
	msg := choice["message"].(map[string]any)
	if v["object"] != "chat.completion" || !strings.HasPrefix(v["id"].(string), "chatcmpl-") || v["model"] != modelID ||
		msg["role"] != "assistant" || msg["content"] != fake.reply[:5] || choice["finish_reason"] != "length" {
		t.Fatalf("completion %v", v)
	}
	content := choice["logprobs"].(map[string]any)["content"].([]any)
	first := content[0].(map[string]any)
	if len(content) != 5 || first["token"] != "h" || math.Abs(first["logprob"].(float64)-math.Log(0.75)) > 1e-12 ||
		len(first["top_logprobs"].([]any)) != 2 || first["bytes"].([]any)[0].(float64) != 'h' {
		t.Fatalf("logprobs %v", content)
	}
	usage := v["usage"].(map[string]any)
	prompt := float64(len("user: hello\nassistant: "))
	if usage["prompt_tokens"] != prompt || usage["completion_tokens"] != 5.0 || usage["total_tokens"] != prompt+5 {
		t.Fatalf("usage %v", usage)
	}
	gen := fake.lastGenerate()
	if len(gen.Messages) == 0 || len(gen.Prompt) > 0 || gen.Sampling.Temperature != 0 || gen.Sampling.Seed != 3 || gen.TopLogprobs != 2 || !gen.Logprobs {
		t.Fatalf("engine asked %+v", gen)
	}
}

// A stream: the role first and alone, content deltas that join to the
// reply, finish_reason, then usage, then [DONE]; a stop string never shows.
func TestOpenAIChatStream(t *testing.T) {
	fake := newFakeEngine() // reply: hi "there"\n\ok
	ts := startServer(t, testConfig(), fake)
	chunks := readChunks(t, postJSON(t, ts.URL+"/v1/chat/completions",
		chatHi+`,"stream":true,"stream_options":{"include_usage":true},"stop":["ere"]}`))
	delta := func(i int) map[string]any {
		return chunks[i]["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any)
	}
	if d := delta(0); d["role"] != "assistant" || d["content"] != "" {
		t.Fatalf("first delta %v", d)
	}
	var text strings.Builder
	for i := 1; i < len(chunks)-1; i++ {
		if _, hasRole := delta(i)["role"]; hasRole {
			t.Fatalf("role repeated in chunk %d", i)
		}
		if c, ok := delta(i)["content"].(string); ok {
			text.WriteString(c)
		}
	}
	if text.String() != `hi "th` {
		t.Fatalf("streamed %q, want the reply cut before the stop string", text.String())
	}
	finish := chunks[len(chunks)-2]["choices"].([]any)[0].(map[string]any)["finish_reason"]
	last := chunks[len(chunks)-1]
	if finish != "stop" || len(last["choices"].([]any)) != 0 || last["usage"].(map[string]any)["completion_tokens"].(float64) < 6 {
		t.Fatalf("finish %v, last chunk %v", finish, last)
	}
}

// Legacy completions: raw prompts, echo with the prompt scored (first entry
// null), max_tokens 0 scoring only.
func TestOpenAICompletionEcho(t *testing.T) {
	fake := newFakeEngine()
	ts := startServer(t, testConfig(), fake)
	v := decodeBody(t, postJSON(t, ts.URL+"/v1/completions",
		`{"model":"m","prompt":"abc","max_tokens":0,"echo":true,"logprobs":1}`), http.StatusOK)
	choice := v["choices"].([]any)[0].(map[string]any)
	lp := choice["logprobs"].(map[string]any)
	tokens, logprobs := lp["tokens"].([]any), lp["token_logprobs"].([]any)
	if choice["text"] != "abc" || len(tokens) != 3 || tokens[2] != "c" || logprobs[0] != nil ||
		math.Abs(logprobs[2].(float64)-math.Log(1.0/3)) > 1e-12 || lp["text_offset"].([]any)[2] != 2.0 ||
		lp["top_logprobs"].([]any)[0] != nil || v["object"] != "text_completion" || choice["finish_reason"] != "length" {
		t.Fatalf("echo %v", v)
	}
	if gen := fake.lastGenerate(); len(gen.Messages) > 0 || string(gen.Prompt) != "abc" || gen.MaxNewTokens != 0 {
		t.Fatalf("engine asked %+v", gen)
	}

	v = decodeBody(t, postJSON(t, ts.URL+"/v1/completions", `{"prompt":["ab"],"max_tokens":3}`), http.StatusOK)
	if text := v["choices"].([]any)[0].(map[string]any)["text"]; text != fake.reply[:3] {
		t.Fatalf("text %v", text)
	}
}

// Errors use OpenAI's shape on /v1 and keep the original's elsewhere.
func TestOpenAIErrors(t *testing.T) {
	cfg := testConfig()
	cfg.RateLimitBurst, cfg.RateLimitPerMin = 2, 1
	ts := startServer(t, cfg, newFakeEngine())
	wantOAI := func(resp *http.Response, status int, code, param string) {
		t.Helper()
		e := decodeBody(t, resp, status)["error"].(map[string]any)
		if e["message"] == "" || e["type"] == "" || (code != "" && e["code"] != code) || (param != "" && e["param"] != param) {
			t.Fatalf("error %v, want code %q param %q", e, code, param)
		}
	}
	resp, _ := http.Get(ts.URL + "/v1/nothing")
	wantOAI(resp, http.StatusNotFound, "not_found", "")
	wantOAI(postJSON(t, ts.URL+"/v1/chat/completions", chatHi+`,"n":2}`), http.StatusBadRequest, "invalid_value", "n")
	wantOAI(postJSON(t, ts.URL+"/v1/chat/completions", chatHi+`,"temperature":3}`), http.StatusBadRequest, "", "temperature")
	resp = postJSON(t, ts.URL+"/v1/completions", `{"prompt":"x"}`)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		wantOAI(resp, http.StatusTooManyRequests, "rate_limited", "")
	}
	wantOAI(resp, http.StatusTooManyRequests, "rate_limited", "")
	// The original endpoint keeps its own shape.
	wantError(t, postJSON(t, ts.URL+"/chat/stream", helloChat), http.StatusTooManyRequests, "rate_limited", "Rate limit exceeded")
}

func TestAPIKeys(t *testing.T) {
	cfg := testConfig()
	cfg.APIKeys = []string{"k-one", "k-two"}
	logs := &testkit.SyncBuffer{}
	s, err := New(cfg, nil, NewLogger("json", logs))
	if err != nil {
		t.Fatal(err)
	}
	s.SetEngine(newFakeEngine())
	url := startWith(t, s)

	resp := postJSON(t, url+"/v1/chat/completions", chatHi+`}`, "Authorization", "Bearer wrong")
	e := decodeBody(t, resp, http.StatusUnauthorized)["error"].(map[string]any)
	if e["type"] != "authentication_error" || e["code"] != "unauthorized" {
		t.Fatalf("401 on /v1: %v", e)
	}
	wantError(t, postJSON(t, url+"/chat/stream", helloChat), http.StatusUnauthorized, "unauthorized",
		"Missing or invalid API key (Authorization: Bearer <key>)")
	decodeBody(t, postJSON(t, url+"/v1/chat/completions", chatHi+`}`, "Authorization", "Bearer k-two"), http.StatusOK)
	resp = postJSON(t, url+"/chat/stream", helloChat, "Authorization", "Bearer k-one")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a valid key on /chat/stream: %d", resp.StatusCode)
	}
	readAll(t, resp)
	if health, _ := http.Get(url + "/health"); health.StatusCode != http.StatusOK {
		t.Fatalf("/health needs no key: %d", health.StatusCode)
	}
	if strings.Contains(logs.String(), "k-one") || strings.Contains(logs.String(), "wrong") {
		t.Fatalf("a key reached the log:\n%s", logs.String())
	}
}

// Deltas are whole characters, and a stop sequence's first bytes wait until
// it is clear they are not one.
func TestTextStreamHoldsBack(t *testing.T) {
	ts := newTextStream([][]byte{[]byte("\nuser: ")})
	var got []string
	for _, b := range []byte("é€\nus!") {
		got = append(got, ts.push([]byte{b}))
	}
	want := []string{"", "é", "", "", "€", "", "", "", "\nus!"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("deltas %q, want %q", got, want)
	}
	if rest := ts.rest([]byte("é€\nus!")); rest != "" {
		t.Fatalf("rest %q after everything was sent", rest)
	}
}

// The nielsgpt extension: trace_layers, logit_lens and ablate as on
// /chat/stream, with each step's layers and lens in every choice, streaming
// and not.
func TestOpenAIExtension(t *testing.T) {
	fake := newFakeEngine()
	ts := startServer(t, testConfig(), fake)
	ext := `,"nielsgpt":{"trace_layers":[2],"logit_lens":true,"ablate":[{"layer":1,"head":0}]}`
	check := func(what string, step map[string]any, tok byte) {
		t.Helper()
		layers, _ := step["layers"].([]any)
		lens, _ := step["lens"].([]any)
		if len(layers) != 1 || len(lens) != fakeConfig.Layers || step["attn"] != nil ||
			math.Abs(step["entropy"].(float64)-fakeEntropy([]engine.Head{{}})) > 1e-6 {
			t.Fatalf("%s: nielsgpt %v", what, step)
		}
		l := layers[0].(map[string]any)
		if l["layer"] != 2.0 || len(l["attn"].([]any)) != fakeConfig.Heads {
			t.Fatalf("%s: layers %v", what, layers)
		}
		top := lens[3].(map[string]any)["topk"].([]any)[0].(map[string]any)
		if lens[3].(map[string]any)["layer"] != 3.0 || top["token_id"] != float64((int(tok)+3)%256) || top["prob"] != 0.5 {
			t.Fatalf("%s: lens %v", what, lens)
		}
	}

	v := decodeBody(t, postJSON(t, ts.URL+"/v1/chat/completions", chatHi+`,"max_tokens":3`+ext+`}`), http.StatusOK)
	steps := v["choices"].([]any)[0].(map[string]any)["nielsgpt"].(map[string]any)["steps"].([]any)
	if len(steps) != 3 {
		t.Fatalf("%d steps", len(steps))
	}
	for i, st := range steps {
		check(fmt.Sprintf("chat step %d", i), st.(map[string]any), fake.reply[i])
	}
	gen := fake.lastGenerate()
	if gen.TraceLayer != -1 || !slices.Equal(gen.TraceLayers, []int{2}) || !gen.LogitLens || !slices.Equal(gen.Ablate, []engine.Head{{Layer: 1}}) {
		t.Fatalf("engine asked %+v", gen)
	}

	chunks := readChunks(t, postJSON(t, ts.URL+"/v1/completions", `{"prompt":"x","max_tokens":2,"stream":true`+ext+`}`))
	n := 0
	for _, chunk := range chunks {
		choices := chunk["choices"].([]any)
		if len(choices) == 0 {
			continue
		}
		if st, ok := choices[0].(map[string]any)["nielsgpt"].(map[string]any); ok {
			check(fmt.Sprintf("streamed step %d", n), st, fake.reply[n])
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d streamed steps carried nielsgpt, want 2", n)
	}

	// Echoed prompt scores are the ablated model's too.
	decodeBody(t, postJSON(t, ts.URL+"/v1/completions", `{"prompt":"abc","max_tokens":0,"echo":true,"logprobs":0`+ext+`}`), http.StatusOK)
	if got := fake.lastScoreRequest(); !slices.Equal(got.Ablate, []engine.Head{{Layer: 1}}) {
		t.Fatalf("echo scored without the ablation: %+v", got)
	}

	for body, param := range map[string]string{
		`,"nielsgpt":{"trace_layers":[9]}`:                                   "nielsgpt.trace_layers[0]",
		`,"nielsgpt":{"logit_lens":"on"}`:                                    "nielsgpt.logit_lens",
		`,"nielsgpt":{"ablate":[{"layer":0}]}`:                               "nielsgpt.ablate[0].head",
		`,"nielsgpt":{"ablate":[{"layer":0,"head":0},{"layer":0,"head":0}]}`: "nielsgpt.ablate",
		`,"nielsgpt":{"trace_layer":7}`:                                      "nielsgpt.trace_layer",
		`,"nielsgpt":[]`:                                                     "nielsgpt",
	} {
		e := decodeBody(t, postJSON(t, ts.URL+"/v1/chat/completions", chatHi+body+`}`), http.StatusBadRequest)["error"].(map[string]any)
		if e["param"] != param || !strings.HasPrefix(e["message"].(string), param) {
			t.Errorf("%s: error %v, want param %s named in the message", body, e, param)
		}
	}
}

// A streaming request that the engine refuses for want of KV room gets a
// 503 in OpenAI's shape with Retry-After, before any chunk: not a 200
// stream holding an error.
func TestOpenAIStreamKVFull(t *testing.T) {
	fake := newFakeEngine()
	fake.refuse = fmt.Errorf("generating: %w", engine.ErrKVFull)
	ts := startServer(t, testConfig(), fake)
	for path, body := range map[string]string{
		"/v1/chat/completions": chatHi + `,"stream":true}`,
		"/v1/completions":      `{"prompt":"abc","stream":true,"echo":true}`,
	} {
		resp := postJSON(t, ts.URL+path, body)
		if ct := resp.Header.Get("Content-Type"); ct == "text/event-stream" || resp.Header.Get("Retry-After") != "1" {
			t.Errorf("%s: Content-Type %q, Retry-After %q", path, ct, resp.Header.Get("Retry-After"))
		}
		e := decodeBody(t, resp, http.StatusServiceUnavailable)["error"].(map[string]any)
		if e["code"] != "busy" || e["type"] != "server_error" {
			t.Errorf("%s: error %v", path, e)
		}
	}
	if got := ts.Metrics().Rejections("busy"); got != 2 {
		t.Fatalf("busy rejections %v, want 2", got)
	}
	// Once the engine has room, the same request streams.
	fake.refuse = nil
	if chunks := readChunks(t, postJSON(t, ts.URL+"/v1/chat/completions", chatHi+`,"stream":true}`)); len(chunks) < 2 {
		t.Fatalf("%d chunks", len(chunks))
	}
}
