package engine

// The engine against PyTorch: goldens written by scripts/make_fixtures.py from
// a PyTorch implementation of the model (testdata/golden/*.json), for fixture
// checkpoints of two shapes. tiny_b has T = 24, so 80 greedy steps slide the
// window many times.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"nielsgpt/convert"
	"nielsgpt/internal/testkit"
)

const (
	logitTol = 1e-4
	attnTol  = 1e-5
)

var fixtureNames = []string{"tiny_a", "tiny_b"}

// fixtureOptions load every fixture; modules_test.go changes the device.
var fixtureOptions = Options{Threads: 1}

type golden struct {
	Model  string `json:"model"`
	Config struct {
		V, T, C, L, H int
		DFF           int     `json:"d_ff"`
		RopeTheta     float64 `json:"rope_theta"`
	} `json:"config"`
	Prefill struct {
		Tokens []int32         `json:"tokens"`
		Logits [][]float32     `json:"logits"`
		Attn   [][][][]float32 `json:"attn"` // [L][H][t][t]
	} `json:"prefill"`
	Greedy struct {
		Prompt     []int32       `json:"prompt"`
		Steps      int           `json:"steps"`
		Tokens     []int         `json:"tokens"`
		Logits     [][]float32   `json:"logits"`
		TraceLayer int           `json:"trace_layer"`
		AttnRows   [][][]float32 `json:"attn_rows"` // [step][H][t]
		chat       []Message     // Prompt is a chat's transcript: the chat
	} `json:"greedy"`
}

func readGolden(t testing.TB, name string) *golden {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "golden", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	g.Greedy.chat = chatOf(t, int32sToBytes(g.Greedy.Prompt))
	return &g
}

// forEachFixture runs check as a subtest on every fixture model with its
// PyTorch goldens.
func forEachFixture(t *testing.T, check func(t *testing.T, m *Model, g *golden)) {
	for _, name := range fixtureNames {
		t.Run(name, func(t *testing.T) {
			m, g := loadFixture(t, name)
			check(t, m, g)
		})
	}
}

func loadFixture(t testing.TB, name string) (*Model, *golden) {
	t.Helper()
	return loadFixtureWith(t, name, fixtureOptions)
}

