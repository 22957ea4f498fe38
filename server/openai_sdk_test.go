package server

// The OpenAI-compatible routes driven by OpenAI's official Go SDK over the
// real engine and a PyTorch fixture model: what the SDK parses is what the
// engine computed, and scoring a prompt through /v1/completions gives
// PyTorch's log-probabilities.

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"nielsgpt/engine"
	"nielsgpt/internal/testkit"
)

// loadFixtureModel loads tiny_a, the model the PyTorch goldens describe.
func loadFixtureModel(t *testing.T) *engine.Model {
	t.Helper()
	m, err := engine.LoadFile(testkit.ConvertedFixture(t, "../testdata/models/tiny_a.pt"), engine.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func sdkClient(url string, opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{
		option.WithBaseURL(url + "/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0),
	}, opts...)...)
}

func TestSDKChatMatchesTheEngine(t *testing.T) {
	m := loadFixtureModel(t)
	ts := startServer(t, testConfig(), m)
	client := sdkClient(ts.URL)
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{
		Model:     "niels-gpt",
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi there")},
		MaxTokens: openai.Int(24), Temperature: openai.Float(0), Logprobs: openai.Bool(true), TopLogprobs: openai.Int(3),
	}
	resp, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}

	var steps []*engine.Step
	direct, err := m.Generate(ctx, engine.GenerateRequest{
		Messages: []engine.Message{{Role: "user", Content: "hi there"}}, MaxNewTokens: 24, TraceLayer: -1,
		Sampling: engine.Sampling{Temperature: 0}, Logprobs: true, TopLogprobs: 3,
	}, func(s *engine.Step) error { steps = append(steps, s.Clone()); return nil })
	if err != nil {
		t.Fatal(err)
	}
	choice := resp.Choices[0]
	if choice.Message.Content != engine.DecodeBytes(direct.Generated) || len(choice.Logprobs.Content) != len(direct.Generated) {
		t.Fatalf("SDK content %q (%d logprobs), engine %q", choice.Message.Content, len(choice.Logprobs.Content), direct.Generated)
	}
	for i, lp := range choice.Logprobs.Content {
		if lp.Logprob != steps[i].Logprob || len(lp.TopLogprobs) != 3 || lp.Bytes[0] != int64(steps[i].TokenID) {
			t.Fatalf("token %d: SDK %+v, engine %+v", i, lp, steps[i])
		}
	}

	// The same request streamed, accumulated by the SDK, says the same.
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	acc := openai.ChatCompletionAccumulator{}
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if got := acc.Choices[0].Message.Content; got != choice.Message.Content {
		t.Fatalf("streamed %q, not streamed %q", got, choice.Message.Content)
	}
}

// lm-evaluation-harness scores text this way: echo, logprobs, max_tokens 0.
func TestSDKScoringMatchesPyTorch(t *testing.T) {
	raw, err := os.ReadFile("../testdata/golden/tiny_a.json")
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Prefill struct {
			Tokens []int64     `json:"tokens"`
			Logits [][]float64 `json:"logits"`
		} `json:"prefill"`
	}
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, testConfig(), loadFixtureModel(t))
	client := sdkClient(ts.URL)
	resp, err := client.Completions.New(context.Background(), openai.CompletionNewParams{
		Model:  "niels-gpt",
		Prompt: openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: g.Prefill.Tokens},
		Echo:   openai.Bool(true), Logprobs: openai.Int(1), MaxTokens: openai.Int(0),
	})
	if err != nil {
		t.Fatal(err)
	}
	lp := resp.Choices[0].Logprobs
	if len(lp.TokenLogprobs) != len(g.Prefill.Tokens) || lp.JSON.TokenLogprobs.Raw()[:6] != "[null," {
		t.Fatalf("%d log-probabilities for %d tokens (%.40s…)", len(lp.TokenLogprobs), len(g.Prefill.Tokens), lp.JSON.TokenLogprobs.Raw())
	}
	worst := 0.0
	for i := 1; i < len(g.Prefill.Tokens); i++ {
		logits := g.Prefill.Logits[i-1]
		maxv, sum := math.Inf(-1), 0.0
		for _, l := range logits {
			maxv = math.Max(maxv, l)
		}
		for _, l := range logits {
			sum += math.Exp(l - maxv)
		}
		want := logits[g.Prefill.Tokens[i]] - maxv - math.Log(sum)
		worst = math.Max(worst, math.Abs(lp.TokenLogprobs[i]-want))
	}
	if worst > 1e-4 {
		t.Fatalf("log-probabilities differ from PyTorch's by %.2e", worst)
	}
}

