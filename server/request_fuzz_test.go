package server

// Fuzzing the request decoders (docs/RELIABILITY.md, "Fuzzing"): whatever the
// bytes, the answer is either a request within every bound or one validation
// message, never a panic and never a silently altered prompt.

import (
	"encoding/json"
	"errors"
	"math"
	"testing"
	"unicode/utf8"

	"nielsgpt/engine"
)

var fuzzSeeds = []string{
	helloChat,
	`{"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},{"role":"assistant","content":""}],"max_new_tokens":5,"temperature":0,"top_k":null,"seed":-1,"trace_layer":3}`,
	`{"messages":[{"role":"user","content":"\ud83d\ude00\u0000\\u"}],"trace_layer":0,"head":1,"max_new_tokens":2}`,
	`{"messages":[{"role":"user","content":"a\ud800"}],"trace_layer":0}`,
	`{"messages":[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]}`,
	`{"messages":[],"trace_layer":1e400,"top_k":0,"temperature":-1}`,
	"{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}",
	`{"messages":[{"role":"user","content":"x"}],"trace_layer":1.0,"seed":1e18,"max_new_tokens":1024}`,
	`null`, ``, `[`, `{"a":1}`,
}

var fuzzLimits = limits{model: fakeConfig, maxNewTokens: 1024, maxAttentionFloats: 1 << 22}

// checkAccepted holds an accepted request's prompt against the messages as
// encoding/json reads them from the same body: an independent decoder, so a
// prompt our field-by-field parser altered shows up as a difference.
func checkAccepted(t *testing.T, body, prompt []byte, maxNew int) {
	if !utf8.Valid(prompt) {
		t.Fatalf("accepted a prompt that is not UTF-8: %q", prompt)
	}
	var fields map[string]json.RawMessage
	var messages []engine.Message
	if err := json.Unmarshal(body, &fields); err != nil {
		t.Fatalf("accepted a body encoding/json refuses: %v", err)
	}
	if err := json.Unmarshal(fields["messages"], &messages); err != nil {
		t.Fatalf("accepted messages encoding/json refuses: %v", err)
	}
	if string(engine.FormatTranscript(messages)) != string(prompt) {
		t.Fatalf("prompt %q does not match the messages %+v", prompt, messages)
	}
	if maxNew < 0 || maxNew > fuzzLimits.maxNewTokens {
		t.Fatalf("max_new_tokens %d out of bounds", maxNew)
	}
}

func checkRefused(t *testing.T, err error) {
	var v *validationError
	if !errors.As(err, &v) || v.msg == "" || !utf8.ValidString(v.msg) {
		t.Fatalf("refusal is not a clear validation error: %#v", err)
	}
}

// fuzzParser feeds the seeds and the fuzzer's bodies to parse: a refusal must
// be one clear validation message, an acceptance a request within bounds
// (checkAccepted, then inBounds for the endpoint's own fields).
func fuzzParser[R any](f *testing.F, parse func([]byte, limits) (R, []string, error), prompt func(R) ([]byte, int), inBounds func(R) bool) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, _, err := parse(body, fuzzLimits)
		if err != nil {
			checkRefused(t, err)
			return
		}
		p, maxNew := prompt(req)
		checkAccepted(t, body, p, maxNew)
		if !inBounds(req) {
			t.Fatalf("accepted out-of-range request %+v", req)
		}
	})
}

func FuzzParseChatRequest(f *testing.F) {
	fuzzParser(f, parseChatRequest,
		func(r engine.GenerateRequest) ([]byte, int) {
			return engine.FormatTranscript(r.Messages), r.MaxNewTokens
		},
		func(r engine.GenerateRequest) bool {
			s := r.Sampling
			return r.TraceLayer >= 0 && r.TraceLayer < fakeConfig.Layers && !math.IsNaN(s.Temperature) &&
				s.Temperature >= 0 && s.Temperature <= maxTemperature && s.TopK >= 0 && s.TopK <= fakeConfig.Vocab &&
				layersInBounds(r.TraceLayers) && ablateInBounds(r.Ablate)
		})
}

func FuzzParseAttentionRequest(f *testing.F) {
	fuzzParser(f, parseAttentionRequest,
		func(r engine.FullAttnRequest) ([]byte, int) {
			return engine.FormatTranscript(r.Messages), r.MaxNewTokens
		},
		func(r engine.FullAttnRequest) bool {
			return len(r.Layers) > 0 && layersInBounds(r.Layers) && ablateInBounds(r.Ablate)
		})
}

// Scored text is checked on its own: it may come from text, not messages.
func FuzzParseScoreRequest(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, _, err := parseScoreRequest(body, fuzzLimits)
		if err != nil {
			checkRefused(t, err)
			return
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(body, &fields); err != nil {
			t.Fatalf("accepted a body encoding/json refuses: %v", err)
		}
		var text string
		var messages []engine.Message
		want := []byte(nil)
		if raw, ok := fields["text"]; ok {
			_ = json.Unmarshal(raw, &text)
			want = []byte(text)
		} else {
			_ = json.Unmarshal(fields["messages"], &messages)
			want = engine.FormatConversation(messages)
		}
		scored := req.Text
		if len(req.Messages) > 0 {
			if len(req.Text) > 0 {
				t.Fatalf("both text and messages reach the engine: %+v", req)
			}
			scored = engine.FormatConversation(req.Messages)
		}
		if len(scored) == 0 || string(scored) != string(want) || !utf8.Valid(scored) {
			t.Fatalf("scored %q, want %q", scored, want)
		}
		if req.TopN < 0 || req.TopN > engine.MaxTopLogprobs || !ablateInBounds(req.Ablate) {
			t.Fatalf("accepted out-of-range request %+v", req)
		}
	})
}

func layersInBounds(layers []int) bool {
	seen := map[int]bool{}
	for _, l := range layers {
		if l < 0 || l >= fakeConfig.Layers || seen[l] {
			return false
		}
		seen[l] = true
	}
	return true
}

func ablateInBounds(heads []engine.Head) bool {
	seen := map[engine.Head]bool{}
	for _, h := range heads {
		if h.Layer < 0 || h.Layer >= fakeConfig.Layers || h.Head < 0 || h.Head >= fakeConfig.Heads || seen[h] {
			return false
		}
		seen[h] = true
	}
	return len(heads) <= fakeConfig.Layers*fakeConfig.Heads
}

func FuzzParseFullAttnRequest(f *testing.F) {
	fuzzParser(f, parseFullAttnRequest,
		func(r fullAttnRequest) ([]byte, int) {
			return engine.FormatTranscript(r.Messages), r.MaxNewTokens
		},
		func(r fullAttnRequest) bool {
			return len(r.Layers) == 1 && r.Layers[0] >= 0 && r.Layers[0] < fakeConfig.Layers && r.head >= 0 && r.head < fakeConfig.Heads &&
				ablateInBounds(r.Ablate)
		})
}

// A default above the operator's cap is held to the cap, not let through.
func TestDefaultMaxNewTokensHeldToCap(t *testing.T) {
	lim := limits{model: fakeConfig, maxNewTokens: 5}
	req, _, err := parseChatRequest([]byte(helloChat), lim)
	if err != nil {
		t.Fatal(err)
	}
	if req.MaxNewTokens != 5 {
		t.Fatalf("max_new_tokens defaulted to %d with MAX_NEW_TOKENS=5", req.MaxNewTokens)
	}
}