// loadFixtureWith loads a fixture with opts, on fixtureOptions' device
// when opts names none.
func loadFixtureWith(t testing.TB, name string, opts Options) (*Model, *golden) {
	t.Helper()
	if opts.Device == "" {
		opts.Device = fixtureOptions.Device
	}
	g := readGolden(t, name)
	m, err := LoadFile(testkit.ConvertedFixture(t, filepath.Join("..", "testdata", "models", name+".pt")), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	c := m.Config()
	if c.Vocab != g.Config.V || c.Context != g.Config.T || c.Embd != g.Config.C || c.Layers != g.Config.L ||
		c.Heads != g.Config.H || c.FF != g.Config.DFF || c.RopeTheta != float64(float32(g.Config.RopeTheta)) ||
		c.NormEps != float64(float32(convert.LayerNormEps)) {
		t.Fatalf("%s: config %+v does not match the golden %+v", name, c, g.Config)
	}
	return m, g
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	worst := 0.0
	for i := range a {
		worst = math.Max(worst, math.Abs(float64(a[i])-float64(b[i])))
	}
	return worst
}

// newCache makes a KV cache for capacity tokens, freed when the test ends.
func newCache(tb testing.TB, m *Model, capacity int) *kvCache {
	tb.Helper()
	cache, err := m.newKVCache(capacity)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(cache.free)
	return cache
}

// runStep drives the cache by hand. The scheduler touches the C model only
// while it has sequences, and these tests give it none.
func runStep(t testing.TB, m *Model, it stepItem) {
	t.Helper()
	if err := m.step([]stepItem{it}); err != nil {
		t.Fatal(err)
	}
}

// One token at a time through the KV cache: every position's logits and
// every layer's newest attention row against the golden prefill.
func TestDecodeMatchesPyTorch(t *testing.T) {
	forEachFixture(t, checkDecode)
}

func checkDecode(t *testing.T, m *Model, g *golden) {
	c := m.Config()
	tokens := g.Prefill.Tokens
	cache := newCache(t, m, len(tokens))
	worstLogit, worstAttn := 0.0, 0.0
	layers := reversedLayers(c.Layers) // any order: the rows follow the list
	for pos := range tokens {
		tl := pos + 1
		it := stepItem{
			cache: cache, tokens: tokens[pos : pos+1], nPast: pos,
			logits: make([]float32, c.Vocab), traceLayers: layers,
			attnRows: make([]float32, len(layers)*c.Heads*tl),
		}
		runStep(t, m, it)
		worstLogit = math.Max(worstLogit, maxAbsDiff(it.logits, g.Prefill.Logits[pos]))
		for k, layer := range layers {
			for h := 0; h < c.Heads; h++ {
				want := g.Prefill.Attn[layer][h][pos][:tl]
				at := (k*c.Heads + h) * tl
				worstAttn = math.Max(worstAttn, maxAbsDiff(it.attnRows[at:at+tl], want))
			}
		}
	}
	t.Logf("max |Δlogit| %.2e, max |Δattn| %.2e over %d positions", worstLogit, worstAttn, len(tokens))
	if worstLogit > logitTol || worstAttn > attnTol {
		t.Fatalf("max |Δlogit| %.2e (tol %.0e), max |Δattn| %.2e (tol %.0e)", worstLogit, logitTol, worstAttn, attnTol)
	}
}

// The whole window in one pass, and in uneven chunks: the full matrices of
// every layer and head, and the last position's logits.
func TestPrefillMatchesPyTorch(t *testing.T) {
	forEachFixture(t, checkPrefill)
}

func checkPrefill(t *testing.T, m *Model, g *golden) {
	c := m.Config()
	tokens := g.Prefill.Tokens
	n := len(tokens)
	cache := newCache(t, m, n)
	layers := reversedLayers(c.Layers)
	it := stepItem{
		cache: cache, tokens: tokens, logits: make([]float32, c.Vocab),
		fullLayers: layers, fullAttn: make([]float32, len(layers)*c.Heads*n*n),
	}
	runStep(t, m, it)
	if d := maxAbsDiff(it.logits, g.Prefill.Logits[n-1]); d > logitTol {
		t.Fatalf("last logits differ by %.2e", d)
	}
	for k, layer := range layers {
		for head := 0; head < c.Heads; head++ {
			for r := 0; r < n; r++ {
				at := ((k*c.Heads+head)*n + r) * n
				if d := maxAbsDiff(it.fullAttn[at:at+n], g.Prefill.Attn[layer][head][r]); d > attnTol {
					t.Fatalf("layer %d head %d row %d differs by %.2e", layer, head, r, d)
				}
			}
		}
	}
	// chunks of 7: each attends to the cache of the ones before
	logits := make([]float32, c.Vocab)
	for from := 0; from < n; from += 7 {
		to := min(from+7, n)
		it := stepItem{cache: cache, tokens: tokens[from:to], nPast: from}
		if to == n {
			it.logits = logits
		}
		runStep(t, m, it)
	}
	if d := maxAbsDiff(logits, g.Prefill.Logits[n-1]); d > logitTol {
		t.Fatalf("chunked prefill: last logits differ by %.2e", d)
	}
}

// Greedy generation through the public API, across window slides: the same
// tokens as PyTorch recomputing the window every step, and the same traces.
func TestGreedyMatchesPyTorch(t *testing.T) {
	for _, name := range fixtureNames {
		t.Run(name, func(t *testing.T) {
			m, g := loadFixture(t, name)
			checkGreedy(t, m, g)
		})
	}
}

// The same, three at once, with a KV pool that holds one window: they take
// turns in the pool, each in the blocks the one before left (stale keys and
// values past its own positions, which the padded attention reads).
func TestKVPoolReuseMatchesPyTorch(t *testing.T) {
	for _, name := range fixtureNames {
		t.Run(name, func(t *testing.T) {
			m, g := loadFixtureWith(t, name, Options{Threads: 1, KVWindows: 1, KVWait: time.Minute})
			var wg sync.WaitGroup
			for range 3 {
				wg.Go(func() { checkGreedy(t, m, g) })
			}
			wg.Wait()
			if total, free := m.kvPositions(); free != total {
				t.Errorf("%d of %d KV positions free after every sequence ended", free, total)
			}
		})
	}
}

// checkGreedy generates the golden's greedy continuation and compares it.
// It reports with Errorf and returns, so it may run on any goroutine.
func checkGreedy(t *testing.T, m *Model, g *golden) {
	gr := g.Greedy
	if gr.Steps < 64 || len(gr.Prompt)+gr.Steps <= g.Config.T {
		t.Errorf("golden too short to cross the window: %d steps, T=%d", gr.Steps, g.Config.T)
		return
	}
	got, _, worstAttn, err := greedyRun(m, GenerateRequest{
		Messages: gr.chat, MaxNewTokens: gr.Steps,
		Sampling: Sampling{Temperature: 0}, TraceLayer: gr.TraceLayer,
	}, gr.AttnRows)
	if err != nil {
		t.Error(err)
		return
	}
	if len(got) != gr.Steps {
		t.Errorf("generated %d tokens, want %d", len(got), gr.Steps)
		return
	}
	if !sameTokens(t, got, gr.Tokens) {
		return
	}
	t.Logf("%d identical tokens, max |Δattn| %.2e", len(got), worstAttn)
	if worstAttn > attnTol {
		t.Errorf("attention rows differ by %.2e", worstAttn)
	}
}

// greedyRun generates req, which must be greedy, and checks that every
// step's distribution is one-hot and that it traces as many heads as
// wantRows ([step][H][t]) holds. It returns the tokens, the result and the
// largest difference of the traced rows from wantRows'. It reports by its
// error only, so it may run on any goroutine.
func greedyRun(m *Model, req GenerateRequest, wantRows [][][]float32) (tokens []int, res *Result, worstAttn float64, err error) {
	res, err = m.Generate(context.Background(), req, func(s *Step) error {
		i := len(tokens)
		tokens = append(tokens, s.TokenID)
		if i >= len(wantRows) || len(s.Attn) != len(wantRows[i]) {
			return fmt.Errorf("step %d: %d heads traced, and the golden has %d steps", i, len(s.Attn), len(wantRows))
		}
		for h := range s.Attn {
			worstAttn = math.Max(worstAttn, maxAbsDiff(s.Attn[h], wantRows[i][h]))
		}
		if s.Entropy != 0 || len(s.Candidates) != 1 || s.Candidates[0].TokenID != s.TokenID || s.Candidates[0].Prob != 1 {
			return fmt.Errorf("step %d: greedy distribution must be one-hot, got entropy %v top %v", i, s.Entropy, s.Candidates)
		}
		return nil
	})
	return tokens, res, worstAttn, err
}

// sameTokens reports (with Errorf) the first step where got leaves want,
// PyTorch's tokens, and says whether there was none.
func sameTokens(t *testing.T, got, want []int) bool {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Errorf("step %d: token %d, PyTorch chose %d (so far %v)", i, got[i], want[i], got[:i+1])
			return false
		}
	}
	return true
}

