package engine

// The deeper traces against PyTorch (testdata/golden/*_deep.json, written by
// scripts/make_fixtures.py): every layer's attention rows, the logit lens,
// head ablation in generation and in scoring; and how they batch and reuse
// graphs.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"nielsgpt/internal/harness"
)

const lensTol = 1e-4

type deepGolden struct {
	Config    struct{ T int } `json:"config"`
	Prompt    []int32         `json:"prompt"`
	Steps     int             `json:"steps"`
	Tokens    []int           `json:"tokens"`
	LayerRows [][][][]float32 `json:"layer_rows"` // [step][layer][head][t]
	LensSteps int             `json:"lens_steps"`
	Lens      [][][]float64   `json:"lens"` // [step][layer][V] probabilities
	Ablated   struct {
		Heads           [][2]int `json:"heads"`
		Tokens          []int    `json:"tokens"`
		FirstDifference int      `json:"first_difference"`
	} `json:"ablated"`
	Score struct {
		Text     []byte    `json:"-"`
		TextIDs  []int     `json:"text"`
		Offset   int       `json:"offset"`
		Ablate   [][2]int  `json:"ablate"`
		Logprobs []float64 `json:"logprobs"`
		Entropy  []float64 `json:"entropy"`
	} `json:"score"`
}

func readDeepGolden(t testing.TB, name string) *deepGolden {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "golden", name+"_deep.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g deepGolden
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	for _, id := range g.Score.TextIDs {
		g.Score.Text = append(g.Score.Text, byte(id))
	}
	return &g
}

func heads(pairs [][2]int) []Head {
	out := make([]Head, len(pairs))
	for i, p := range pairs {
		out[i] = Head{Layer: p[0], Head: p[1]}
	}
	return out
}

func allLayers(n int) []int {
	layers := make([]int, n)
	for i := range layers {
		layers[i] = n - 1 - i // last first: Step.Layers follows the request's order
	}
	return layers
}

// Greedy with trace_layers "all" and the logit lens: the same tokens as
// PyTorch, every layer's newest attention row within 1e-5 (through window
// slides), and each layer's lens distribution within 1e-4.
func TestDeepTraceMatchesPyTorch(t *testing.T) {
	for _, name := range fixtureNames {
		t.Run(name, func(t *testing.T) {
			m, _ := loadFixture(t, name)
			c := m.Config()
			g := readDeepGolden(t, name)
			if len(g.Prompt)+g.Steps <= c.Context || g.LensSteps < 1 {
				t.Fatalf("the golden must slide the window and hold lens steps")
			}
			layers := allLayers(c.Layers)
			r := generate(t, m, GenerateRequest{
				Prompt: int32sToBytes(g.Prompt), MaxNewTokens: g.Steps, TraceLayer: 1,
				TraceLayers: layers, LogitLens: true,
			})
			if !slices.Equal(r.tokens, g.Tokens) {
				t.Fatalf("tokens %v, PyTorch %v", r.tokens, g.Tokens)
			}
			worstAttn, worstLens := 0.0, 0.0
			for i, s := range r.steps {
				if len(s.Layers) != len(layers) || len(s.Lens) != c.Layers {
					t.Fatalf("step %d: %d layers, %d lens entries", i, len(s.Layers), len(s.Lens))
				}
				for k, la := range s.Layers {
					if la.Layer != layers[k] || len(la.Attn) != c.Heads {
						t.Fatalf("step %d: entry %d is layer %d with %d heads", i, k, la.Layer, len(la.Attn))
					}
					for h, row := range la.Attn {
						worstAttn = math.Max(worstAttn, maxAbsDiff(row, g.LayerRows[i][la.Layer][h]))
					}
				}
				for h, row := range s.Attn { // trace_layer keeps its meaning beside them
					if d := maxAbsDiff(row, g.LayerRows[i][1][h]); d > attnTol {
						t.Fatalf("step %d: the trace_layer row of head %d differs by %.2e", i, h, d)
					}
				}
				if i < g.LensSteps {
					for l, lens := range s.Lens {
						worstLens = math.Max(worstLens, checkLens(t, i, lens, l, g.Lens[i][l]))
					}
				}
			}
			t.Logf("%d steps: max |Δattn| %.2e over %d layers, max |Δlens| %.2e over %d steps",
				len(r.steps), worstAttn, c.Layers, worstLens, g.LensSteps)
			if worstAttn > attnTol || worstLens > lensTol {
				t.Fatalf("max |Δattn| %.2e (tol %.0e), max |Δlens| %.2e (tol %.0e)", worstAttn, attnTol, worstLens, lensTol)
			}
		})
	}
}

