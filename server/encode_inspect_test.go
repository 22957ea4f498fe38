package server

// The inspection encoders: trace events with every layer and the lens, the
// score body, the attention body as JSON and as a NumPy archive that numpy
// itself reads back.

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"nielsgpt/engine"
)

// deepStep is a step of the deployed model's shape (H = 4 over window
// columns) with every layer traced and the lens of every layer.
func deepStep(rng *rand.Rand, layers, heads, window int) *engine.Step {
	step := randomStep(rng, heads, window)
	for l := range layers {
		step.Layers = append(step.Layers, engine.LayerAttn{Layer: layers - 1 - l, Attn: randomStep(rng, heads, window).Attn})
		lens := engine.LensLayer{Layer: l, Entropy: rng.Float64() * 5}
		for i := range engine.LensTop {
			lens.Candidates = append(lens.Candidates, engine.Candidate{TokenID: rng.IntN(256), Prob: rng.Float64() / float64(i+1)})
		}
		step.Lens = append(step.Lens, lens)
	}
	return step
}

func TestDeepTraceEventDecodesExactly(t *testing.T) {
	step := deepStep(rand.New(rand.NewPCG(5, 6)), 4, 4, 37)
	step.Lens[2].Entropy = math.NaN() // an engine fault stays valid JSON
	data := strings.TrimPrefix(strings.TrimSuffix(string(byteTokens.appendTraceEvent(nil, step)), "\n\n"), "event: trace\ndata: ")
	var got deepTraceEvent
	decodeStrict(t, data, &got)
	if len(got.Layers) != len(step.Layers) || len(got.Lens) != len(step.Lens) {
		t.Fatalf("%d layers, %d lens", len(got.Layers), len(got.Lens))
	}
	for i, l := range step.Layers {
		if *got.Layers[i].Layer != l.Layer {
			t.Fatalf("layers[%d] is layer %d, want %d", i, *got.Layers[i].Layer, l.Layer)
		}
		for h, row := range l.Attn {
			for j, x := range row {
				if float32(got.Layers[i].Attn[h][j]) != x {
					t.Fatalf("layers[%d].attn[%d][%d] = %v, want %v", i, h, j, got.Layers[i].Attn[h][j], x)
				}
			}
		}
	}
	for i, l := range step.Lens {
		g := got.Lens[i]
		if *g.Layer != l.Layer || (i == 2) != (g.Entropy == nil) || (i != 2 && float32(*g.Entropy) != float32(l.Entropy)) {
			t.Fatalf("lens[%d] = %+v, want %+v", i, g, l)
		}
		for j, c := range l.Candidates {
			if g.TopK[j].TokenID != c.TokenID || g.TopK[j].TokenDisplay != engine.TokenDisplay(c.TokenID) || float32(g.TopK[j].Prob) != float32(c.Prob) {
				t.Fatalf("lens[%d].topk[%d] = %+v, want %+v", i, j, g.TopK[j], c)
			}
		}
	}
}

