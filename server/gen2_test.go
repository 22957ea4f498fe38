package server

// A generation-2 checkpoint served end to end: the tiny fixture best.pt with its spm.model
// beside it, loaded the way `nielsgpt serve --model best.pt` loads it (converted with that
// tokenizer), streaming a chat whose tokens must be the ones PyTorch chose
// (testdata/golden/tiny_gen2_a.json.gz), with generation 2's token fields.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"nielsgpt/engine"
	"nielsgpt/internal/testkit"
	"nielsgpt/modelsource"
)

type gen2GreedyGolden struct {
	Prompt            []int   `json:"prompt"`
	Steps             int     `json:"steps"`
	RepetitionPenalty float64 `json:"repetition_penalty"`
	Tokens            []int   `json:"tokens"`
	TraceLayer        int     `json:"trace_layer"`
}

func readGen2Greedy(t *testing.T) (plain, penalty gen2GreedyGolden) {
	t.Helper()
	var g struct {
		Greedy        gen2GreedyGolden `json:"greedy"`
		GreedyPenalty gen2GreedyGolden `json:"greedy_penalty"`
	}
	testkit.ReadGzipJSON(t, "../testdata/golden/tiny_gen2_a.json.gz", &g)
	return g.Greedy, g.GreedyPenalty
}