// checkLens compares one layer's lens entry with PyTorch's distribution and
// returns the largest difference in probability or entropy.
func checkLens(t *testing.T, step int, got LensLayer, layer int, want []float64) float64 {
	t.Helper()
	if got.Layer != layer || len(got.Candidates) != LensTop {
		t.Fatalf("step %d: lens entry of layer %d has layer %d and %d candidates", step, layer, got.Layer, len(got.Candidates))
	}
	entropy := 0.0
	for _, p := range want {
		entropy -= p * math.Log(math.Max(p, 1e-12))
	}
	worst := math.Abs(got.Entropy - entropy)
	fifth := slices.Clone(want)
	slices.Sort(fifth)
	for k, cand := range got.Candidates {
		worst = math.Max(worst, math.Abs(cand.Prob-want[cand.TokenID]))
		if want[cand.TokenID] < fifth[len(fifth)-LensTop]-lensTol {
			t.Fatalf("step %d layer %d: candidate %d (token %d, p %.4f) is not among PyTorch's top %d",
				step, layer, k, cand.TokenID, want[cand.TokenID], LensTop)
		}
		if k > 0 && cand.Prob > got.Candidates[k-1].Prob {
			t.Fatalf("step %d layer %d: candidates out of order", step, layer)
		}
	}
	return worst
}

// Greedy with heads ablated, prompt included: PyTorch's ablated tokens,
// which differ from the plain run's, so an engine that ignored the mask
// would fail here.
func TestAblationMatchesPyTorch(t *testing.T) {
	for _, name := range fixtureNames {
		t.Run(name, func(t *testing.T) {
			m, _ := loadFixture(t, name)
			g := readDeepGolden(t, name)
			if len(g.Ablated.Tokens) < 64 || slices.Equal(g.Ablated.Tokens, g.Tokens) {
				t.Fatal("the golden's ablated run must be 64+ steps and differ from the plain one")
			}
			// hop 5 (past T, where the engine extends a rebuilt window through
			// the cache) agrees with the hop-1 reference up to the window's
			// first move, and must not crash or drop the mask after it.
			for _, hop := range []int{1, 5} {
				r := generate(t, m, GenerateRequest{
					Prompt: int32sToBytes(g.Prompt), MaxNewTokens: g.Steps, TraceLayer: -1,
					Ablate: heads(g.Ablated.Heads), WindowHop: hop,
				})
				if hop == 1 && !slices.Equal(r.tokens, g.Ablated.Tokens) {
					t.Fatalf("ablating %v: tokens %v, PyTorch %v", g.Ablated.Heads, r.tokens, g.Ablated.Tokens)
				}
				n := g.Config.T - len(g.Prompt) + 1 // steps before the window first moves
				if !slices.Equal(r.tokens[:n], g.Ablated.Tokens[:n]) {
					t.Fatalf("hop %d: the first %d ablated tokens differ from PyTorch's", hop, n)
				}
			}
		})
	}
}

// An ablated head's traced probabilities are still its softmax: at the
// first step the ablated layer's rows are the plain run's (only later
// layers see the zeroed output).
func TestAblatedHeadStillTracesItsSoftmax(t *testing.T) {
	m, _ := loadFixture(t, "tiny_a")
	g := readDeepGolden(t, "tiny_a")
	ablate := heads(g.Ablated.Heads)
	r := generate(t, m, GenerateRequest{
		Prompt: int32sToBytes(g.Prompt), MaxNewTokens: 1, TraceLayer: ablate[0].Layer, Ablate: ablate,
	})
	for h, row := range r.attn[0] {
		if d := maxAbsDiff(row, g.LayerRows[0][ablate[0].Layer][h]); d > attnTol {
			t.Fatalf("head %d of the ablated layer differs from the plain softmax by %.2e", h, d)
		}
	}
}