func TestScoresEncoding(t *testing.T) {
	sc := &engine.Scores{Offset: 2, TokenIDs: []int{'a', 0xff, '"'}, Positions: []engine.PositionScore{{},
		{Logprob: -0.1, Entropy: 0.5, Rank: 1, Top: []engine.TokenLogprob{{TokenID: 0xff, Logprob: -0.1}, {TokenID: 'b', Logprob: -2.5}}},
		{Logprob: math.Inf(-1), Entropy: 1.25, Rank: 256}}}
	got := string(byteTokens.appendScores(nil, sc))
	want := `{"offset":2,"token_ids":[97,255,34],"tokens":["a","` + "\ufffd" + `","\""],"tokens_display":["a","\\xff","\""],` +
		`"scores":[null,{"logprob":-0.1,"entropy":0.5,"rank":1,"topk":[{"token_id":255,"token_text":"` + "\ufffd" +
		`","token_display":"\\xff","logprob":-0.1},{"token_id":98,"token_text":"b","token_display":"b","logprob":-2.5}]},` +
		`{"logprob":null,"entropy":1.25,"rank":256,"topk":[]}],"mean_logprob":null,"bits_per_byte":null}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// randomAttention is (layers, heads, t, t) of causal rows that sum to one.
func randomAttention(rng *rand.Rand, layers, heads, t int) [][][][]float32 {
	attn := make([][][][]float32, layers)
	for l := range attn {
		attn[l] = make([][][]float32, heads)
		for h := range attn[l] {
			attn[l][h] = make([][]float32, t)
			for i := range t {
				row := make([]float32, t)
				sum := float32(0)
				for j := 0; j <= i; j++ {
					row[j] = rng.Float32()
					sum += row[j]
				}
				for j := 0; j <= i; j++ {
					row[j] /= sum
				}
				attn[l][h][i] = row
			}
		}
	}
	return attn
}

// A body bigger than the encoder's buffer, so it is written in pieces.
func TestAttentionJSONDecodesExactly(t *testing.T) {
	layers, ids := []int{3, 1}, []int{'h', 0xc3, 0xa9, '\n', '"'}
	attn := randomAttention(rand.New(rand.NewPCG(7, 8)), 2, 2, len(ids))
	attn[1][1][4][0] = 1.4e-45
	big := randomAttention(rand.New(rand.NewPCG(9, 10)), 2, 4, 120)
	for _, c := range []struct {
		ids  []int
		attn [][][][]float32
	}{{ids, attn}, {make([]int, 120), big}} {
		var buf bytes.Buffer
		if err := byteTokens.writeAttentionJSON(&buf, layers, c.ids, c.attn); err != nil {
			t.Fatal(err)
		}
		var got struct {
			Layers        []int           `json:"layers"`
			TokenIDs      []int           `json:"token_ids"`
			Tokens        []string        `json:"tokens"`
			TokensDisplay []string        `json:"tokens_display"`
			Attn          [][][][]float64 `json:"attn"`
		}
		decodeStrict(t, buf.String(), &got)
		if len(got.Layers) != 2 || got.Layers[0] != 3 || len(got.TokenIDs) != len(c.ids) || len(got.Attn) != 2 {
			t.Fatalf("decoded %+v", got)
		}
		for i, id := range c.ids {
			if got.TokenIDs[i] != id || got.Tokens[i] != engine.TokenText(id) || got.TokensDisplay[i] != engine.TokenDisplay(id) {
				t.Fatalf("token %d", i)
			}
		}
		for l := range c.attn {
			for h := range c.attn[l] {
				for i, row := range c.attn[l][h] {
					for j, x := range row {
						if float32(got.Attn[l][h][i][j]) != x {
							t.Fatalf("attn[%d][%d][%d][%d] = %v, want %v", l, h, i, j, got.Attn[l][h][i][j], x)
						}
					}
				}
			}
		}
	}
}

// numpyScript loads an .npz and prints what numpy sees, for the test to
// compare with what was written.
const numpyScript = `
import json, sys
import numpy as np
with np.load(sys.argv[1]) as z:
    attn, ids, layers = z["attn"], z["token_ids"], z["layers"]
    print(json.dumps({
        "files": sorted(z.files),
        "attn": [str(attn.dtype), list(attn.shape), attn.ravel().astype(float).tolist()],
        "token_ids": [str(ids.dtype), list(ids.shape), ids.tolist()],
        "layers": [str(layers.dtype), list(layers.shape), layers.tolist()],
    }))
`

// python3WithNumpy is Debian's Python with numpy, or a failure that says
// what to install: the test must not pass without running.
func python3WithNumpy(t *testing.T) string {
	t.Helper()
	const python = "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import numpy").CombinedOutput(); err != nil {
		t.Fatalf("reading .npz needs numpy for %s (Debian: apt-get install python3-numpy): %v\n%s", python, err, out)
	}
	return python
}

func TestNPZReadByNumpy(t *testing.T) {
	python := python3WithNumpy(t)
	layers, ids := []int{2, 0, 3}, []int{'a', 0xff, 7, 200, 'z', 0, 1}
	attn := randomAttention(rand.New(rand.NewPCG(11, 12)), len(layers), 2, len(ids))
	attn[2][1][6][3] = 1.4e-45
	var buf bytes.Buffer
	if err := writeNPZ(&buf, layers, ids, attn); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "attn.npz")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(python, "-c", numpyScript, path).Output()
	if err != nil {
		t.Fatalf("numpy.load: %v", err)
	}
	var got struct {
		Files     []string `json:"files"`
		Attn      []any    `json:"attn"`
		TokenIDs  []any    `json:"token_ids"`
		LayersArr []any    `json:"layers"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	if strings.Join(got.Files, ",") != "attn,layers,token_ids" {
		t.Fatalf("files %v", got.Files)
	}
	wantArray(t, "attn", got.Attn, "float32", []int{3, 2, 7, 7})
	wantArray(t, "token_ids", got.TokenIDs, "int32", []int{7})
	wantArray(t, "layers", got.LayersArr, "int32", []int{3})
	values := got.Attn[2].([]any)
	k := 0
	for l := range attn {
		for h := range attn[l] {
			for _, row := range attn[l][h] {
				for _, x := range row {
					if float32(values[k].(float64)) != x {
						t.Fatalf("attn value %d = %v, want %v", k, values[k], x)
					}
					k++
				}
			}
		}
	}
	for i, id := range ids {
		if got.TokenIDs[2].([]any)[i].(float64) != float64(id) {
			t.Fatalf("token_ids %v, want %v", got.TokenIDs[2], ids)
		}
	}
	for i, l := range layers {
		if got.LayersArr[2].([]any)[i].(float64) != float64(l) {
			t.Fatalf("layers %v, want %v", got.LayersArr[2], layers)
		}
	}

	// A ragged answer is an error, not a corrupt archive.
	attn[1][0][3] = attn[1][0][3][:2]
	if err := writeNPZ(&bytes.Buffer{}, layers, ids, attn); err == nil {
		t.Fatal("a ragged matrix was written")
	}
}

