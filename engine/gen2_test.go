package engine

// Generation 2 (RMSNorm, SwiGLU, SentencePiece, token-native chat) against PyTorch: the
// goldens scripts/make_fixtures_gen2.py writes (testdata/golden/tiny_gen2_*.json.gz) for two
// fixture checkpoints converted with their tokenizer. tiny_gen2_b has T = 20, so 80 greedy
// steps slide its window many times.

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"nielsgpt/gguf"
	"nielsgpt/internal/testkit"
	"nielsgpt/tokenizer"
)

var gen2FixtureNames = []string{"tiny_gen2_a", "tiny_gen2_b"}

// gen2GreedyMessages is the chat the greedy goldens continue (GREEDY_MESSAGES).
var gen2GreedyMessages = []Message{{Role: "user", Content: "hello there"}}

// gen2Greedy is one greedy run of a generation-2 golden.
type gen2Greedy struct {
	Prompt            []int32       `json:"prompt"`
	Steps             int           `json:"steps"`
	RepetitionPenalty float64       `json:"repetition_penalty"`
	Banned            []int         `json:"banned"`
	Tokens            []int         `json:"tokens"`
	TraceLayer        int           `json:"trace_layer"`
	AttnRows          [][][]float32 `json:"attn_rows"` // [step][H][t]
}

type gen2Golden struct {
	golden                 // config and prefill as generation 1's; its Greedy stays empty
	Tokenizer       string `json:"tokenizer"`
	TokenizerSHA256 string `json:"tokenizer_sha256"`
	Chat            struct {
		Messages [][2]string `json:"messages"`
		IDs      []int32     `json:"ids"`
	} `json:"chat"`
	Greedy        gen2Greedy `json:"greedy"`
	GreedyPenalty gen2Greedy `json:"greedy_penalty"`
	Sampling      []struct {
		Temperature       float64      `json:"temperature"`
		TopK              *int         `json:"top_k"`
		TopP              float64      `json:"top_p"`
		RepetitionPenalty float64      `json:"repetition_penalty"`
		History           string       `json:"history"`
		Probs             [][2]float64 `json:"probs"` // [id, p] for every id with p > 0
		Entropy           float64      `json:"entropy"`
	} `json:"sampling"`
}

func readGen2Golden(t testing.TB, name string) *gen2Golden {
	t.Helper()
	var g gen2Golden
	testkit.ReadGzipJSON(t, filepath.Join("..", "testdata", "golden", name+".json.gz"), &g)
	return &g
}

// loadGen2Fixture converts a generation-2 fixture with its tokenizer and loads it.
func loadGen2Fixture(t testing.TB, name string, opts Options) (*Model, *gen2Golden) {
	t.Helper()
	if opts.Device == "" {
		opts.Device = fixtureOptions.Device
	}
	g := readGen2Golden(t, name)
	spm := filepath.Join("..", filepath.FromSlash(g.Tokenizer))
	path := testkit.ConvertedGen2Fixture(t, filepath.Join("..", "testdata", "models", name+".pt"), spm)
	m, err := LoadFile(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	c := m.Config()
	if c.Generation() != 2 || c.Vocab != g.Config.V || c.Context != g.Config.T || c.Embd != g.Config.C ||
		c.Layers != g.Config.L || c.Heads != g.Config.H || c.FF != g.Config.DFF ||
		c.RopeTheta != float64(float32(g.Config.RopeTheta)) {
		t.Fatalf("%s: config %+v does not match the golden %+v", name, c, g.Config)
	}
	return m, g
}

func forEachGen2Fixture(t *testing.T, check func(t *testing.T, m *Model, g *gen2Golden)) {
	for _, name := range gen2FixtureNames {
		t.Run(name, func(t *testing.T) {
			m, g := loadGen2Fixture(t, name, fixtureOptions)
			check(t, m, g)
		})
	}
}

// One token at a time through the KV cache, and the whole window at once and in chunks:
// the same checks as generation 1's (logits within 1e-4, attention within 1e-5).
func TestGen2DecodeMatchesPyTorch(t *testing.T) {
	forEachGen2Fixture(t, func(t *testing.T, m *Model, g *gen2Golden) { checkDecode(t, m, &g.golden) })
}

func TestGen2PrefillMatchesPyTorch(t *testing.T) {
	forEachGen2Fixture(t, func(t *testing.T, m *Model, g *gen2Golden) { checkPrefill(t, m, &g.golden) })
}

// The token-native transcript: role piece, encoded content, end-of-turn per message, then
// the assistant's piece; the prefill window is its last T ids.
func TestGen2FormatChatMatchesPyTorch(t *testing.T) {
	forEachGen2Fixture(t, func(t *testing.T, m *Model, g *gen2Golden) {
		var msgs []Message
		for _, rc := range g.Chat.Messages {
			msgs = append(msgs, Message{Role: rc[0], Content: rc[1]})
		}
		ids, err := m.FormatChat(msgs)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids, g.Chat.IDs) {
			t.Fatalf("transcript\n%v\nwant\n%v", ids, g.Chat.IDs)
		}
		T := m.Config().Context
		if !slices.Equal(g.Prefill.Tokens, ids[max(0, len(ids)-T):]) {
			t.Fatal("the golden's prefill is not the transcript's last T ids")
		}
		greedy, err := m.FormatChat(gen2GreedyMessages)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(greedy, g.Greedy.Prompt) || !slices.Equal(greedy, g.GreedyPenalty.Prompt) {
			t.Fatalf("greedy prompt %v, golden %v", greedy, g.Greedy.Prompt)
		}
		// A trailing empty assistant message is the generation prompt itself.
		again, _ := m.FormatChat(append(slices.Clone(gen2GreedyMessages), Message{Role: "assistant"}))
		if !slices.Equal(again, greedy) {
			t.Fatalf("with an empty assistant message: %v, want %v", again, greedy)
		}
		if _, err := m.FormatChat([]Message{{Role: "tool", Content: "x"}}); err == nil {
			t.Fatal("an unknown role was formatted")
		}
	})
}