// Scoring in one pass with heads ablated: PyTorch's log-probabilities and
// entropies of the window.
func TestScoreAblatedMatchesPyTorch(t *testing.T) {
	for _, name := range fixtureNames {
		t.Run(name, func(t *testing.T) {
			m, _ := loadFixture(t, name)
			g := readDeepGolden(t, name).Score
			sc, err := m.Score(context.Background(), ScoreRequest{Text: g.Text, TopN: 3, Ablate: heads(g.Ablate)})
			if err != nil {
				t.Fatal(err)
			}
			if sc.Offset != g.Offset || len(sc.Positions) != len(g.Logprobs)+1 {
				t.Fatalf("offset %d, %d positions; want %d, %d", sc.Offset, len(sc.Positions), g.Offset, len(g.Logprobs)+1)
			}
			worst := 0.0
			for i, p := range sc.Positions[1:] {
				worst = math.Max(worst, math.Max(math.Abs(p.Logprob-g.Logprobs[i]), math.Abs(p.Entropy-g.Entropy[i])))
			}
			t.Logf("max |Δ| %.2e over %d positions", worst, len(g.Logprobs))
			if worst > logprobTol {
				t.Fatalf("scores differ by %.2e", worst)
			}
			plain, err := m.Score(context.Background(), ScoreRequest{Text: g.Text})
			if err != nil {
				t.Fatal(err)
			}
			if plain.Positions[len(plain.Positions)-1].Logprob == sc.Positions[len(sc.Positions)-1].Logprob {
				t.Fatal("ablation changed nothing in the scores")
			}
		})
	}
}

// Traced, lens, ablated and plain streams batched together get what each
// gets alone, through prompt chunks and window slides: the same tokens and
// attention exactly, the lens within float32 rounding (ggml multiplies a
// single row of logits by another kernel than several, which rounds
// differently in the last bits).
func TestDeepBatchedEqualsAlone(t *testing.T) {
	m, _ := loadFixture(t, "tiny_b")
	c := m.Config()
	var reqs []GenerateRequest
	for i := range 8 {
		chat := []Message{{Role: "user", Content: fmt.Sprintf("deep %d %s", i, string(make([]byte, i*5)))}}
		req := GenerateRequest{Messages: chat, MaxNewTokens: 25 + 5*i, TraceLayer: -1,
			Sampling: Sampling{Temperature: 0.8, TopK: 40, Seed: int64(i)}}
		if i%2 == 0 {
			req.TraceLayer = i % c.Layers
			req.TraceLayers = allLayers(c.Layers)[:1+i%c.Layers]
		}
		if i%3 == 0 {
			req.LogitLens = true
		}
		if i%4 != 3 {
			req.Ablate = []Head{{Layer: i % c.Layers, Head: i % c.Heads}}
		}
		reqs = append(reqs, req)
	}
	alone, together := aloneAndTogether(t, m, reqs)
	for i := range reqs {
		a, b := alone[i], together[i]
		if !slices.Equal(a.tokens, b.tokens) {
			t.Fatalf("request %d: tokens alone %v, batched %v", i, a.tokens, b.tokens)
		}
		for s := range a.steps {
			if d := stepDiff(a.steps[s], b.steps[s]); d != "" {
				t.Fatalf("request %d step %d: %s", i, s, d)
			}
		}
	}
}

// stepDiff says how two steps' traces differ, or "" when they are the same.
func stepDiff(a, b *Step) string {
	if len(a.Layers) != len(b.Layers) || len(a.Lens) != len(b.Lens) || len(a.Attn) != len(b.Attn) {
		return "different shapes"
	}
	for h := range a.Attn {
		if d := maxAbsDiff(a.Attn[h], b.Attn[h]); d != 0 {
			return fmt.Sprintf("attn head %d differs by %.2e", h, d)
		}
	}
	for k := range a.Layers {
		for h := range a.Layers[k].Attn {
			if d := maxAbsDiff(a.Layers[k].Attn[h], b.Layers[k].Attn[h]); d != 0 || a.Layers[k].Layer != b.Layers[k].Layer {
				return fmt.Sprintf("layer entry %d head %d differs by %.2e", k, h, d)
			}
		}
	}
	const lensRounding = 1e-5
	for l := range a.Lens {
		ea, eb := a.Lens[l], b.Lens[l]
		if math.Abs(ea.Entropy-eb.Entropy) > lensRounding || len(ea.Candidates) != len(eb.Candidates) {
			return fmt.Sprintf("lens of layer %d: entropy %v, %v", l, ea.Entropy, eb.Entropy)
		}
		for k := range ea.Candidates {
			ca, cb := ea.Candidates[k], eb.Candidates[k]
			if ca.TokenID != cb.TokenID || math.Abs(ca.Prob-cb.Prob) > lensRounding {
				return fmt.Sprintf("lens of layer %d: candidate %d is %+v, %+v", l, k, ca, cb)
			}
		}
	}
	return ""
}

