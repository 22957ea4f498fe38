package server

// The HTTP layer over the real engine and a real (tiny) model: what the
// stream carries must be exactly what the engine generates for the same
// request, and the attention it reports must be well-formed probabilities.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"nielsgpt/engine"
	"nielsgpt/modelsource"
)

// loadTinyModel converts the tiny checkpoint fixture and loads it through
// modelsource.Load, the path `nielsgpt serve --model X.pt` takes.
func loadTinyModel(t *testing.T) Engine {
	t.Helper()
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	pt, err := os.ReadFile("../convert/testdata/tiny_f32.pt")
	if err != nil {
		t.Fatal(err)
	}
	cfg := modelsource.DefaultConfig()
	cfg.Model = filepath.Join(t.TempDir(), "tiny.pt")
	cfg.Threads = 1
	if err := os.WriteFile(cfg.Model, pt, 0o644); err != nil {
		t.Fatal(err)
	}
	model, _, err := modelsource.Load(context.Background(), cfg, modelsource.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(model.Close)
	return model
}

func TestRealEngineChatStream(t *testing.T) {
	eng := loadTinyModel(t)
	ts := startServer(t, testConfig(), eng)
	mc := eng.Config()

	body := `{"messages":[{"role":"user","content":"hi"}],"max_new_tokens":12,"temperature":0.8,"top_k":20,"seed":7,"trace_layer":1}`
	events := readEvents(t, postJSON(t, ts.URL+"/chat/stream", body))
	if len(events) < 1 || events[len(events)-1].Type != "done" {
		t.Fatalf("stream did not end with done: %+v", events[len(events)-1])
	}
	steps := (len(events) - 1) / 2

	// The same request straight to the engine.
	chat := []engine.Message{{Role: "user", Content: "hi"}}
	prompt := engine.FormatTranscript(chat)
	var direct []int
	result, err := eng.Generate(context.Background(), engine.GenerateRequest{
		Messages: chat, MaxNewTokens: 12, TraceLayer: 1,
		Sampling: engine.Sampling{Temperature: 0.8, TopK: 20, Seed: 7},
	}, func(s *engine.Step) error {
		direct = append(direct, s.TokenID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if steps != len(direct) {
		t.Fatalf("stream has %d steps, the engine made %d", steps, len(direct))
	}
	for i := range steps {
		var tok tokenEvent
		decodeStrict(t, events[2*i].Data, &tok)
		if *tok.Step != i || *tok.TokenID != direct[i] {
			t.Fatalf("step %d: token %d, engine %d", i, *tok.TokenID, direct[i])
		}
		var tr traceEvent
		decodeStrict(t, events[2*i+1].Data, &tr)
		window := min(len(prompt)+i, mc.Context)
		if len(tr.Attn) != mc.Heads {
			t.Fatalf("step %d: %d attention rows, want H=%d", i, len(tr.Attn), mc.Heads)
		}
		for h, row := range tr.Attn {
			if len(row) != window {
				t.Fatalf("step %d head %d: row of %d, window %d", i, h, len(row), window)
			}
			sum := 0.0
			for _, p := range row {
				sum += p
			}
			if math.Abs(sum-1) > 1e-4 {
				t.Fatalf("step %d head %d: attention sums to %v", i, h, sum)
			}
		}
		if len(tr.TopK) == 0 || len(tr.TopK) > 10 || *tr.Entropy < 0 {
			t.Fatalf("step %d: trace %s", i, events[2*i+1].Data)
		}
	}
	var done struct{ Reply string }
	if err := json.Unmarshal([]byte(events[len(events)-1].Data), &done); err != nil || done.Reply != result.Reply {
		t.Fatalf("done %q, engine reply %q", events[len(events)-1].Data, result.Reply)
	}
}

func TestRealEngineFullAttn(t *testing.T) {
	eng := loadTinyModel(t)
	ts := startServer(t, testConfig(), eng)
	mc := eng.Config()
	resp := postJSON(t, ts.URL+"/inspect/full_attn", `{"messages":[{"role":"user","content":"hello there"}],"trace_layer":1,"head":1,"max_new_tokens":3,"seed":5}`)
	body := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var out struct {
		Layer, Head   int
		TokenIDs      []int `json:"token_ids"`
		Tokens        []string
		TokensDisplay []string `json:"tokens_display"`
		Attn          [][]float64
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	// The window is the last T tokens of the prompt and the 3 tokens that
	// default sampling with seed 5 produces.
	chat := []engine.Message{{Role: "user", Content: "hello there"}}
	prompt := engine.FormatTranscript(chat)
	var generated []byte
	if _, err := eng.Generate(context.Background(), engine.GenerateRequest{
		Messages: chat, MaxNewTokens: 3, TraceLayer: -1,
		Sampling: engine.Sampling{Temperature: 0.9, TopK: 50, Seed: 5},
	}, func(s *engine.Step) error {
		generated = append(generated, byte(s.TokenID))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	all := append(prompt, generated...)
	window := all[max(0, len(all)-mc.Context):]
	if len(out.TokenIDs) != len(window) || len(out.Attn) != len(window) {
		t.Fatalf("%d tokens, %d rows; want the %d-token window", len(out.TokenIDs), len(out.Attn), len(window))
	}
	for i, id := range out.TokenIDs {
		if id != int(window[i]) || out.Tokens[i] != engine.TokenText(id) || out.TokensDisplay[i] != engine.TokenDisplay(id) {
			t.Fatalf("token %d: %d %q, want %d", i, id, out.Tokens[i], window[i])
		}
	}
	wantCausalRows(t, out.Attn, 1e-4)
}

// /inspect/score over the real model says exactly what engine.Score says
// for the same bytes, and its numbers are a distribution's.
func TestRealEngineScore(t *testing.T) {
	eng := loadTinyModel(t)
	ts := startServer(t, testConfig(), eng)
	text := "user: hello there, how are you?\n"
	out := postScore(t, ts.URL, `{"messages":[{"role":"user","content":"hello there, how are you?"}],"top_k":3}`)
	direct, err := eng.Score(context.Background(), engine.ScoreRequest{Text: []byte(text), TopN: 3})
	if err != nil {
		t.Fatal(err)
	}
	if *out.Offset != direct.Offset || len(out.TokenIDs) != len(direct.TokenIDs) || out.Scores[0] != nil {
		t.Fatalf("offset %d, %d tokens; engine %d, %d", *out.Offset, len(out.TokenIDs), direct.Offset, len(direct.TokenIDs))
	}
	sum := 0.0
	for i := 1; i < len(direct.Positions); i++ {
		got, want := out.Scores[i], direct.Positions[i]
		if out.TokenIDs[i] != direct.TokenIDs[i] || *got.Logprob != want.Logprob || *got.Entropy != want.Entropy ||
			*got.Rank != want.Rank || len(got.TopK) != 3 {
			t.Fatalf("scores[%d] %+v, engine %+v", i, got, want)
		}
		for j, c := range want.Top {
			if got.TopK[j].TokenID != c.TokenID || got.TopK[j].Logprob != c.Logprob {
				t.Fatalf("scores[%d].topk[%d] %+v, engine %+v", i, j, got.TopK[j], c)
			}
		}
		if *got.Logprob > 0 || *got.Rank < 1 || (*got.Rank == 1) != (got.TopK[0].TokenID == out.TokenIDs[i]) {
			t.Fatalf("scores[%d] is not a distribution's: %+v", i, got)
		}
		sum += want.Logprob
	}
	mean := sum / float64(len(direct.Positions)-1)
	if math.Abs(*out.MeanLogprob-mean) > 1e-12 || math.Abs(*out.BitsPerByte+mean/math.Ln2) > 1e-12 {
		t.Fatalf("mean_logprob %v, bits_per_byte %v; want %v", *out.MeanLogprob, *out.BitsPerByte, mean)
	}
}

// /inspect/attention over the real model: each head of each requested layer
// is the matrix /inspect/full_attn gives for that layer and head, over the
// same window, for both encodings.
func TestRealEngineAttention(t *testing.T) {
	eng := loadTinyModel(t)
	ts := startServer(t, testConfig(), eng)
	msgs := `"messages":[{"role":"user","content":"hello there"}],"max_new_tokens":3,"seed":5`
	resp := postJSON(t, ts.URL+"/inspect/attention", `{`+msgs+`,"layers":[1,0]}`)
	body := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var out attentionJSON
	decodeStrict(t, string(body), &out)
	heads := eng.Config().Heads
	if len(out.Attn) != 2 || len(out.Attn[0]) != heads {
		t.Fatalf("attn is %d layers", len(out.Attn))
	}
	for i, layer := range out.Layers {
		for h := range heads {
			resp := postJSON(t, ts.URL+"/inspect/full_attn", fmt.Sprintf(`{%s,"trace_layer":%d,"head":%d}`, msgs, layer, h))
			var full struct {
				Layer, Head   int
				TokenIDs      []int `json:"token_ids"`
				Tokens        []string
				TokensDisplay []string `json:"tokens_display"`
				Attn          [][]float64
			}
			if err := json.Unmarshal(readAll(t, resp), &full); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(full.TokenIDs, out.TokenIDs) {
				t.Fatalf("layer %d head %d: window %v, /inspect/full_attn %v", layer, h, out.TokenIDs, full.TokenIDs)
			}
			wantCausalRows(t, out.Attn[i][h], 1e-4)
			for r, row := range full.Attn {
				for c, p := range row {
					if math.Abs(out.Attn[i][h][r][c]-p) > 1e-6 {
						t.Fatalf("layer %d head %d [%d][%d]: %v, /inspect/full_attn %v", layer, h, r, c, out.Attn[i][h][r][c], p)
					}
				}
			}
		}
	}
}

// Deeper traces over the real model: the stream carries exactly the layers,
// lens and (ablated) tokens the engine computes for the same request, and
// ablating heads changes what is generated.
func TestRealEngineDeeperTraces(t *testing.T) {
	eng := loadTinyModel(t)
	ts := startServer(t, testConfig(), eng)
	mc := eng.Config()
	chat := []engine.Message{{Role: "user", Content: "hi"}}
	greedy := func(ablate []engine.Head) ([]*engine.Step, error) {
		var steps []*engine.Step
		_, err := eng.Generate(context.Background(), engine.GenerateRequest{
			Messages: chat, MaxNewTokens: 12, TraceLayer: 0, TraceLayers: []int{1, 0}, LogitLens: true, Ablate: ablate,
		}, func(s *engine.Step) error {
			steps = append(steps, s.Clone())
			return nil
		})
		return steps, err
	}
	ablate := []engine.Head{{Layer: 0, Head: 0}, {Layer: 1, Head: 1}}
	direct, err := greedy(ablate)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := greedy(nil)
	if err != nil {
		t.Fatal(err)
	}
	differs := false
	for i := range min(len(direct), len(plain)) {
		differs = differs || direct[i].TokenID != plain[i].TokenID || direct[i].Entropy != plain[i].Entropy
	}
	if !differs {
		t.Fatal("ablating two heads changed nothing: the test cannot tell whether ablate reaches the engine")
	}

	body := `{"messages":[{"role":"user","content":"hi"}],"max_new_tokens":12,"temperature":0,"trace_layer":0,
		"trace_layers":[1,0],"logit_lens":true,"ablate":[{"layer":0,"head":0},{"layer":1,"head":1}]}`
	events := readEvents(t, postJSON(t, ts.URL+"/chat/stream", body))
	if len(events) != 2*len(direct)+1 {
		t.Fatalf("%d events for %d steps", len(events), len(direct))
	}
	for i, want := range direct {
		var tok tokenEvent
		decodeStrict(t, events[2*i].Data, &tok)
		var tr deepTraceEvent
		decodeStrict(t, events[2*i+1].Data, &tr)
		if *tok.TokenID != want.TokenID || float32(tr.Entropy) != float32(want.Entropy) {
			t.Fatalf("step %d: token %d entropy %v, engine %d %v", i, *tok.TokenID, tr.Entropy, want.TokenID, want.Entropy)
		}
		if len(tr.Layers) != 2 || *tr.Layers[0].Layer != 1 || *tr.Layers[1].Layer != 0 || len(tr.Lens) != mc.Layers {
			t.Fatalf("step %d: %s", i, events[2*i+1].Data)
		}
		for j, l := range want.Layers {
			for h, row := range l.Attn {
				for k, p := range row {
					if float32(tr.Layers[j].Attn[h][k]) != p {
						t.Fatalf("step %d layer %d head %d [%d]: %v, engine %v", i, l.Layer, h, k, tr.Layers[j].Attn[h][k], p)
					}
				}
			}
		}
		for l, lens := range want.Lens {
			got := tr.Lens[l]
			if *got.Layer != lens.Layer || float32(*got.Entropy) != float32(lens.Entropy) || len(got.TopK) != len(lens.Candidates) || len(got.TopK) > engine.LensTop {
				t.Fatalf("step %d lens %d: %+v, engine %+v", i, l, got, lens)
			}
			for k, c := range lens.Candidates {
				if got.TopK[k].TokenID != c.TokenID || float32(got.TopK[k].Prob) != float32(c.Prob) {
					t.Fatalf("step %d lens %d topk %d: %+v, engine %+v", i, l, k, got.TopK[k], c)
				}
			}
		}
	}
}