// Greedy chats through the public API, with and without repetition_penalty, across window
// slides: the tokens PyTorch chose with the role pieces banned, the traced rows, a
// one-hot reported distribution.
func TestGen2GreedyMatchesPyTorch(t *testing.T) {
	forEachGen2Fixture(t, func(t *testing.T, m *Model, g *gen2Golden) {
		for _, gr := range []gen2Greedy{g.Greedy, g.GreedyPenalty} {
			t.Run(fmt.Sprintf("penalty%v", gr.RepetitionPenalty), func(t *testing.T) {
				checkGen2Greedy(t, m, g, gr)
			})
		}
	})
}

// Three greedy chats at once in a KV pool of one window: they take turns in its blocks.
func TestGen2KVPoolReuseMatchesPyTorch(t *testing.T) {
	for _, name := range gen2FixtureNames {
		t.Run(name, func(t *testing.T) {
			m, g := loadGen2Fixture(t, name, Options{Threads: 1, KVWindows: 1, KVWait: time.Minute})
			var wg sync.WaitGroup
			for _, gr := range []gen2Greedy{g.Greedy, g.GreedyPenalty, g.Greedy} {
				wg.Go(func() { checkGen2Greedy(t, m, g, gr) })
			}
			wg.Wait()
		})
	}
}

// checkGen2Greedy reports with Errorf and returns, so it may run on any goroutine.
func checkGen2Greedy(t *testing.T, m *Model, g *gen2Golden, gr gen2Greedy) {
	if gr.Steps < 64 || len(gr.Prompt)+gr.Steps <= g.Config.T {
		t.Errorf("golden too short to cross the window: %d steps, T=%d", gr.Steps, g.Config.T)
		return
	}
	if !slices.Equal(gr.Banned, gen2RoleIDs) || slices.Contains(gr.Tokens, gguf.ChatEndOfTurnID) {
		t.Errorf("golden bans %v and has eot in %v: not the chat this engine runs", gr.Banned, gr.Tokens)
		return
	}
	got, res, worstAttn, err := greedyRun(m, GenerateRequest{
		Messages: gen2GreedyMessages, MaxNewTokens: gr.Steps, TraceLayer: gr.TraceLayer,
		Sampling: Sampling{Temperature: 0, RepetitionPenalty: gr.RepetitionPenalty},
	}, gr.AttnRows)
	if err != nil {
		t.Error(err)
		return
	}
	if !sameTokens(t, got, gr.Tokens) {
		return
	}
	if len(got) != gr.Steps || res.Stopped != "max_new_tokens" {
		t.Errorf("generated %d tokens (%s), want %d", len(got), res.Stopped, gr.Steps)
		return
	}
	// No eot came, so the reply is everything generated, decoded, and the text is the
	// tokens' bytes.
	if want, text := m.Decode(intsToInt32s(gr.Tokens)), joinTokenBytes(m, intsToInt32s(gr.Tokens)); res.Reply != want || !bytes.Equal(res.Generated, text) {
		t.Errorf("reply %q, generated %q; want %q and %q", res.Reply, res.Generated, want, text)
	}
	t.Logf("%d identical tokens, max |Δattn| %.2e", len(got), worstAttn)
	if worstAttn > attnTol {
		t.Errorf("attention rows differ by %.2e", worstAttn)
	}
}