// hopGolden is testdata/golden/{name}_hop.json: greedy runs under window_hop
// > 1, computed the reference way (every step re-runs its whole window).
type hopGolden struct {
	Prompt     []int32 `json:"prompt"`
	Steps      int     `json:"steps"`
	TraceLayer int     `json:"trace_layer"`
	Runs       []struct {
		WindowHop int           `json:"window_hop"`
		Tokens    []int         `json:"tokens"`
		AttnRows  [][][]float32 `json:"attn_rows"` // [step][H][t]
	} `json:"runs"`
}

// Past T with window_hop > 1 the window jumps and is rebuilt once, then the
// KV cache extends it: the same tokens and traces as PyTorch re-running each
// step's window from position 0.
func TestWindowHopMatchesPyTorch(t *testing.T) {
	for _, name := range fixtureNames {
		m, g := loadFixture(t, name)
		raw, err := os.ReadFile(filepath.Join("..", "testdata", "golden", name+"_hop.json"))
		if err != nil {
			t.Fatal(err)
		}
		var hg hopGolden
		if err := json.Unmarshal(raw, &hg); err != nil {
			t.Fatal(err)
		}
		if len(hg.Runs) == 0 || len(hg.Prompt)+hg.Steps < g.Config.T+64 {
			t.Fatalf("%s: hop golden too short to run 64 steps past T", name)
		}
		for _, run := range hg.Runs {
			t.Run(fmt.Sprintf("%s/hop%d", name, run.WindowHop), func(t *testing.T) {
				var got []int
				worst := 0.0
				_, err := m.Generate(context.Background(), GenerateRequest{
					Messages: chatOf(t, int32sToBytes(hg.Prompt)), MaxNewTokens: hg.Steps, Sampling: Sampling{Temperature: 0},
					TraceLayer: hg.TraceLayer, WindowHop: run.WindowHop,
				}, func(s *Step) error {
					i := len(got)
					got = append(got, s.TokenID)
					if s.TokenID != run.Tokens[i] {
						return fmt.Errorf("step %d: token %d, PyTorch chose %d", i, s.TokenID, run.Tokens[i])
					}
					if len(s.Attn) != len(run.AttnRows[i]) || len(s.Attn[0]) != len(run.AttnRows[i][0]) {
						return fmt.Errorf("step %d: window of %d positions, PyTorch's has %d", i, len(s.Attn[0]), len(run.AttnRows[i][0]))
					}
					for h := range s.Attn {
						worst = math.Max(worst, maxAbsDiff(s.Attn[h], run.AttnRows[i][h]))
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != hg.Steps {
					t.Fatalf("generated %d tokens, want %d", len(got), hg.Steps)
				}
				t.Logf("%d identical tokens, max |Δattn| %.2e", len(got), worst)
				if worst > attnTol {
					t.Fatalf("attention rows differ by %.2e", worst)
				}
			})
		}
	}
}

// The hop rule, step by step: the first window is the prompt's last T
// tokens, it stays while it fits, and then leaves T-hop+1 tokens.
func TestWindowStartRule(t *testing.T) {
	const T = 10
	for _, c := range []struct {
		hop, prompt int
		want        []int // window starts as the sequence grows by one token each
	}{
		{1, 4, []int{0, 0, 0, 0, 0, 0, 0, 1, 2, 3}},
		{1, 12, []int{2, 3, 4, 5}},
		{3, 8, []int{0, 0, 0, 3, 3, 3, 6, 6, 6}},
		{3, 12, []int{2, 5, 5, 5, 8, 8}},
		{9, 9, []int{0, 0, 9, 9, 9, 9, 9, 9, 9, 9, 9, 18}},
	} {
		seq := &sequence{tokens: make([]int32, c.prompt), hop: c.hop, winStart: -1}
		var got []int
		for range c.want {
			got = append(got, seq.windowStart(T))
			if again := seq.windowStart(T); again != got[len(got)-1] {
				t.Fatalf("hop %d: a second call for the same length moved the window", c.hop)
			}
			if n := len(seq.tokens) - got[len(got)-1]; n > T || n < T-c.hop+1 && len(seq.tokens) > T {
				t.Fatalf("hop %d: a window of %d tokens", c.hop, n)
			}
			seq.tokens = append(seq.tokens, 0)
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("hop %d prompt %d: starts %v, want %v", c.hop, c.prompt, got, c.want)
		}
	}
}

// /inspect/full_attn takes its matrix over the window the hop rule left.
func TestFullAttentionFollowsWindowHop(t *testing.T) {
	m, g := loadFixture(t, "tiny_a")
	c := m.Config()
	prompt := int32sToBytes(g.Greedy.Prompt)
	for _, hop := range []int{1, 8, 63} {
		const maxNew = 70 // past tiny_a's T of 64
		full, err := m.FullAttention(context.Background(), FullAttnRequest{
			Messages: g.Greedy.chat, MaxNewTokens: maxNew, Layers: []int{0}, WindowHop: hop,
			Sampling: Sampling{Temperature: 0.9, TopK: 50, Seed: 42},
		})
		if err != nil {
			t.Fatal(err)
		}
		seq := &sequence{tokens: make([]int32, len(prompt)), hop: hop, winStart: -1}
		for range maxNew {
			seq.windowStart(c.Context)
			seq.tokens = append(seq.tokens, 0)
		}
		want := len(seq.tokens) - seq.windowStart(c.Context)
		if len(full.TokenIDs) != want || len(full.Attn[0][0]) != want {
			t.Fatalf("hop %d: a window of %d tokens, want %d", hop, len(full.TokenIDs), want)
		}
	}
	if _, err := m.FullAttention(context.Background(), FullAttnRequest{Messages: g.Greedy.chat, Layers: []int{0}, WindowHop: c.Context}); err == nil {
		t.Fatal("a hop of T was accepted")
	}
}

// reversedLayers lists every layer, last first: outputs must follow the
// list's order, not the model's.
func reversedLayers(n int) []int32 {
	layers := make([]int32, n)
	for i := range layers {
		layers[i] = int32(n - 1 - i)
	}
	return layers
}
