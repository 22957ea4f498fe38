package server

// The hand-rolled JSON must decode, with encoding/json, to exactly what the
// engine produced; and it must be cheap (BenchmarkEncodeTraceEvent).

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"nielsgpt/engine"
)

func TestAppendStringRoundTrips(t *testing.T) {
	inputs := []string{"", "plain", `quote " and \ backslash`, "\x00\x01\x1f\x7f", "\n\r\t", "é \U0001F600 \ufffd", "</script>", "\u2028"}
	for id := range 256 {
		inputs = append(inputs, engine.TokenText(id), engine.TokenDisplay(id))
	}
	for _, in := range inputs {
		enc := appendString(nil, in)
		var out string
		if err := json.Unmarshal(enc, &out); err != nil || out != in {
			t.Fatalf("%q encoded as %s decodes to %q (%v)", in, enc, out, err)
		}
	}
	// Invalid UTF-8 (never produced by the engine) still yields valid JSON.
	if enc := appendString(nil, "a\xffb"); !json.Valid(enc) {
		t.Fatalf("invalid UTF-8 produced invalid JSON %s", enc)
	}
}

func TestTraceEventDecodesExactly(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	step := randomStep(rng, 4, 37)
	step.Candidates = append(step.Candidates, engine.Candidate{TokenID: '"', Prob: 1e-9}, engine.Candidate{TokenID: '\\', Prob: 0})
	step.Attn[2][5] = 1.4e-45 // the smallest float32 subnormal
	step.Attn[3][0] = 3.4028235e38

	data := strings.TrimPrefix(strings.TrimSuffix(string(byteTokens.appendTraceEvent(nil, step)), "\n\n"), "event: trace\ndata: ")
	var got traceEvent
	decodeStrict(t, data, &got)
	if *got.Step != step.Index || float32(*got.Entropy) != float32(step.Entropy) || len(got.TopK) != len(step.Candidates) {
		t.Fatalf("decoded %s", data)
	}
	for i, c := range step.Candidates {
		g := got.TopK[i]
		if g.TokenID != c.TokenID || g.TokenText != engine.TokenText(c.TokenID) || g.TokenDisplay != engine.TokenDisplay(c.TokenID) || float32(g.Prob) != float32(c.Prob) {
			t.Fatalf("topk[%d] %+v, want %+v", i, g, c)
		}
	}
	for h, row := range step.Attn {
		for j, x := range row {
			if float32(got.Attn[h][j]) != x {
				t.Fatalf("attn[%d][%d] = %v, want %v", h, j, got.Attn[h][j], x)
			}
		}
	}

	tok := string(byteTokens.appendTokenEvent(nil, &engine.Step{Index: 7, TokenID: 0x0a}))
	if tok != "event: token\ndata: {\"step\":7,\"token_id\":10,\"token_text\":\"\\n\",\"token_display\":\"\\\\x0a\"}\n\n" {
		t.Fatalf("token event %q", tok)
	}
}

// A fault in the engine must not turn into invalid JSON on the wire.
func TestNonFiniteBecomesNull(t *testing.T) {
	step := &engine.Step{Entropy: math.NaN(), Candidates: []engine.Candidate{{TokenID: 1, Prob: math.Inf(1)}},
		Attn: [][]float32{{float32(math.NaN()), float32(math.Inf(-1)), 0.5}}}
	data := strings.TrimPrefix(strings.TrimSpace(string(byteTokens.appendTraceEvent(nil, step))), "event: trace\ndata: ")
	if !json.Valid([]byte(data)) || !strings.Contains(data, `"entropy":null`) || !strings.Contains(data, `"attn":[[null,null,0.5]]`) {
		t.Fatalf("trace %s", data)
	}
	if got := string(byteTokens.appendTraceEvent(nil, &engine.Step{})); !strings.Contains(got, `"topk":[],"attn":[]`) {
		t.Fatalf("empty step %s", got)
	}
}

func TestFullAttnEncoding(t *testing.T) {
	matrix := [][]float32{{1, 0, 0}, {0.25, 0.75, 0}, {0.125, 0.375, 0.5}}
	full := &engine.FullAttn{TokenIDs: []int{'a', 0xc3, '\n'}, Attn: [][][][]float32{{nil, nil, matrix}}}
	got := string(byteTokens.appendFullAttn(nil, 1, 2, full))
	want := `{"layer":1,"head":2,"token_ids":[97,195,10],"tokens":["a","` + "\ufffd" + `","\n"],"tokens_display":["a","\\xc3","\\x0a"],"attn":[[1,0,0],[0.25,0.75,0],[0.125,0.375,0.5]]}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func randomStep(rng *rand.Rand, heads, window int) *engine.Step {
	step := &engine.Step{Index: 12, TokenID: int('e'), Entropy: rng.Float64() * 5}
	for i := range 10 {
		step.Candidates = append(step.Candidates, engine.Candidate{TokenID: rng.IntN(256), Prob: rng.Float64() / float64(i+1)})
	}
	step.Attn = make([][]float32, heads)
	for h := range step.Attn {
		row := make([]float32, window)
		sum := float32(0)
		for j := range row {
			row[j] = rng.Float32()
			sum += row[j]
		}
		for j := range row {
			row[j] /= sum
		}
		step.Attn[h] = row
	}
	return step
}

// One trace event for the deployed model's shape (H=4, t=256), into a reused
// buffer as the stream does it.
func BenchmarkEncodeTraceEvent(b *testing.B) {
	step := randomStep(rand.New(rand.NewPCG(3, 4)), 4, 256)
	buf := byteTokens.appendTraceEvent(nil, step)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = byteTokens.appendTraceEvent(buf[:0], step)
	}
}

// The same event through encoding/json, for comparison.
func BenchmarkEncodeTraceEventReflect(b *testing.B) {
	step := randomStep(rand.New(rand.NewPCG(3, 4)), 4, 256)
	type cand struct {
		TokenID      int     `json:"token_id"`
		TokenText    string  `json:"token_text"`
		TokenDisplay string  `json:"token_display"`
		Prob         float64 `json:"prob"`
	}
	b.ReportAllocs()
	for b.Loop() {
		topk := make([]cand, len(step.Candidates))
		for i, c := range step.Candidates {
			topk[i] = cand{c.TokenID, engine.TokenText(c.TokenID), engine.TokenDisplay(c.TokenID), c.Prob}
		}
		_, _ = json.Marshal(struct {
			Step    int         `json:"step"`
			Entropy float64     `json:"entropy"`
			TopK    []cand      `json:"topk"`
			Attn    [][]float32 `json:"attn"`
		}{step.Index, step.Entropy, topk, step.Attn})
	}
}