func TestSDKErrorsAndKeys(t *testing.T) {
	cfg := testConfig()
	cfg.APIKeys = []string{"secret-key"}
	ts := startServer(t, cfg, newFakeEngine())
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{Model: "niels-gpt", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}

	var apiErr *openai.Error
	anonymous := sdkClient(ts.URL)
	_, err := anonymous.Chat.Completions.New(ctx, params)
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || apiErr.Type != "authentication_error" {
		t.Fatalf("without the key: %v", err)
	}
	client := sdkClient(ts.URL, option.WithAPIKey("secret-key"))
	params.N = openai.Int(2)
	_, err = client.Chat.Completions.New(ctx, params)
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "n" {
		t.Fatalf("n=2: %v", err)
	}
	params.N = openai.Int(1)
	resp, err := client.Chat.Completions.New(ctx, params)
	if err != nil || resp.Choices[0].Message.Content == "" {
		t.Fatalf("with the key: %v %+v", err, resp)
	}
}

// The nielsgpt extension through the SDK, which passes the unknown request
// field through and keeps the unknown response field: the logit lens and
// ablated tokens are the engine's own.
func TestSDKExtensionMatchesTheEngine(t *testing.T) {
	m := loadFixtureModel(t)
	ts := startServer(t, testConfig(), m)
	client := sdkClient(ts.URL)
	ctx := context.Background()
	ablate := []engine.Head{{Layer: 0, Head: 1}}
	resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "niels-gpt", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi there")},
		MaxTokens: openai.Int(8), Temperature: openai.Float(0),
	}, option.WithJSONSet("nielsgpt", map[string]any{"logit_lens": true, "trace_layers": []int{1}, "ablate": []map[string]int{{"layer": 0, "head": 1}}}))
	if err != nil {
		t.Fatal(err)
	}
	var steps []*engine.Step
	direct, err := m.Generate(ctx, engine.GenerateRequest{
		Messages: []engine.Message{{Role: "user", Content: "hi there"}}, MaxNewTokens: 8, TraceLayer: -1, TraceLayers: []int{1}, LogitLens: true, Ablate: ablate,
	}, func(s *engine.Step) error { steps = append(steps, s.Clone()); return nil })
	if err != nil {
		t.Fatal(err)
	}
	choice := resp.Choices[0]
	if choice.Message.Content != engine.DecodeBytes(direct.Generated) {
		t.Fatalf("SDK content %q, engine %q", choice.Message.Content, direct.Generated)
	}
	var ext struct {
		Steps []struct {
			Entropy float64 `json:"entropy"`
			Layers  []struct {
				Layer int         `json:"layer"`
				Attn  [][]float64 `json:"attn"`
			} `json:"layers"`
			Lens []struct {
				Layer   int     `json:"layer"`
				Entropy float64 `json:"entropy"`
				TopK    []struct {
					TokenID int     `json:"token_id"`
					Prob    float64 `json:"prob"`
				} `json:"topk"`
			} `json:"lens"`
		} `json:"steps"`
	}
	field, ok := choice.JSON.ExtraFields["nielsgpt"]
	if !ok {
		t.Fatal("the SDK's choice has no nielsgpt field")
	}
	if err := json.Unmarshal([]byte(field.Raw()), &ext); err != nil {
		t.Fatal(err)
	}
	if len(ext.Steps) != len(direct.Generated) {
		t.Fatalf("%d steps, engine %d", len(ext.Steps), len(direct.Generated))
	}
	for i, st := range ext.Steps {
		want := steps[i]
		if st.Entropy != want.Entropy || len(st.Layers) != 1 || st.Layers[0].Layer != 1 || len(st.Lens) != len(want.Lens) {
			t.Fatalf("step %d: %+v, engine %+v", i, st, want)
		}
		for h, row := range want.Layers[0].Attn {
			for k, p := range row {
				if float32(st.Layers[0].Attn[h][k]) != p {
					t.Fatalf("step %d head %d [%d]: %v, engine %v", i, h, k, st.Layers[0].Attn[h][k], p)
				}
			}
		}
		for l, lens := range want.Lens {
			if float32(st.Lens[l].Entropy) != float32(lens.Entropy) || st.Lens[l].TopK[0].TokenID != lens.Candidates[0].TokenID ||
				float32(st.Lens[l].TopK[0].Prob) != float32(lens.Candidates[0].Prob) {
				t.Fatalf("step %d lens %d: %+v, engine %+v", i, l, st.Lens[l], lens)
			}
		}
	}
}