// Changing which heads are ablated, or which layers are traced, changes
// input data only: the graph kept for the shape runs again. The mask's
// values still reach the maths.
func TestGraphReusedAcrossMasksAndLayers(t *testing.T) {
	m, g := loadFixture(t, "tiny_a")
	c := m.Config()
	cache := newCache(t, m, c.Context)
	prompt := g.Greedy.Prompt
	n := len(prompt)
	runStep(t, m, stepItem{cache: cache, tokens: prompt[:n-1]})
	keep := make([]float32, c.Layers*c.Heads)
	for i := range keep {
		keep[i] = 1
	}
	mask := func(ablated int) []float32 {
		out := slices.Clone(keep)
		if ablated >= 0 {
			out[ablated] = 0
		}
		return out
	}
	decode := func(headMask []float32, layers []int32) []float32 {
		it := stepItem{cache: cache, tokens: prompt[n-1:], nPast: n - 1, logits: make([]float32, c.Vocab),
			traceLayers: layers, attnRows: make([]float32, len(layers)*c.Heads*n), headMask: headMask}
		runStep(t, m, it)
		return it.logits
	}
	plain := decode(keep, []int32{0})
	built := m.graphsBuilt()
	var changed int
	for i := range c.Layers * c.Heads {
		if maxAbsDiff(decode(mask(i), []int32{int32(i % c.Layers)}), plain) > 0 {
			changed++
		}
	}
	if again := decode(keep, []int32{1, 0}); maxAbsDiff(again, plain) != 0 {
		t.Fatalf("an all-ones mask after others: logits differ by %.2e", maxAbsDiff(again, plain))
	}
	if m.graphsBuilt() != built {
		t.Fatalf("%d graphs built for steps that changed only the mask and the traced layers", m.graphsBuilt()-built)
	}
	if changed != c.Layers*c.Heads {
		t.Fatalf("ablating one head changed the logits for %d of %d heads", changed, c.Layers*c.Heads)
	}
	// The lens changes the graph's shape: one more graph, kept in turn.
	lens := stepItem{cache: cache, tokens: prompt[n-1:], nPast: n - 1, logits: make([]float32, c.Vocab),
		lens: make([]float32, c.Layers*c.Vocab), headMask: keep}
	runStep(t, m, lens)
	runStep(t, m, lens)
	if m.graphsBuilt() != built+1 {
		t.Fatalf("%d graphs built for the lens, want 1", m.graphsBuilt()-built)
	}
	if d := maxAbsDiff(lens.lens[(c.Layers-1)*c.Vocab:], plain); d != 0 {
		t.Fatalf("the last layer's lens differs from the logits by %.2e", d)
	}
}