// loadGen2Model puts the fixture checkpoint and its tokenizer in one folder, as niels-gpt
// leaves them, and loads the checkpoint through modelsource.
func loadGen2Model(t *testing.T) *engine.Model {
	t.Helper()
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	dir := t.TempDir()
	for src, dst := range map[string]string{
		"../testdata/models/tiny_gen2_a.pt": "best.pt",
		"../testdata/spm/tiny.model":        "spm.model",
	} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := modelsource.DefaultConfig()
	cfg.Model = filepath.Join(dir, "best.pt")
	cfg.Threads = 1
	model, _, err := modelsource.Load(context.Background(), cfg, modelsource.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(model.Close)
	if model.Config().Generation() != 2 {
		t.Fatalf("loaded a generation-%d model", model.Config().Generation())
	}
	return model
}

func TestGen2ChatStreamMatchesPyTorch(t *testing.T) {
	model := loadGen2Model(t)
	ts := startServer(t, testConfig(), model)
	tok := model.Tokenizer()
	plain, penalty := readGen2Greedy(t)
	for _, gr := range []gen2GreedyGolden{plain, penalty} {
		t.Run(fmt.Sprintf("penalty%v", gr.RepetitionPenalty), func(t *testing.T) {
			prompt, err := model.FormatChat([]engine.Message{{Role: "user", Content: "hello there"}})
			if err != nil || !slices.Equal(int32sToInts(prompt), gr.Prompt) {
				t.Fatalf("prompt %v (%v), golden %v", prompt, err, gr.Prompt)
			}
			body := fmt.Sprintf(`{"messages":[{"role":"user","content":"hello there"}],"max_new_tokens":%d,"temperature":0,`+
				`"trace_layer":%d,"repetition_penalty":%v}`, gr.Steps, gr.TraceLayer, gr.RepetitionPenalty)
			events := readEvents(t, postJSON(t, ts.URL+"/chat/stream", body))
			if len(events) != 2*gr.Steps+1 || events[len(events)-1].Type != "done" {
				t.Fatalf("%d events, last %+v", len(events), events[len(events)-1])
			}
			T := model.Config().Context
			for i := range gr.Steps {
				var te tokenEvent
				decodeStrict(t, events[2*i].Data, &te)
				id := *te.TokenID
				if id != gr.Tokens[i] {
					t.Fatalf("step %d: token %d, PyTorch chose %d", i, id, gr.Tokens[i])
				}
				if *te.TokenText != tok.Decode([]int{id}) || *te.TokenDisplay != tok.Display(id) {
					t.Fatalf("step %d: token_text %q token_display %q for piece %q", i, *te.TokenText, *te.TokenDisplay, tok.Piece(id))
				}
				var tr traceEvent
				decodeStrict(t, events[2*i+1].Data, &tr)
				window := min(len(gr.Prompt)+i, T)
				if len(tr.TopK) != 1 || tr.TopK[0].TokenID != id || tr.TopK[0].TokenDisplay != tok.Display(id) ||
					len(tr.Attn) != model.Config().Heads || len(tr.Attn[0]) != window {
					t.Fatalf("step %d: trace %s", i, events[2*i+1].Data)
				}
				sum := 0.0
				for _, p := range tr.Attn[0] {
					sum += p
				}
				if math.Abs(sum-1) > 1e-4 {
					t.Fatalf("step %d: attention sums to %v", i, sum)
				}
			}
			var done struct{ Reply string }
			decodeStrict(t, events[len(events)-1].Data, &done)
			if want := tok.Decode(gr.Tokens); done.Reply != want {
				t.Fatalf("reply %q, want %q", done.Reply, want)
			}
		})
	}

	// Byte pieces show as \xNN, and a piece's U+2581 as a space.
	for id := range tok.VocabSize() {
		if piece := tok.Piece(id); piece == "<0x0A>" {
			if got := string(model.TokenBytes(id)); got != "\n" || tok.Display(id) != `\x0a` {
				t.Fatalf("byte piece %q: bytes %q display %q", piece, got, tok.Display(id))
			}
		}
	}
}

// /inspect/full_attn works on ids: the window is the token-native transcript and what
// followed it, shown as pieces.
func TestGen2FullAttn(t *testing.T) {
	model := loadGen2Model(t)
	ts := startServer(t, testConfig(), model)
	tok := model.Tokenizer()
	resp := postJSON(t, ts.URL+"/inspect/full_attn", `{"messages":[{"role":"system","content":"be terse"},`+
		`{"role":"user","content":"hello there"}],"trace_layer":1,"head":1,"max_new_tokens":4,"seed":5,"top_p":0.9}`)
	body := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var out struct {
		TokenIDs      []int    `json:"token_ids"`
		Tokens        []string `json:"tokens"`
		TokensDisplay []string `json:"tokens_display"`
		Attn          [][]float64
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	prompt, _ := model.FormatChat([]engine.Message{{Role: "system", Content: "be terse"}, {Role: "user", Content: "hello there"}})
	var generated []int
	if _, err := model.Generate(context.Background(), engine.GenerateRequest{
		Messages:     []engine.Message{{Role: "system", Content: "be terse"}, {Role: "user", Content: "hello there"}},
		MaxNewTokens: 4, TraceLayer: -1, Sampling: engine.Sampling{Temperature: 0.9, TopK: 50, TopP: 0.9, Seed: 5},
	}, func(s *engine.Step) error { generated = append(generated, s.TokenID); return nil }); err != nil {
		t.Fatal(err)
	}
	// An eot that ended the reply is in the window too, as generation 1's stop tags are.
	want := append(int32sToInts(prompt), generated...)
	if !slices.Equal(out.TokenIDs, want) || len(out.Attn) != len(want) {
		t.Fatalf("window %v, want %v", out.TokenIDs, want)
	}
	for i, id := range out.TokenIDs {
		if out.Tokens[i] != tok.Decode([]int{id}) || out.TokensDisplay[i] != tok.Display(id) {
			t.Fatalf("token %d (%d): %q %q", i, id, out.Tokens[i], out.TokensDisplay[i])
		}
	}
	if out.TokensDisplay[0] != tok.Piece(3) {
		t.Fatalf("the transcript starts with %q, not the system piece", out.TokensDisplay[0])
	}
}

func int32sToInts(ids []int32) []int {
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out
}

// The OpenAI routes on a generation-2 model: the greedy reply PyTorch chose, with each
// token's logprobs carrying the piece's bytes; the same text streamed; stop strings on
// the text; the prompt counted in ids; an echoed prompt scored piece by piece.
func TestGen2OpenAI(t *testing.T) {
	model := loadGen2Model(t)
	ts := startServer(t, testConfig(), model)
	tok := model.Tokenizer()
	gr, _ := readGen2Greedy(t)
	var text []byte
	for _, id := range gr.Tokens {
		text = append(text, tok.TokenBytes(id)...)
	}
	content := engine.DecodeBytes(text)
	chat := fmt.Sprintf(`{"messages":[{"role":"user","content":"hello there"}],"max_tokens":%d,"temperature":0`, gr.Steps)

	v := decodeBody(t, postJSON(t, ts.URL+"/v1/chat/completions", chat+`,"logprobs":true,"top_logprobs":2}`), 200)
	choice := v["choices"].([]any)[0].(map[string]any)
	if got := choice["message"].(map[string]any)["content"]; got != content || choice["finish_reason"] != "length" {
		t.Fatalf("content %q (%v), want %q", got, choice["finish_reason"], content)
	}
	lps := choice["logprobs"].(map[string]any)["content"].([]any)
	if len(lps) != gr.Steps {
		t.Fatalf("%d logprobs for %d tokens", len(lps), gr.Steps)
	}
	for i, lp := range lps {
		var got []byte
		for _, b := range lp.(map[string]any)["bytes"].([]any) {
			got = append(got, byte(b.(float64)))
		}
		if string(got) != string(tok.TokenBytes(gr.Tokens[i])) {
			t.Fatalf("token %d: bytes %q, piece %q", i, got, tok.Piece(gr.Tokens[i]))
		}
	}
	if usage := v["usage"].(map[string]any); usage["prompt_tokens"] != float64(len(gr.Prompt)) {
		t.Fatalf("usage %v, the prompt has %d ids", usage, len(gr.Prompt))
	}

	streamed := ""
	for _, chunk := range readChunks(t, postJSON(t, ts.URL+"/v1/chat/completions", chat+`,"stream":true}`)) {
		for _, c := range chunk["choices"].([]any) {
			if delta, ok := c.(map[string]any)["delta"].(map[string]any)["content"].(string); ok {
				streamed += delta
			}
		}
	}
	if streamed != content {
		t.Fatalf("streamed %q, want %q", streamed, content)
	}

	// A stop string that spans pieces cuts the text before it.
	runes := []rune(content)
	stop := string(runes[len(runes)/2 : len(runes)/2+3])
	want := content[:strings.Index(content, stop)]
	if stop == "" || len(want) == 0 || len(want) >= len(content) {
		t.Fatalf("no stop string to test with in %q", content)
	}
	stopBody := chat + fmt.Sprintf(`,"stop":[%q]}`, stop)
	v = decodeBody(t, postJSON(t, ts.URL+"/v1/chat/completions", stopBody), 200)
	choice = v["choices"].([]any)[0].(map[string]any)
	if got := choice["message"].(map[string]any)["content"]; got != want || choice["finish_reason"] != "stop" {
		t.Fatalf("stop %q: content %q (%v), want %q", stop, got, choice["finish_reason"], want)
	}

	// Scoring the prompt: one entry per piece, offsets in bytes.
	v = decodeBody(t, postJSON(t, ts.URL+"/v1/completions",
		`{"prompt":"hello there, how are you","max_tokens":0,"echo":true,"logprobs":1}`), 200)
	lp := v["choices"].([]any)[0].(map[string]any)["logprobs"].(map[string]any)
	ids := tok.Encode("hello there, how are you")
	tokens, offsets := lp["tokens"].([]any), lp["text_offset"].([]any)
	if len(tokens) != len(ids) || lp["token_logprobs"].([]any)[0] != nil || lp["token_logprobs"].([]any)[1] == nil {
		t.Fatalf("echo logprobs %v for ids %v", lp, ids)
	}
	at := 0
	for i, id := range ids {
		if tokens[i] != string(tok.TokenBytes(id)) || offsets[i] != float64(at) {
			t.Fatalf("token %d: %v at %v, want %q at %d", i, tokens[i], offsets[i], tok.TokenBytes(id), at)
		}
		at += len(tok.TokenBytes(id))
	}
	// Token ids are bytes only for a byte-level model.
	resp := postJSON(t, ts.URL+"/v1/completions", `{"prompt":[1,2,3],"max_tokens":1}`)
	if body := readAll(t, resp); resp.StatusCode != 400 || !strings.Contains(string(body), "generation-1") {
		t.Fatalf("token-id prompt: %d %s", resp.StatusCode, body)
	}
}

// A generation-2 reply that ends at end-of-turn: the OpenAI answer stops there with
// finish_reason "stop", and neither the text, the logprobs nor the stream carry the eot.
func TestGen2OpenAIEndOfTurn(t *testing.T) {
	model := loadGen2Model(t)
	ts := startServer(t, testConfig(), model)
	msgs := []engine.Message{{Role: "user", Content: "hello there"}}
	// A seed whose reply the model ends itself, found through the engine.
	seed, steps := -1, 0
	var res *engine.Result
	for s := range 300 {
		n := 0
		r, err := model.Generate(context.Background(), engine.GenerateRequest{Messages: msgs, MaxNewTokens: 40, TraceLayer: -1,
			Sampling: engine.Sampling{Temperature: 1.8, TopP: 1, Seed: int64(s)}}, func(*engine.Step) error { n++; return nil })
		if err != nil {
			t.Fatal(err)
		}
		if r.Stopped == "stop_tag" && n > 1 {
			seed, steps, res = s, n, r
			break
		}
	}
	if seed < 0 {
		t.Fatal("no seed of 300 ended its reply with end-of-turn")
	}
	body := fmt.Sprintf(`{"messages":[{"role":"user","content":"hello there"}],"max_tokens":40,"temperature":1.8,"seed":%d`, seed)
	v := decodeBody(t, postJSON(t, ts.URL+"/v1/chat/completions", body+`,"logprobs":true}`), 200)
	choice := v["choices"].([]any)[0].(map[string]any)
	content := engine.DecodeBytes(res.Generated)
	if got := choice["message"].(map[string]any)["content"]; got != content || choice["finish_reason"] != "stop" {
		t.Fatalf("content %q (%v), want %q (stop)", got, choice["finish_reason"], content)
	}
	if n := len(choice["logprobs"].(map[string]any)["content"].([]any)); n != steps-1 {
		t.Fatalf("%d logprobs for %d tokens before eot", n, steps-1)
	}
	if usage := v["usage"].(map[string]any); usage["completion_tokens"] != float64(steps) {
		t.Fatalf("usage %v, the model generated %d tokens (eot included)", usage, steps)
	}
	streamed, reasons := "", 0
	for _, chunk := range readChunks(t, postJSON(t, ts.URL+"/v1/chat/completions", body+`,"stream":true}`)) {
		for _, c := range chunk["choices"].([]any) {
			c := c.(map[string]any)
			if delta, ok := c["delta"].(map[string]any)["content"].(string); ok {
				streamed += delta
			}
			if c["finish_reason"] == "stop" {
				reasons++
			}
		}
	}
	if streamed != content || reasons != 1 {
		t.Fatalf("streamed %q (%d stops), want %q", streamed, reasons, content)
	}
}

// /inspect/attention and /inspect/score on a generation-2 model: the windows are pieces of
// the token-native transcript, or of the encoded text.
func TestGen2InspectAttentionAndScore(t *testing.T) {
	model := loadGen2Model(t)
	ts := startServer(t, testConfig(), model)
	tok := model.Tokenizer()
	msgs := []engine.Message{{Role: "system", Content: "be terse"}, {Role: "user", Content: "hello there"}}
	chat, _ := model.FormatChat(msgs)

	resp := postJSON(t, ts.URL+"/inspect/attention", `{"messages":[{"role":"system","content":"be terse"},`+
		`{"role":"user","content":"hello there"}],"layers":[1,0]}`)
	body := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("attention: %d %s", resp.StatusCode, body)
	}
	var att struct {
		Layers        []int    `json:"layers"`
		TokenIDs      []int    `json:"token_ids"`
		TokensDisplay []string `json:"tokens_display"`
		Attn          [][][][]float64
	}
	if err := json.Unmarshal(body, &att); err != nil {
		t.Fatal(err)
	}
	t0 := len(chat)
	if !slices.Equal(att.TokenIDs, int32sToInts(chat)) || len(att.Attn) != 2 || len(att.Attn[0]) != model.Config().Heads ||
		len(att.Attn[0][0]) != t0 || att.TokensDisplay[0] != tok.Display(3) {
		t.Fatalf("attention over %v (%d layers), want the transcript %v", att.TokenIDs, len(att.Attn), chat)
	}

	var sc struct {
		Offset   int      `json:"offset"`
		TokenIDs []int    `json:"token_ids"`
		Tokens   []string `json:"tokens"`
		Scores   []*struct {
			Logprob float64 `json:"logprob"`
			Rank    int     `json:"rank"`
		} `json:"scores"`
	}
	for _, c := range []struct {
		body string
		want []int
	}{
		{`{"text":"hello there, how are you"}`, tok.Encode("hello there, how are you")},
		{`{"messages":[{"role":"system","content":"be terse"},{"role":"user","content":"hello there"}]}`, int32sToInts(chat[:len(chat)-1])},
	} {
		resp := postJSON(t, ts.URL+"/inspect/score", c.body)
		body := readAll(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("score %s: %d %s", c.body, resp.StatusCode, body)
		}
		if err := json.Unmarshal(body, &sc); err != nil {
			t.Fatal(err)
		}
		if sc.Offset != 0 || !slices.Equal(sc.TokenIDs, c.want) || len(sc.Scores) != len(c.want) || sc.Scores[0] != nil ||
			sc.Scores[1] == nil || sc.Scores[1].Rank < 1 || sc.Tokens[1] != tok.Decode([]int{c.want[1]}) {
			t.Fatalf("score %s: %s; want the ids %v", c.body, body, c.want)
		}
	}
}

// bits_per_byte of a generation-2 score is over the bytes the scored pieces spell.
func TestGen2ScoreBitsPerByte(t *testing.T) {
	model := loadGen2Model(t)
	ts := startServer(t, testConfig(), model)
	resp := postJSON(t, ts.URL+"/inspect/score", `{"text":"hello there, how are you"}`)
	var sc struct {
		TokenIDs    []int   `json:"token_ids"`
		MeanLogprob float64 `json:"mean_logprob"`
		BitsPerByte float64 `json:"bits_per_byte"`
	}
	if err := json.Unmarshal(readAll(t, resp), &sc); err != nil {
		t.Fatal(err)
	}
	bytes := 0
	for _, id := range sc.TokenIDs[1:] {
		bytes += len(model.TokenBytes(id))
	}
	scored := float64(len(sc.TokenIDs) - 1)
	want := -sc.MeanLogprob * scored / float64(bytes) / math.Ln2
	if bytes <= len(sc.TokenIDs)-1 || math.Abs(sc.BitsPerByte-want) > 1e-9*math.Abs(want) {
		t.Fatalf("bits_per_byte %v, want %v over %d bytes of %d pieces", sc.BitsPerByte, want, bytes, len(sc.TokenIDs)-1)
	}
}

// A text that a generation-2 tokenizer reads as no tokens at all is bad input, not a
// failure: 422 on /inspect/score, OpenAI's 400 on /v1/completions.
func TestGen2WhitespaceTextRefused(t *testing.T) {
	model := loadGen2Model(t)
	ts := startServer(t, testConfig(), model)
	wantDetail(t, postJSON(t, ts.URL+"/inspect/score", `{"text":"  \n\t "}`), "empty once the model's tokenizer has read it")
	resp := postJSON(t, ts.URL+"/v1/completions", `{"prompt":"   ","max_tokens":3}`)
	if body := readAll(t, resp); resp.StatusCode != 400 || !strings.Contains(string(body), "only whitespace") {
		t.Fatalf("completions of whitespace: %d %s", resp.StatusCode, body)
	}
	// Streamed too: no header goes out before the engine has read the prompt.
	resp = postJSON(t, ts.URL+"/v1/completions", `{"prompt":"   ","max_tokens":3,"stream":true}`)
	if body := readAll(t, resp); resp.StatusCode != 400 || !strings.Contains(string(body), "only whitespace") {
		t.Fatalf("streamed completions of whitespace: %d %s", resp.StatusCode, body)
	}
}
