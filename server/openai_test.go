package server

// The OpenAI-compatible routes against the fake engine: exact shapes,
// streaming order, stop strings, log-probabilities, errors in OpenAI's shape
// and API keys. openai_sdk_test.go drives the same routes with OpenAI's own
// Go SDK over the real engine.

import (
	"bufio"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"

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
	if gen.Raw || gen.Sampling.Temperature != 0 || gen.Sampling.Seed != 3 || gen.TopLogprobs != 2 || !gen.Logprobs {
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
	if gen := fake.lastGenerate(); !gen.Raw || gen.MaxNewTokens != 0 {
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