// One decode step at context 128 of the deployed model, as a stream with
// trace_layer alone runs it, against one with more: another layer traced,
// trace_layers "all", the logit lens, a head ablated. Each iteration runs one
// step of each, alternating, so both see the same load on a noisy machine;
// the deep stream's rate relative to the plain one is rate_ratio. A step is
// the engine step, the sampled token, and (lens) every layer's entropy and
// top 5.
func BenchmarkDecodeStepDeep(b *testing.B) {
	m := syntheticModel(b, harness.Deployed, Options{Threads: benchThreads()})
	c := m.Config()
	const ctxLen = 128
	prompt := make([]int32, ctxLen)
	for i := range prompt {
		prompt[i] = int32("user: tell me about niels\nassistant: "[i%37])
	}
	all := make([]int32, c.Layers)
	for i := range all {
		all[i] = int32(i)
	}
	mask := make([]float32, c.Layers*c.Heads)
	for i := range mask {
		mask[i] = 1
	}
	mask[1] = 0
	type stream struct {
		layers []int32
		lens   bool
		mask   []float32
	}
	// a decoding stream at context 128, and what one step of it does
	prepare := func(b *testing.B, st stream) func() {
		cache := newCache(b, m, ctxLen)
		if err := m.step([]stepItem{{cache: cache, tokens: prompt[:ctxLen-1], headMask: st.mask}}); err != nil {
			b.Fatal(err)
		}
		s := newSampler(Sampling{Temperature: 0.9, TopK: 50, Seed: 42}, c.Vocab)
		it := stepItem{cache: cache, tokens: prompt[ctxLen-1:], nPast: ctxLen - 1,
			logits: make([]float32, c.Vocab), traceLayers: st.layers,
			attnRows: make([]float32, len(st.layers)*c.Heads*ctxLen), headMask: st.mask}
		var lens []LensLayer
		if st.lens {
			it.lens = make([]float32, c.Layers*c.Vocab)
			lens = newLensLayers(c.Layers)
		}
		return func() {
			if err := m.step([]stepItem{it}); err != nil {
				b.Fatal(err)
			}
			s.sample(it.logits)
			if st.lens {
				describeLens(lens, it.lens, c.Vocab)
			}
		}
	}
	cases := []struct {
		name string
		deep stream
	}{
		{"two_layers", stream{layers: []int32{2, 0}}},
		{"ablated", stream{layers: []int32{2}, mask: mask}},
		{"all_layers", stream{layers: all}},
		{"all_layers+lens", stream{layers: all, lens: true}},
		{"all_layers+lens+ablated", stream{layers: all, lens: true, mask: mask}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			plain, deep := prepare(b, stream{layers: []int32{2}}), prepare(b, tc.deep)
			plain() // each pays for its graph before the clock starts
			deep()
			var plainTime, deepTime time.Duration
			b.ResetTimer()
			for b.Loop() {
				began := time.Now()
				plain()
				mid := time.Now()
				deep()
				plainTime += mid.Sub(began)
				deepTime += time.Since(mid)
			}
			n := float64(b.N)
			b.ReportMetric(plainTime.Seconds()/n*1e6, "plain-µs/step")
			b.ReportMetric(deepTime.Seconds()/n*1e6, "deep-µs/step")
			b.ReportMetric(plainTime.Seconds()/deepTime.Seconds(), "rate_ratio")
		})
	}
}

// The Go side of the lens for one step of the deployed model: every layer's
// softmax, entropy and top 5.
func BenchmarkDescribeLens(b *testing.B) {
	c := harness.Deployed
	rng := rand.New(rand.NewPCG(3, 4))
	logits := make([]float32, c.Layers*c.Vocab)
	for i := range logits {
		logits[i] = float32(rng.NormFloat64() * 3)
	}
	lens := newLensLayers(c.Layers)
	b.ReportAllocs()
	for b.Loop() {
		describeLens(lens, logits, c.Vocab)
	}
}

// Whole generations through the scheduler, one stream, 128 tokens from a
// short prompt: trace_layer alone against trace_layers "all" with the logit
// lens, alternating as in BenchmarkDecodeStepDeep.
func BenchmarkGenerateDeep(b *testing.B) {
	m := syntheticModel(b, harness.Deployed, Options{Threads: benchThreads()})
	c := m.Config()
	chat := []Message{{Role: "user", Content: "tell me about niels"}}
	run := func(req GenerateRequest) time.Duration {
		req.Messages, req.MaxNewTokens, req.TraceLayer = chat, 128, 3
		req.Sampling = Sampling{Temperature: 0.9, TopK: 50, Seed: 42}
		began := time.Now()
		if _, err := m.Generate(context.Background(), req, func(*Step) error { return nil }); err != nil {
			b.Fatal(err)
		}
		return time.Since(began)
	}
	deep := GenerateRequest{TraceLayers: allLayers(c.Layers), LogitLens: true}
	run(GenerateRequest{})
	run(deep)
	var plainTime, deepTime time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		plainTime += run(GenerateRequest{})
		deepTime += run(deep)
	}
	tokens := float64(128 * b.N)
	b.ReportMetric(tokens/plainTime.Seconds(), "plain-tokens/s")
	b.ReportMetric(tokens/deepTime.Seconds(), "deep-tokens/s")
	b.ReportMetric(plainTime.Seconds()/deepTime.Seconds(), "rate_ratio")
}

