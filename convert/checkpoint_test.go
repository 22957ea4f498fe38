// Tests of the checkpoint reader against real torch.save output: the shared fixtures
// (PyTorch 2.x, one saved on CUDA with optimizer state) and the variants that
// scripts/make_ckpt_variants.py writes with torch 1.13 (float16, bfloat16, legacy
// format, protocol 4, shared and strided storages, wrapper prefixes), compared with
// values computed by torch itself.
package convert

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"nielsgpt/gguf"
)

var fixturesDir = filepath.Join("..", "..", "shared", "fixtures")

func fixture(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(fixturesDir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("fixture %s: %v (shared/ must sit beside the repository)", name, err)
	}
	return p
}

func sum64(data []float32) (sum, abs float64) {
	for _, v := range data {
		sum += float64(v)
		abs += math.Abs(float64(v))
	}
	return
}

func closeTo(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol*math.Max(1, math.Abs(want))
}

func TestReadFixtures(t *testing.T) {
	type tensorWant struct {
		name        string
		shape       []int
		sum, absSum float64
		first       float32
	}
	// Expected values printed by torch.load(...) of the same files.
	cases := []struct {
		file    string
		cfg     gguf.ModelConfig
		params  int64
		tensors []tensorWant
	}{
		{"t2_small.pt", gguf.ModelConfig{Vocab: 256, Context: 64, Embd: 64, Layers: 2, Heads: 2, FF: 128, RopeTheta: 10000, NormEps: LayerNormEps}, 82944, []tensorWant{
			{"tok_emb.weight", []int{256, 64}, 0.5866346742195674, 786.4130384837599, -0.05140821635723114},
			{"blocks.0.attn.qkv.weight", []int{192, 64}, 1.4532134572150426, 587.0935260071797, -0.04162778705358505},
			{"blocks.1.mlp.fc2.bias", []int{64}, -0.1923079821281135, 2.5780136846005917, 0.056353505700826645},
			{"ln_f.weight", []int{64}, 64.23695451021194, 64.23695451021194, 0.9498629570007324},
		}},
		{"t2_cuda_opt.pt", gguf.ModelConfig{Vocab: 256, Context: 128, Embd: 128, Layers: 2, Heads: 4, FF: 512, RopeTheta: 10000, NormEps: LayerNormEps}, 428544, []tensorWant{
			{"tok_emb.weight", []int{256, 128}, 6.898167445946456, 1567.3341884117071, -0.03142424300312996},
			{"blocks.0.attn.qkv.weight", []int{384, 128}, -3.524001085850614, 2343.424848990111, 0.04044033959507942},
			{"blocks.1.mlp.fc2.bias", []int{128}, 0.011906719060789328, 4.928263013942342, 0.005498556885868311},
			{"ln_f.weight", []int{128}, 128.3088619709015, 128.3088619709015, 0.91242516040802},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			ck, err := ReadCheckpoint(fixture(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if err := ck.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if ck.Config != tc.cfg || ck.Dropout != 0.1 {
				t.Errorf("config %+v dropout %v, want %+v and 0.1", ck.Config, ck.Dropout, tc.cfg)
			}
			if ck.Step != 1 || ck.BestValLoss == nil || *ck.BestValLoss != 2.5 {
				t.Errorf("step %d best_val_loss %v, want 1 and 2.5", ck.Step, ck.BestValLoss)
			}
			if got := ck.Params(); got != tc.params {
				t.Errorf("params %d, want %d", got, tc.params)
			}
			for _, w := range tc.tensors {
				tt := ck.Tensors[w.name]
				if tt == nil {
					t.Fatalf("no tensor %s", w.name)
				}
				if !slices.Equal(tt.Shape, w.shape) {
					t.Errorf("%s shape %v, want %v", w.name, tt.Shape, w.shape)
				}
				s, a := sum64(tt.Data)
				if !closeTo(s, w.sum, 1e-9) || !closeTo(a, w.absSum, 1e-9) || tt.Data[0] != w.first {
					t.Errorf("%s sum %v abs %v first %v, want %v %v %v", w.name, s, a, tt.Data[0], w.sum, w.absSum, w.first)
				}
			}
		})
	}
}

// expectedFile mirrors testdata/expected.json.
type expectedFile map[string]struct {
	Config      map[string]int `json:"config"`
	Dropout     float64        `json:"dropout"`
	RopeTheta   float64        `json:"rope_theta"`
	Step        int64          `json:"step"`
	BestValLoss *float64       `json:"best_val_loss"`
	Tensors     map[string]struct {
		Shape  []int   `json:"shape"`
		Sum    float64 `json:"sum"`
		AbsSum float64 `json:"abs_sum"`
		First  float64 `json:"first"`
		Last   float64 `json:"last"`
	} `json:"tensors"`
}

func loadExpected(t *testing.T) expectedFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var exp expectedFile
	if err := json.Unmarshal(raw, &exp); err != nil {
		t.Fatal(err)
	}
	return exp
}

func TestReadVariants(t *testing.T) {
	exp := loadExpected(t)
	for _, file := range []string{"tiny_f32.pt", "tiny_f16.pt", "tiny_bf16.pt", "tiny_legacy.pt",
		"tiny_shared_view.pt", "tiny_proto4.pt", "tiny_orig_mod.pt"} {
		t.Run(file, func(t *testing.T) {
			want, ok := exp[file]
			if !ok {
				t.Fatalf("expected.json has no %s", file)
			}
			ck, err := ReadCheckpoint(filepath.Join("testdata", file))
			if err != nil {
				t.Fatal(err)
			}
			if err := ck.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			c := want.Config
			wantCfg := gguf.ModelConfig{Vocab: c["V"], Context: c["T"], Embd: c["C"], Layers: c["L"], Heads: c["H"], FF: c["d_ff"], RopeTheta: want.RopeTheta, NormEps: LayerNormEps}
			if ck.Config != wantCfg || ck.Dropout != want.Dropout {
				t.Errorf("config %+v dropout %v, want %+v and %v", ck.Config, ck.Dropout, wantCfg, want.Dropout)
			}
			if ck.Step != want.Step {
				t.Errorf("step %d, want %d", ck.Step, want.Step)
			}
			switch {
			case (ck.BestValLoss == nil) != (want.BestValLoss == nil):
				t.Errorf("best_val_loss %v, want %v", ck.BestValLoss, want.BestValLoss)
			case ck.BestValLoss != nil && *ck.BestValLoss != *want.BestValLoss:
				t.Errorf("best_val_loss %v, want %v", *ck.BestValLoss, *want.BestValLoss)
			}
			if len(ck.Tensors) != len(want.Tensors) {
				t.Errorf("%d tensors, want %d", len(ck.Tensors), len(want.Tensors))
			}
			for name, w := range want.Tensors {
				tt := ck.Tensors[name]
				if tt == nil {
					t.Errorf("missing %s", name)
					continue
				}
				if !slices.Equal(tt.Shape, w.Shape) {
					t.Errorf("%s shape %v, want %v", name, tt.Shape, w.Shape)
					continue
				}
				s, a := sum64(tt.Data)
				first, last := float64(tt.Data[0]), float64(tt.Data[len(tt.Data)-1])
				if !closeTo(s, w.Sum, 1e-9) || !closeTo(a, w.AbsSum, 1e-9) || first != w.First || last != w.Last {
					t.Errorf("%s: sum %v abs %v first %v last %v; torch says %v %v %v %v", name, s, a, first, last, w.Sum, w.AbsSum, w.First, w.Last)
				}
			}
		})
	}
}

// The shared-view variant must be read through its offset and strides, not as if the
// storage started at the tensor: its values equal the plain file's.
func TestSharedViewMatchesLegacy(t *testing.T) {
	a, err := ReadCheckpoint(filepath.Join("testdata", "tiny_shared_view.pt"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ReadCheckpoint(filepath.Join("testdata", "tiny_legacy.pt"))
	if err != nil {
		t.Fatal(err)
	}
	for name, ta := range a.Tensors {
		tb := b.Tensors[name]
		for i := range ta.Data {
			if math.Float32bits(ta.Data[i]) != math.Float32bits(tb.Data[i]) {
				t.Fatalf("%s[%d]: %v (zip) vs %v (legacy)", name, i, ta.Data[i], tb.Data[i])
			}
		}
	}
}

func TestRefusedFiles(t *testing.T) {
	cases := []struct {
		file     string
		readErr  string // substring of the ReadCheckpoint error, or "" when reading succeeds
		validErr string // substring of the Validate error
	}{
		{"bad_global.pt", "posix.system", ""},
		{"bad_f64.pt", "float64", ""},
		{"bad_shape.pt", "", "blocks.0.mlp.fc1.weight has shape [4 3], want [4 2]"},
		{"bad_untied.pt", "", "lm_head.weight differs from tok_emb.weight"},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			ck, err := ReadCheckpoint(filepath.Join("testdata", tc.file))
			wantError(t, err, tc.readErr)
			if tc.readErr != "" {
				return
			}
			err = ck.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.validErr) {
				t.Fatalf("Validate error %v, want one containing %q", err, tc.validErr)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	base, err := ReadCheckpoint(filepath.Join("testdata", "tiny_f32.pt"))
	if err != nil {
		t.Fatal(err)
	}
	// clone copies the checkpoint deeply enough that a case can mutate it freely.
	clone := func() *Checkpoint {
		c := *base
		c.Tensors = map[string]*Tensor{}
		for k, v := range base.Tensors {
			c.Tensors[k] = &Tensor{Shape: append([]int(nil), v.Shape...), Data: append([]float32(nil), v.Data...)}
		}
		return &c
	}
	cases := []struct {
		name   string
		mutate func(c *Checkpoint)
		want   string
	}{
		{"valid", func(c *Checkpoint) {}, ""},
		{"missing key", func(c *Checkpoint) { delete(c.Tensors, "blocks.1.ln2.bias") }, "missing blocks.1.ln2.bias"},
		{"unexpected key", func(c *Checkpoint) {
			c.Tensors["blocks.2.ln1.weight"] = &Tensor{Shape: []int{8}, Data: make([]float32, 8)}
		}, "unexpected tensor blocks.2.ln1.weight"},
		{"wrong shape", func(c *Checkpoint) { c.Tensors["ln_f.bias"] = &Tensor{Shape: []int{1, 8}, Data: make([]float32, 8)} }, "ln_f.bias has shape [1 8], want [8]"},
		{"data length", func(c *Checkpoint) { c.Tensors["ln_f.bias"].Data = c.Tensors["ln_f.bias"].Data[:7] }, "7 values"},
		{"V", func(c *Checkpoint) { c.Config.Vocab = 512 }, "V=512"},
		{"C%H", func(c *Checkpoint) { c.Config.Heads = 3 }, "not divisible by H=3"},
		{"odd head", func(c *Checkpoint) { c.Config.Heads = 8 }, "head size C/H=1 is odd"},
		{"zero layers", func(c *Checkpoint) { c.Config.Layers = 0 }, "L=0"},
		{"layers vs keys", func(c *Checkpoint) { c.Config.Layers = 1 }, "unexpected tensor blocks.1."},
		{"rope", func(c *Checkpoint) { c.Config.RopeTheta = math.NaN() }, "rope_theta"},
		{"eps", func(c *Checkpoint) { c.Config.NormEps = 0 }, "layer_norm_epsilon=0"},
		{"negative step", func(c *Checkpoint) { c.Step = -1 }, "step=-1"},
		{"untied", func(c *Checkpoint) { c.Tensors["lm_head.weight"].Data[5]++ }, "differs from tok_emb.weight (first at element 5)"},
		{"nan", func(c *Checkpoint) { c.Tensors["blocks.0.mlp.fc2.bias"].Data[3] = float32(math.Inf(1)) }, "blocks.0.mlp.fc2.bias has a non-finite value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := clone()
			tc.mutate(c)
			err := c.Validate()
			wantError(t, err, tc.want)
		})
	}
}

func TestHalfWidening(t *testing.T) {
	cases := []struct {
		bits uint16
		want float32
	}{
		{0x0000, 0}, {0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, 5.960464477539063e-08},
		{0x03ff, 6.097555160522461e-05}, {0x0400, 6.103515625e-05}, {0x3555, 0.333251953125},
		{0x7c00, float32(math.Inf(1))}, {0xfc00, float32(math.Inf(-1))},
	}
	for _, c := range cases {
		if got := halfToFloat32(c.bits); got != c.want {
			t.Errorf("halfToFloat32(%#04x) = %v, want %v", c.bits, got, c.want)
		}
	}
	if !math.IsNaN(float64(halfToFloat32(0x7e00))) || math.Signbit(float64(halfToFloat32(0x8000))) != true {
		t.Error("NaN or negative zero lost")
	}
	if got := bfloat16ToFloat32(0x3f80); got != 1 {
		t.Errorf("bfloat16 1.0 = %v", got)
	}
	if got := bfloat16ToFloat32(0xc049); got != -3.140625 {
		t.Errorf("bfloat16 -3.140625 = %v", got)
	}
	// Every finite half is sign × mantissa × 2^exponent exactly.
	for h := 0; h < 1<<16; h++ {
		exp, mant := h>>10&0x1f, float64(h&0x3ff)
		if exp == 0x1f {
			continue
		}
		want := math.Ldexp(mant, -24) // subnormal
		if exp != 0 {
			want = math.Ldexp(1024+mant, exp-25)
		}
		if h&0x8000 != 0 {
			want = -want
		}
		if got := halfToFloat32(uint16(h)); float64(got) != want || math.Signbit(float64(got)) != (h&0x8000 != 0) {
			t.Fatalf("halfToFloat32(%#04x) = %v, want %v", h, got, want)
		}
	}
}

// wantError fails the test unless err matches want: nil for "", otherwise an
// error whose text contains want.
func wantError(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one containing %q", err, want)
	}
}