func joinTokenBytes(m *Model, ids []int32) []byte {
	var b []byte
	for _, id := range ids {
		b = append(b, m.TokenBytes(int(id))...)
	}
	return b
}

// The whole sampling pipeline (bans, penalty over the history, temperature, top-k, top-p,
// softmax) on the prefill's last logits: the distribution PyTorch computed, id for id.
func TestGen2SamplingMatchesPyTorch(t *testing.T) {
	for _, name := range gen2FixtureNames {
		g := readGen2Golden(t, name)
		logits := g.Prefill.Logits[len(g.Prefill.Logits)-1]
		if len(g.Sampling) == 0 {
			t.Fatalf("%s: no sampling cases", name)
		}
		for _, c := range g.Sampling {
			if c.History != "prefill.tokens" {
				t.Fatalf("%s: history %q", name, c.History)
			}
			sampling := Sampling{Temperature: c.Temperature, TopP: c.TopP, RepetitionPenalty: c.RepetitionPenalty, Seed: 1}
			if c.TopK != nil {
				sampling.TopK = *c.TopK
			}
			s := newSampler(sampling, len(logits), gen2RoleIDs...)
			for _, id := range g.Prefill.Tokens {
				s.observe(int(id))
			}
			tok, entropy, top := s.sample(logits)
			want := make([]float64, len(logits))
			for _, ip := range c.Probs {
				want[int(ip[0])] = ip[1]
			}
			for id := range want {
				if (want[id] == 0) != (s.probs[id] == 0) || math.Abs(want[id]-s.probs[id]) > 1e-6 {
					t.Fatalf("%s %+v: p(%d) = %v, PyTorch %v", name, sampling, id, s.probs[id], want[id])
				}
			}
			if math.Abs(entropy-c.Entropy) > 1e-6 || want[tok] == 0 || len(top) != min(len(c.Probs), traceTopK) {
				t.Fatalf("%s %+v: entropy %v (PyTorch %v), drew %d, %d candidates", name, sampling, entropy, c.Entropy, tok, len(top))
			}
		}
	}
}

