package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nielsgpt/convert"
	"nielsgpt/gguf"
	"nielsgpt/internal/harness"
	"nielsgpt/internal/testkit"
)

type run struct {
	tokens []int
	attn   [][][]float32
	steps  []*Step // every step, cloned
	result *Result
}

func generate(t *testing.T, m *Model, req GenerateRequest) run {
	t.Helper()
	var r run
	res, err := m.Generate(context.Background(), req, func(s *Step) error {
		if s.Index != len(r.tokens) {
			return fmt.Errorf("step index %d, want %d", s.Index, len(r.tokens))
		}
		r.tokens = append(r.tokens, s.TokenID)
		rows := make([][]float32, len(s.Attn)) // the engine reuses s after the call
		for h, row := range s.Attn {
			rows[h] = slices.Clone(row)
		}
		r.attn = append(r.attn, rows)
		r.steps = append(r.steps, s.Clone())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r.result = res
	return r
}

// chatOf is the messages whose generation-1 transcript (FormatTranscript) is
// exactly transcript, so that a golden's prompt, written as a transcript,
// reaches the engine as the chat it is.
func chatOf(tb testing.TB, transcript []byte) []Message {
	tb.Helper()
	var chat []Message
	body, _ := bytes.CutSuffix(transcript, []byte(generationPrompt))
	for line := range strings.Lines(string(body)) {
		role, content, _ := strings.Cut(strings.TrimSuffix(line, "\n"), ": ")
		chat = append(chat, Message{Role: role, Content: content})
	}
	if !bytes.Equal(FormatTranscript(chat), transcript) {
		tb.Fatalf("%q is not a generation-1 chat transcript", transcript)
	}
	return chat
}

// Sequences batched together get exactly what each gets alone: same tokens,
// same traces, whatever else shares the step (decodes, prompt chunks, window
// slides, different trace layers).
func TestBatchedEqualsAlone(t *testing.T) {
	m, _ := loadFixture(t, "tiny_b")
	c := m.Config()
	reqs := make([]GenerateRequest, 6)
	for i := range reqs {
		chat := make([]Message, 1+i*3) // some longer than T
		for j := range chat {
			chat[j] = Message{Role: "user", Content: fmt.Sprintf("hello %d", i)}
		}
		reqs[i] = GenerateRequest{
			Messages:     chat,
			MaxNewTokens: 30 + 7*i,
			Sampling:     Sampling{Temperature: 0.9, TopK: 50, Seed: int64(i)},
			TraceLayer:   i % c.Layers,
		}
	}
	alone, together := aloneAndTogether(t, m, reqs)
	for i := range reqs {
		a, b := alone[i], together[i]
		if fmt.Sprint(a.tokens) != fmt.Sprint(b.tokens) {
			t.Fatalf("request %d: tokens alone %v, batched %v", i, a.tokens, b.tokens)
		}
		for s := range a.attn {
			for h := range a.attn[s] {
				if d := maxAbsDiff(a.attn[s][h], b.attn[s][h]); d != 0 {
					t.Fatalf("request %d step %d head %d: traces differ by %.2e", i, s, h, d)
				}
			}
		}
		if a.result.Reply != b.result.Reply {
			t.Fatalf("request %d: replies differ", i)
		}
	}
}

func TestFullAttentionIsCausal(t *testing.T) {
	m, g := loadFixture(t, "tiny_a")
	c := m.Config()
	prompt := int32sToBytes(g.Greedy.Prompt)
	for _, maxNew := range []int{0, 5, 70} { // 70 slides tiny_a's window of 64
		full, err := m.FullAttention(context.Background(), FullAttnRequest{
			Messages: g.Greedy.chat, MaxNewTokens: maxNew, Layers: []int{c.Layers - 1, 0},
			Sampling: Sampling{Temperature: 0.9, TopK: 50, Seed: 42},
		})
		if err != nil {
			t.Fatal(err)
		}
		tlen := min(len(prompt)+maxNew, c.Context)
		if len(full.TokenIDs) != tlen || len(full.Attn) != 2 || len(full.Attn[0]) != c.Heads {
			t.Fatalf("max_new %d: window %d tokens, %d layers; want %d, 2", maxNew, len(full.TokenIDs), len(full.Attn), tlen)
		}
		for l, heads := range full.Attn {
			for h, matrix := range heads {
				if len(matrix) != tlen {
					t.Fatalf("layer %d head %d: %d rows, want %d", l, h, len(matrix), tlen)
				}
				for i, row := range matrix {
					sum := 0.0
					for j, p := range row {
						if j > i && p != 0 {
							t.Fatalf("layer %d head %d row %d attends to future position %d (%v)", l, h, i, j, p)
						}
						sum += float64(p)
					}
					if math.Abs(sum-1) > 1e-5 {
						t.Fatalf("layer %d head %d row %d sums to %v", l, h, i, sum)
					}
				}
			}
		}
	}
	// with no generation, the matrices are the golden prefill's
	full, err := m.FullAttention(context.Background(), FullAttnRequest{
		Prompt: int32sToBytes(g.Prefill.Tokens), Layers: []int{1, 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	for k, layer := range []int{1, 0} {
		for h := range c.Heads {
			for r, row := range full.Attn[k][h] {
				if d := maxAbsDiff(row, g.Prefill.Attn[layer][h][r]); d > attnTol {
					t.Fatalf("layer %d head %d row %d differs from PyTorch by %.2e", layer, h, r, d)
				}
			}
		}
	}
}

// A caller that goes away stops its sequence at the next step.
func TestCancelStopsGeneration(t *testing.T) {
	m, _ := loadFixture(t, "tiny_a")
	ctx, cancel := context.WithCancel(context.Background())
	steps := 0
	_, err := m.Generate(ctx, GenerateRequest{Messages: []Message{{Role: "user", Content: "hi"}}, MaxNewTokens: 1000,
		Sampling: Sampling{Temperature: 1, Seed: 1}, TraceLayer: -1}, func(s *Step) error {
		steps++
		if steps == 3 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || steps != 3 {
		t.Fatalf("after cancel: err %v, %d steps", err, steps)
	}
	stop := errors.New("enough")
	steps = 0
	_, err = m.Generate(context.Background(), GenerateRequest{Messages: []Message{{Role: "user", Content: "hi"}}, MaxNewTokens: 1000,
		Sampling: Sampling{Temperature: 1, Seed: 1}, TraceLayer: 0}, func(s *Step) error {
		steps++
		if steps == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || steps != 2 {
		t.Fatalf("after onStep error: err %v, %d steps", err, steps)
	}
	testkit.Eventually(t, 5*time.Second, "the scheduler to be free again", func() bool {
		r := generate(t, m, GenerateRequest{Messages: []Message{{Role: "user", Content: "x"}}, MaxNewTokens: 3, TraceLayer: -1})
		return len(r.tokens) == 3
	})
}

func TestRejectsBadRequests(t *testing.T) {
	m, _ := loadFixture(t, "tiny_a")
	bad := []GenerateRequest{
		{Prompt: nil, MaxNewTokens: 1, TraceLayer: -1},
		{Prompt: []byte("x"), MaxNewTokens: -1, TraceLayer: -1},
		{Prompt: []byte("x"), MaxNewTokens: 1, TraceLayer: 99},
		{Prompt: []byte("x"), MaxNewTokens: 1, TraceLayer: -1, Sampling: Sampling{Temperature: math.NaN()}},
		{Prompt: []byte("x"), MaxNewTokens: 1, TraceLayer: -1, Sampling: Sampling{Temperature: math.Inf(1)}},
		{Messages: []Message{{Role: "user", Content: "x"}}, Prompt: []byte("x"), MaxNewTokens: 1, TraceLayer: -1},
	}
	for _, req := range bad {
		if _, err := m.Generate(context.Background(), req, nil); err == nil {
			t.Errorf("request %+v accepted", req)
		}
	}
	for _, layers := range [][]int{nil, {99}, {-1}, {0, 0}} {
		if _, err := m.FullAttention(context.Background(), FullAttnRequest{Prompt: []byte("x"), Layers: layers}); err == nil {
			t.Errorf("layers %v accepted", layers)
		}
	}
}

// The checkpoints saved by PyTorch 2.x (one on CUDA, with optimizer state)
// convert, load and generate.
func TestSharedFixturesLoad(t *testing.T) {
	paths, _ := filepath.Glob(filepath.Join("..", "..", "shared", "fixtures", "*.pt"))
	if len(paths) == 0 {
		t.Fatal("no checkpoints in ../shared/fixtures")
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			m, err := LoadFile(testkit.ConvertedFixture(t, p), Options{Threads: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			r := generate(t, m, GenerateRequest{Messages: []Message{{Role: "user", Content: "hi"}}, MaxNewTokens: 20,
				Sampling: Sampling{Temperature: 0.9, TopK: 50, Seed: 42}, TraceLayer: m.Config().Layers - 1})
			if len(r.tokens) == 0 {
				t.Fatal("no tokens")
			}
		})
	}
}

// syntheticModel builds a model of the given shape with random weights, for
// benchmarks at sizes no fixture has.
func syntheticModel(tb testing.TB, mc gguf.ModelConfig, opts Options) *Model {
	tb.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	ck := convert.SyntheticCheckpoint(mc, func() float32 { return float32(rng.NormFloat64() * 0.05) })
	var buf bytes.Buffer
	// NIELSGPT_BENCH_F16=1 measures the weights `nielsgpt convert --f16` writes.
	f16 := os.Getenv("NIELSGPT_BENCH_F16") == "1"
	if err := convert.WriteGGUF(&buf, ck, strings.Repeat("0", 64), convert.Options{F16: f16}); err != nil {
		tb.Fatal(err)
	}
	m, err := LoadBytes(buf.Bytes(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(m.Close)
	return m
}

func benchThreads() int {
	if v := os.Getenv("NIELSGPT_BENCH_THREADS"); v != "" {
		var n int
		fmt.Sscan(v, &n)
		return n
	}
	return 0
}

// One decode step with tracing at context 128, as the server runs it: the
// graph for one new token attending to 127 cached ones, the trace row and
// logits copied out, and the token sampled.
func BenchmarkDecodeStepTraced(b *testing.B) {
	m := syntheticModel(b, harness.Deployed, Options{Threads: benchThreads()})
	prompt := make([]int32, 128)
	for i := range prompt {
		prompt[i] = int32("user: tell me about niels\nassistant: "[i%37])
	}
	benchDecodeStep(b, m, prompt, newSampler(Sampling{Temperature: 0.9, TopK: 50, Seed: 42}, m.Config().Vocab))
}

// benchDecodeStep times the decode step at prompt's last token, its 127 (or
// however many) predecessors cached: the graph, layer 2's trace row and the
// logits copied out, and the token sampled by s.
func benchDecodeStep(b *testing.B, m *Model, prompt []int32, s *sampler) {
	b.ReportAllocs()
	c := m.Config()
	ctxLen := len(prompt)
	cache := newCache(b, m, ctxLen)
	if err := m.step([]stepItem{{cache: cache, tokens: prompt[:ctxLen-1]}}); err != nil {
		b.Fatal(err)
	}
	it := stepItem{cache: cache, tokens: prompt[ctxLen-1:], nPast: ctxLen - 1,
		logits: make([]float32, c.Vocab), traceLayers: []int32{2}, attnRows: make([]float32, c.Heads*ctxLen)}
	for b.Loop() {
		// the same position each time: the context stays at len(prompt)
		if err := m.step([]stepItem{it}); err != nil {
			b.Fatal(err)
		}
		s.sample(it.logits)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "steps/s")
}

// Whole generations through the scheduler, traced, one stream.
func BenchmarkGenerateTraced(b *testing.B) {
	b.ReportAllocs()
	m := syntheticModel(b, harness.Deployed, Options{Threads: benchThreads()})
	chat := []Message{{Role: "user", Content: "tell me about niels"}}
	tokens := 0
	b.ResetTimer()
	for b.Loop() {
		_, err := m.Generate(context.Background(), GenerateRequest{Messages: chat, MaxNewTokens: 128,
			Sampling: Sampling{Temperature: 0.9, TopK: 50, Seed: 42}, TraceLayer: 3}, func(*Step) error {
			tokens++
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
}

// Whole generations through the scheduler, traced, 16 streams at once (the
// bench's short chat, 200 tokens each): the engine's side of the bench's
// "16 concurrent" row, without HTTP.
func BenchmarkGenerate16Traced(b *testing.B) {
	m := syntheticModel(b, harness.Deployed, Options{Threads: benchThreads()})
	var tokens atomic.Int64
	b.ResetTimer()
	for b.Loop() {
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				chat := []Message{{Role: "user", Content: fmt.Sprintf("hi niels, what are you working on? (%d)", i)}}
				_, err := m.Generate(context.Background(), GenerateRequest{Messages: chat, MaxNewTokens: 200,
					Sampling: Sampling{Temperature: 0.9, TopK: 50, Seed: int64(i)}, TraceLayer: 3}, func(*Step) error {
					tokens.Add(1)
					return nil
				})
				if err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
	}
	b.ReportMetric(float64(tokens.Load())/b.Elapsed().Seconds(), "tokens/s")
}

// A full window of prompt (what a 16 KB transcript becomes) in one step, with
// the logits and trace row the first token needs: time to first token.
func BenchmarkPrefillWindowTraced(b *testing.B) {
	b.ReportAllocs()
	m := syntheticModel(b, harness.Deployed, Options{Threads: benchThreads()})
	c := m.Config()
	cache := newCache(b, m, c.Context)
	prompt := make([]int32, c.Context)
	for i := range prompt {
		prompt[i] = int32("user: tell me about niels\nassistant: "[i%37])
	}
	it := stepItem{cache: cache, tokens: prompt, logits: make([]float32, c.Vocab), traceLayers: []int32{int32(3)},
		attnRows: make([]float32, c.Heads*c.Context)}
	for b.Loop() {
		if err := m.step([]stepItem{it}); err != nil {
			b.Fatal(err)
		}
	}
}

// One step decoding a token for each of 16 sequences at context 128, traced.
func BenchmarkDecodeStep16Traced(b *testing.B) {
	b.ReportAllocs()
	m := syntheticModel(b, harness.Deployed, Options{Threads: benchThreads()})
	c := m.Config()
	const streams, ctxLen = 16, 128
	prompt := make([]int32, ctxLen)
	for i := range prompt {
		prompt[i] = int32("user: tell me about niels\nassistant: "[i%37])
	}
	items := make([]stepItem, streams)
	for i := range items {
		cache := newCache(b, m, ctxLen)
		if err := m.step([]stepItem{{cache: cache, tokens: prompt[:ctxLen-1]}}); err != nil {
			b.Fatal(err)
		}
		items[i] = stepItem{cache: cache, tokens: prompt[ctxLen-1:], nPast: ctxLen - 1,
			logits: make([]float32, c.Vocab), traceLayers: []int32{int32(i % c.Layers)}, attnRows: make([]float32, c.Heads*ctxLen)}
	}
	for b.Loop() {
		if err := m.step(items); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*streams)/b.Elapsed().Seconds(), "tokens/s")
}

// aloneAndTogether runs each request by itself, then all of them at once
// (batched in the same steps), for tests that want the two to agree.
func aloneAndTogether(t *testing.T, m *Model, reqs []GenerateRequest) (alone, together []run) {
	alone = make([]run, len(reqs))
	for i, req := range reqs {
		alone[i] = generate(t, m, req)
	}
	together = make([]run, len(reqs))
	var wg sync.WaitGroup
	for i, req := range reqs {
		wg.Go(func() { together[i] = generate(t, m, req) })
	}
	wg.Wait()
	return alone, together
}