// The lens's description of a distribution: ties go to the lower id, tokens
// of probability 0 are never candidates, and the entropy is the sampler's.
func TestDescribeLogits(t *testing.T) {
	top := make([]Candidate, 0, LensTop)
	entropy, got := describeLogits([]float32{2, 2, 2, 2, 2, 2, 2, 2}, top)
	if math.Abs(entropy-math.Log(8)) > 1e-12 || len(got) != LensTop {
		t.Fatalf("uniform: entropy %v, %d candidates", entropy, len(got))
	}
	for k, c := range got {
		if c.TokenID != k || math.Abs(c.Prob-0.125) > 1e-15 {
			t.Fatalf("uniform: candidate %d is %+v", k, c)
		}
	}
	entropy, got = describeLogits([]float32{0, 1000, 0, 3, 1000}, top)
	if math.Abs(entropy-math.Log(2)) > 1e-12 || len(got) != 2 || got[0].TokenID != 1 || got[1].TokenID != 4 {
		t.Fatalf("two certain tokens: entropy %v, candidates %+v", entropy, got)
	}
	_, got = describeLogits([]float32{1, 5, 3, 4, 2, 6, 0}, top)
	if ids := []int{got[0].TokenID, got[1].TokenID, got[2].TokenID, got[3].TokenID, got[4].TokenID}; !slices.Equal(ids, []int{5, 1, 3, 2, 4}) {
		t.Fatalf("order %v", ids)
	}
}

// Ablation reaches the prompt: a prompt fed in two chunks with a head
// ablated leaves the model with the distribution one ablated pass over the
// same bytes gives (Score), and not the plain one.
func TestAblationCoversChunkedPrompt(t *testing.T) {
	m := syntheticModel(t, harness.Deployed, Options{Threads: 1})
	prompt := []byte(strings.Repeat("user: the prompt is long enough for two chunks.\n", 6))[:250]
	ablate := []Head{{Layer: 0, Head: 1}, {Layer: 2, Head: 3}}
	var first *Step
	_, err := m.Generate(context.Background(), GenerateRequest{Prompt: prompt, MaxNewTokens: 1, TraceLayer: -1,
		Ablate: ablate, Logprobs: true, Sampling: Sampling{Temperature: 0}}, func(s *Step) error {
		first = s.Clone()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	text := append(slices.Clone(prompt), byte(first.TokenID))
	for _, tc := range []struct {
		ablate []Head
		same   bool
	}{{ablate, true}, {nil, false}} {
		sc, err := m.Score(context.Background(), ScoreRequest{Text: text, Ablate: tc.ablate})
		if err != nil {
			t.Fatal(err)
		}
		d := math.Abs(sc.Positions[len(text)-1].Logprob - first.Logprob)
		if tc.same && d > 1e-5 || !tc.same && d < 1e-6 {
			t.Fatalf("ablate %v: the one-pass log-probability differs from the chunked one by %.2e", tc.ablate, d)
		}
	}
}

// FullAttention honours Ablate: ablating a head of layer 0 leaves layer 0's
// probabilities as they were (the traced softmax is the head's own) and
// changes every later layer's, through the prompt's one pass.
func TestFullAttentionAblated(t *testing.T) {
	m, g := loadFixture(t, "tiny_b")
	c := m.Config()
	layers := allLayers(c.Layers)
	req := FullAttnRequest{Prompt: int32sToBytes(g.Prefill.Tokens), Layers: layers}
	plain, err := m.FullAttention(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	req.Ablate = []Head{{Layer: 0, Head: 1}}
	ablated, err := m.FullAttention(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	for k, layer := range layers {
		worst := 0.0
		for h := range c.Heads {
			for r := range plain.Attn[k][h] {
				worst = math.Max(worst, maxAbsDiff(ablated.Attn[k][h][r], plain.Attn[k][h][r]))
			}
		}
		if layer == 0 && worst != 0 || layer > 0 && worst < 1e-4 {
			t.Fatalf("layer %d: ablating a head of layer 0 moved its probabilities by %.2e", layer, worst)
		}
	}
}