func wantArray(t *testing.T, name string, got []any, dtype string, shape []int) {
	t.Helper()
	if len(got) != 3 || got[0] != dtype {
		t.Fatalf("%s: %v, want dtype %s", name, got[:min(len(got), 2)], dtype)
	}
	dims := got[1].([]any)
	if len(dims) != len(shape) {
		t.Fatalf("%s: shape %v, want %v", name, dims, shape)
	}
	for i, d := range shape {
		if dims[i].(float64) != float64(d) {
			t.Fatalf("%s: shape %v, want %v", name, dims, shape)
		}
	}
}

func TestNPYHeader(t *testing.T) {
	for _, shape := range [][]int{{5}, {4, 4, 256, 256}, {8, 6, 512, 512}, {0}} {
		h := npyHeader("<f4", shape)
		if len(h)%npyAlign != 0 || !bytes.HasPrefix(h, []byte("\x93NUMPY\x01\x00")) || h[len(h)-1] != '\n' {
			t.Fatalf("header %q", h)
		}
		if n := int(h[8]) | int(h[9])<<8; n != len(h)-10 {
			t.Fatalf("header length %d, want %d", n, len(h)-10)
		}
	}
	if h := string(npyHeader("<i4", []int{7})); !strings.Contains(h, "'shape': (7,), }") {
		t.Fatalf("1-d shape spelled %q", h)
	}
}

// One trace event with all four layers traced and the lens, the deployed
// model's shape (L = 4, H = 4, t = 256): five times the floats of a plain
// event. Compare its ns per byte with BenchmarkEncodeTraceEvent's.
func BenchmarkEncodeTraceEventAllLayers(b *testing.B) {
	step := deepStep(rand.New(rand.NewPCG(3, 4)), 4, 4, 256)
	buf := byteTokens.appendTraceEvent(nil, step)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = byteTokens.appendTraceEvent(buf[:0], step)
	}
}

// The attention answer for the deployed model's shape over a full window,
// every layer: (4, 4, 256, 256), as JSON and as .npz.
func BenchmarkAttentionJSON(b *testing.B) {
	attn := randomAttention(rand.New(rand.NewPCG(1, 1)), 4, 4, 256)
	ids, layers := make([]int, 256), []int{0, 1, 2, 3}
	var buf bytes.Buffer
	_ = byteTokens.writeAttentionJSON(&buf, layers, ids, attn)
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for b.Loop() {
		_ = byteTokens.writeAttentionJSON(discard{}, layers, ids, attn)
	}
}

func BenchmarkAttentionNPZ(b *testing.B) {
	attn := randomAttention(rand.New(rand.NewPCG(1, 1)), 4, 4, 256)
	ids, layers := make([]int, 256), []int{0, 1, 2, 3}
	var buf bytes.Buffer
	_ = writeNPZ(&buf, layers, ids, attn)
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for b.Loop() {
		_ = writeNPZ(discard{}, layers, ids, attn)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
