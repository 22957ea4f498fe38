package server

// top_p and repetition_penalty on the original endpoints: validated like the
// original fields (422 naming the field), absent or null meaning off, and
// passed to the engine as given.

import (
	"testing"
)

func TestNucleusAndPenaltyFields(t *testing.T) {
	lim := limits{model: fakeConfig, maxNewTokens: 1024, windowHop: 1}
	msgs := `"messages":[{"role":"user","content":"hi"}],"trace_layer":1`
	for _, c := range []struct {
		extra         string
		topP, penalty float64
	}{
		{``, 0, 0},
		{`,"top_p":null,"repetition_penalty":null`, 0, 0},
		{`,"top_p":1`, 1, 0},
		{`,"top_p":0.9,"repetition_penalty":1.3`, 0.9, 1.3},
		{`,"top_p":1e-9,"repetition_penalty":0.5`, 1e-9, 0.5},
	} {
		chat, _, err := parseChatRequest([]byte(`{`+msgs+c.extra+`}`), lim)
		if err != nil {
			t.Fatalf("%s: %v", c.extra, err)
		}
		full, _, err := parseFullAttnRequest([]byte(`{`+msgs+`,"head":0`+c.extra+`}`), lim)
		if err != nil {
			t.Fatalf("full_attn %s: %v", c.extra, err)
		}
		for _, s := range []struct{ topP, penalty float64 }{
			{chat.Sampling.TopP, chat.Sampling.RepetitionPenalty}, {full.Sampling.TopP, full.Sampling.RepetitionPenalty},
		} {
			if s.topP != c.topP || s.penalty != c.penalty {
				t.Fatalf("%s: top_p %v repetition_penalty %v, want %v %v", c.extra, s.topP, s.penalty, c.topP, c.penalty)
			}
		}
	}

	ts := startServer(t, testConfig(), newFakeEngine())
	for _, c := range []struct{ extra, detail string }{
		{`,"top_p":0`, "top_p must be a number in (0, 1]"},
		{`,"top_p":-0.1`, "top_p must be a number in (0, 1]"},
		{`,"top_p":1.0001`, "top_p must be a number in (0, 1]"},
		{`,"top_p":"0.9"`, "top_p must be a number in (0, 1]"},
		{`,"top_p":true`, "top_p must be a number in (0, 1]"},
		{`,"repetition_penalty":0`, "repetition_penalty must be a finite number > 0"},
		{`,"repetition_penalty":-1.3`, "repetition_penalty must be a finite number > 0"},
		{`,"repetition_penalty":1e999`, "repetition_penalty must be a finite number > 0"},
		{`,"repetition_penalty":"1.3"`, "repetition_penalty must be a finite number > 0"},
		{`,"repetition_penalty":[1]`, "repetition_penalty must be a finite number > 0"},
	} {
		wantDetail(t, postJSON(t, ts.URL+"/chat/stream", `{`+msgs+c.extra+`}`), c.detail)
		wantDetail(t, postJSON(t, ts.URL+"/inspect/full_attn", `{`+msgs+`,"head":0`+c.extra+`}`), c.detail)
	}
}