// A generation-2 file loads and generates: with all-zero weights every logit is equal, so
// greedy picks the lowest id that is not a role piece, and sampling is uniform over the
// ids that are not (entropy ln(V-3)); the reply is what was generated, decoded.
func TestLoadGeneration2(t *testing.T) {
	sp, err := tokenizer.LoadModel(filepath.Join("..", "testdata", "spm", "tiny.model"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := gguf.ModelConfig{Vocab: sp.VocabSize(), Context: 8, Embd: 8, Layers: 1, Heads: 2, FF: 8, RopeTheta: 10000, NormEps: 1e-5,
		Norm: gguf.NormRMS, MLP: gguf.MLPSwiGLU}
	weights := map[string][]float32{}
	for _, spec := range cfg.Tensors() {
		n := 1
		for _, d := range spec.Shape {
			n *= d
		}
		weights[spec.Name] = make([]float32, n)
	}
	voc := gguf.Vocabulary{Vocab: sp.Export(), SHA256: strings.Repeat("ab", 32)}
	var buf bytes.Buffer
	if err := gguf.WriteWithVocabulary(&buf, cfg, weights, voc, gguf.Source{SHA256: strings.Repeat("cd", 32)}, gguf.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	m, err := LoadBytes(buf.Bytes(), Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Config().Generation() != 2 || m.Tokenizer().VocabSize() != cfg.Vocab {
		t.Fatalf("config %+v, vocabulary of %d", m.Config(), m.Tokenizer().VocabSize())
	}
	msgs := []Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "hello there, how are you?"}}
	var greedy []int
	res, err := m.Generate(context.Background(), GenerateRequest{Messages: msgs, MaxNewTokens: 12, TraceLayer: 0},
		func(s *Step) error { greedy = append(greedy, s.TokenID); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(greedy) != 12 || slices.ContainsFunc(greedy, func(id int) bool { return id != 0 }) {
		t.Fatalf("greedy over equal logits drew %v, want id 0 every time", greedy)
	}
	if want := m.Decode(make([]int32, 12)); res.Reply != want {
		t.Fatalf("reply %q, want %q", res.Reply, want)
	}
	steps := 0
	_, err = m.Generate(context.Background(), GenerateRequest{Messages: msgs, MaxNewTokens: 200, TraceLayer: -1,
		Sampling: Sampling{Temperature: 1, Seed: 7}}, func(s *Step) error {
		steps++
		if slices.Contains(gen2RoleIDs, s.TokenID) {
			return fmt.Errorf("step %d drew role piece %d", s.Index, s.TokenID)
		}
		if math.Abs(s.Entropy-math.Log(float64(cfg.Vocab-3))) > 1e-9 {
			return fmt.Errorf("step %d: entropy %v, want ln(%d)", s.Index, s.Entropy, cfg.Vocab-3)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if steps == 0 {
		t.Fatal("no steps")
	}
	// Plain text is no chat: no role piece is banned and there is no reply.
	res, err = m.Generate(context.Background(), GenerateRequest{Prompt: []byte("hello there"), MaxNewTokens: 1, TraceLayer: -1,
		Sampling: Sampling{Temperature: 1, Seed: 7}}, func(s *Step) error {
		if math.Abs(s.Entropy-math.Log(float64(cfg.Vocab))) > 1e-9 {
			return fmt.Errorf("plain text: entropy %v, want ln(%d)", s.Entropy, cfg.Vocab)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Reply != "" {
		t.Fatalf("plain text: reply %q", res.Reply)
	}
}

// Generation stops at end-of-turn, which the reply and the generated text leave out.
func TestGen2StopsAtEndOfTurn(t *testing.T) {
	m, g := loadGen2Fixture(t, "tiny_gen2_a", fixtureOptions)
	// Sample until a seed makes the model write eot within the budget.
	for seed := range int64(200) {
		var ids []int32
		res, err := m.Generate(context.Background(), GenerateRequest{
			Messages: gen2GreedyMessages, MaxNewTokens: 30, TraceLayer: -1,
			Sampling: Sampling{Temperature: 1.5, Seed: seed},
		}, func(s *Step) error { ids = append(ids, int32(s.TokenID)); return nil })
		if err != nil {
			t.Fatal(err)
		}
		if res.Stopped != "stop_tag" {
			continue
		}
		if n := len(ids); ids[n-1] != gguf.ChatEndOfTurnID || slices.Contains(ids[:n-1], gguf.ChatEndOfTurnID) {
			t.Fatalf("seed %d: stopped, but the ids are %v", seed, ids)
		}
		want := m.Decode(ids[:len(ids)-1])
		if res.Reply != want || !bytes.Equal(res.Generated, joinTokenBytes(m, ids[:len(ids)-1])) {
			t.Fatalf("seed %d: reply %q generated %q, want %q", seed, res.Reply, res.Generated, want)
		}
		return
	}
	t.Fatalf("no seed of 200 wrote end-of-turn (golden %s)", g.Model)
}

// The model's token forms: generation 1's are the byte functions'; generation 2's are the
// pieces' (a byte piece as \xNN, U+2581 as a space, the text decoded alone).
func TestModelTokenForms(t *testing.T) {
	m1, _ := loadFixture(t, "tiny_a")
	msgs := []Message{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "yo"}}
	ids, err := m1.FormatChat(msgs)
	if err != nil || string(int32sToBytes(ids)) != string(FormatTranscript(msgs)) {
		t.Fatalf("generation 1 transcript %q (%v)", int32sToBytes(ids), err)
	}
	if ids, _ := m1.FormatMessages(msgs); string(int32sToBytes(ids)) != "user: hi\nassistant: yo\n" {
		t.Fatalf("generation 1 messages %q", int32sToBytes(ids))
	}
	for _, id := range []int{'a', '\n', 0xc3, 0xff} {
		if m1.TokenText(id) != TokenText(id) || m1.TokenDisplay(id) != TokenDisplay(id) || !bytes.Equal(m1.TokenBytes(id), []byte{byte(id)}) {
			t.Fatalf("generation 1 token %d: %q %q %q", id, m1.TokenText(id), m1.TokenDisplay(id), m1.TokenBytes(id))
		}
	}
	m2, _ := loadGen2Fixture(t, "tiny_gen2_a", fixtureOptions)
	full, _ := m2.FormatChat(msgs)
	if ids, _ := m2.FormatMessages(msgs); ids[0] != gguf.ChatUserID || !slices.Equal(append(ids, gguf.ChatAssistantID), full) {
		t.Fatalf("generation 2 messages %v, chat %v", ids, full)
	}
	if m2.TokenDisplay(7+0x0a) != `\x0a` || m2.TokenText(gguf.ChatEndOfTurnID) != m2.Decode([]int32{gguf.ChatEndOfTurnID}) {
		t.Fatalf("generation 2 byte piece %q, eot %q", m2.TokenDisplay(7+0x0a), m2.TokenText(gguf.ChatEndOfTurnID))
	}
	spaced := m2.Encode([]byte("hello there"))
	i := slices.IndexFunc(spaced, func(id int32) bool { return strings.HasPrefix(m2.Tokenizer().Piece(int(id)), "\u2581") })
	if i < 0 {
		t.Fatalf("no piece of %v starts with a space", spaced)
	}
	last := int(spaced[i])
	if piece := m2.Tokenizer().Piece(last); !strings.HasPrefix(piece, "\u2581") || m2.TokenDisplay(last) != " "+piece[len("\u2581"):] ||
		string(m2.TokenBytes(last)) != m2.TokenDisplay(last) {
		t.Fatalf("piece %q shows as %q, bytes %q", piece, m2.TokenDisplay(last), m2.TokenBytes(last))
	}
}

// gen2Typical is the size niels-gpt trains generation-2 models at.
var gen2Typical = gguf.ModelConfig{Vocab: 16000, Context: 512, Embd: 384, Layers: 8, Heads: 6, FF: 1152, RopeTheta: 10000,
	NormEps: 1e-5, Norm: gguf.NormRMS, MLP: gguf.MLPSwiGLU}

// syntheticGen2Model is a generation-2 model of shape cfg with random weights and the
// fixture tokenizer's vocabulary grown to cfg.Vocab with pieces of its own.
func syntheticGen2Model(tb testing.TB, cfg gguf.ModelConfig, opts Options) *Model {
	tb.Helper()
	sp, err := tokenizer.LoadModel(filepath.Join("..", "testdata", "spm", "tiny.model"))
	if err != nil {
		tb.Fatal(err)
	}
	voc := sp.Export()
	for i := len(voc.Pieces); i < cfg.Vocab; i++ {
		voc.Pieces = append(voc.Pieces, tokenizer.Piece{Text: fmt.Sprintf("\u2581p%05d", i), Score: -20, Type: tokenizer.PieceNormal})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	weights := map[string][]float32{}
	for _, spec := range cfg.Tensors() {
		n := 1
		for _, d := range spec.Shape {
			n *= d
		}
		w := make([]float32, n)
		for i := range w {
			if strings.HasSuffix(spec.StateKey, "ln1.weight") || strings.HasSuffix(spec.StateKey, "ln2.weight") || spec.StateKey == "ln_f.weight" {
				w[i] = 1
			} else {
				w[i] = float32(rng.NormFloat64() * 0.05)
			}
		}
		weights[spec.Name] = w
	}
	var buf bytes.Buffer
	if err := gguf.WriteWithVocabulary(&buf, cfg, weights, gguf.Vocabulary{Vocab: voc, SHA256: strings.Repeat("ab", 32)},
		gguf.Source{SHA256: strings.Repeat("cd", 32)}, gguf.WriteOptions{F16: os.Getenv("NIELSGPT_BENCH_F16") == "1"}); err != nil {
		tb.Fatal(err)
	}
	m, err := LoadBytes(buf.Bytes(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(m.Close)
	return m
}

// One traced decode step of a typical generation-2 model at context 128, the token sampled
// with repetition_penalty and top_p: BenchmarkDecodeStepTraced's measure for generation 2.
func BenchmarkGen2DecodeStepTraced(b *testing.B) {
	m := syntheticGen2Model(b, gen2Typical, Options{Threads: benchThreads()})
	c := m.Config()
	prompt := make([]int32, 128)
	for i := range prompt {
		prompt[i] = int32(7 + (i*131)%(c.Vocab-7))
	}
	s := newSampler(Sampling{Temperature: 0.8, TopK: 50, TopP: 0.9, RepetitionPenalty: 1.2, Seed: 42}, c.Vocab, gen2RoleIDs...)
	for _, id := range prompt {
		s.observe(int(id))
	}
	benchDecodeStep(b, m, prompt, s)
}

// The deeper traces on a generation-2 model: extra layers' rows are the traced layer's
// where they coincide, the logit lens's last layer is the model's own distribution (the
// final RMSNorm applied), and ablating heads changes what the model computes.
func TestGen2DeeperTraces(t *testing.T) {
	m, g := loadGen2Fixture(t, "tiny_gen2_a", fixtureOptions)
	c := m.Config()
	gr := g.Greedy
	const steps = 12
	var got []int
	_, err := m.Generate(context.Background(), GenerateRequest{
		Messages: gen2GreedyMessages, MaxNewTokens: steps, TraceLayer: gr.TraceLayer,
		TraceLayers: []int{1, 0}, LogitLens: true, Logprobs: true, TopLogprobs: 1,
	}, func(s *Step) error {
		got = append(got, s.TokenID)
		if len(s.Layers) != 2 || s.Layers[0].Layer != 1 || s.Layers[1].Layer != 0 || len(s.Lens) != c.Layers {
			return fmt.Errorf("step %d: layers %d, lens %d", s.Index, len(s.Layers), len(s.Lens))
		}
		for h := range s.Attn {
			if d := maxAbsDiff(s.Layers[0].Attn[h], gr.AttnRows[s.Index][h]); d > attnTol {
				return fmt.Errorf("step %d head %d: trace_layers row differs from PyTorch by %.2e", s.Index, h, d)
			}
		}
		own := s.Lens[c.Layers-1].Candidates[0]
		if own.TokenID != s.TopLogprobs[0].TokenID || math.Abs(own.Prob-math.Exp(s.TopLogprobs[0].Logprob)) > 1e-5 {
			return fmt.Errorf("step %d: the lens's last layer %+v is not the model's own %+v", s.Index, own, s.TopLogprobs[0])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, gr.Tokens[:steps]) {
		t.Fatalf("traced greedy tokens %v, PyTorch %v", got, gr.Tokens[:steps])
	}
	var ablated []int
	_, err = m.Generate(context.Background(), GenerateRequest{
		Messages: gen2GreedyMessages, MaxNewTokens: steps, TraceLayer: -1,
		Ablate: []Head{{Layer: 0, Head: 0}, {Layer: 0, Head: 1}, {Layer: 1, Head: 0}, {Layer: 1, Head: 1}},
	}, func(s *Step) error { ablated = append(ablated, s.TokenID); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(ablated, got) {
		t.Fatalf("ablating every head changed nothing: %v", ablated)
	}
}

// window_hop on a generation-2 model: greedy chats past T with hops of 1, 5 and T-1 choose
// the tokens that recomputing each step's window from position 0 (the hop rule's window,
// the role pieces banned) chooses.
func TestGen2WindowHopMatchesRecompute(t *testing.T) {
	m, _ := loadGen2Fixture(t, "tiny_gen2_b", fixtureOptions)
	c := m.Config()
	prompt, err := m.FormatChat(gen2GreedyMessages)
	if err != nil {
		t.Fatal(err)
	}
	const steps = 60 // T = 20: the window moves many times
	for _, hop := range []int{1, 5, c.Context - 1} {
		var got []int
		if _, err := m.Generate(context.Background(), GenerateRequest{Messages: gen2GreedyMessages, MaxNewTokens: steps,
			TraceLayer: -1, WindowHop: hop}, func(s *Step) error { got = append(got, s.TokenID); return nil }); err != nil {
			t.Fatal(err)
		}
		seq := &sequence{tokens: slices.Clone(prompt), hop: hop, winStart: -1}
		logits := make([]float32, c.Vocab)
		cache := newCache(t, m, c.Context) // rewritten from position 0 for every window
		for i := range got {
			window := seq.tokens[seq.windowStart(c.Context):]
			runStep(t, m, stepItem{cache: cache, tokens: window, logits: logits})
			for _, id := range gen2RoleIDs {
				logits[id] = float32(math.Inf(-1))
			}
			if want := argmax(logits); got[i] != want {
				t.Fatalf("hop %d step %d: token %d, the recomputed window's %d", hop, i, got[i], want)
			}
			seq.tokens = append(seq.tokens, int32(got[i]))
			if got[i] == gguf.ChatEndOfTurnID {
				break
			}
		}
		if len(prompt)+len(got) < c.Context+hop {
			t.Fatalf("hop %d: %d tokens never moved the window", hop, len(got))
		}
	}
}
