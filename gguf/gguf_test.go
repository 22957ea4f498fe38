package gguf

// Tests of the writer and the strict reader: the exact KV and tensor contract with the C
// engine, round trips in F32 and F16, corrupted files (every truncation, lying counts
// and lengths, misaligned or overlapping data) and files that deviate from the niels-gpt
// schema in one chosen way.

import (
	"bytes"
	"encoding/binary"
	"math"
	"reflect"
	"strings"
	"testing"
)

const testSHA = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

// tinyCfg has the shape of convert's tiny test checkpoints: small, yet with two layers
// and two heads.
var tinyCfg = ModelConfig{Vocab: 256, Context: 8, Embd: 8, Layers: 2, Heads: 2, FF: 16, RopeTheta: 10000, NormEps: 1e-5}

// weightsFor fills every tensor of cfg with values from next, in table order.
func weightsFor(cfg ModelConfig, next func() float32) map[string][]float32 {
	weights := map[string][]float32{}
	for _, spec := range cfg.Tensors() {
		data := make([]float32, spec.numel())
		for i := range data {
			data[i] = next()
		}
		weights[spec.Name] = data
	}
	return weights
}

// sineWeights are deterministic, distinct and well inside float16's range.
func sineWeights(cfg ModelConfig) map[string][]float32 {
	k := 0
	return weightsFor(cfg, func() float32 {
		k++
		return float32(0.1 * math.Sin(float64(k)*0.7))
	})
}

func writeTest(t testing.TB, cfg ModelConfig, weights map[string][]float32, src Source, opts WriteOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, cfg, weights, src, opts); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWriteRoundTrip(t *testing.T) {
	loss := 1.25
	cases := []struct {
		name string
		src  Source
		opts WriteOptions
	}{
		{"f32", Source{SHA256: testSHA, Step: 7}, WriteOptions{}},
		{"f16", Source{SHA256: testSHA, Step: 7, BestValLoss: &loss}, WriteOptions{F16: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tinyCfg
			cfg.RopeTheta = 12345.678 // not a float32: the file rounds it
			weights := sineWeights(cfg)
			data := writeTest(t, cfg, weights, tc.src, tc.opts)
			g, err := Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			got, err := g.ModelConfig()
			if err != nil {
				t.Fatal(err)
			}
			want := cfg
			want.RopeTheta = float64(float32(cfg.RopeTheta))
			want.NormEps = float64(float32(cfg.NormEps))
			if got != want {
				t.Errorf("config %+v, want %+v", got, want)
			}
			if g.Version != 3 || g.Alignment != 32 {
				t.Errorf("version %d alignment %d", g.Version, g.Alignment)
			}
			checkKV(t, g, cfg, tc.src, tc.opts)
			checkTensorData(t, g, data, cfg, weights, tc.opts)
		})
	}
}

// checkKV spells out every key the writer writes: generic GGUF tools and the cache of
// conversions read some of them by name.
func checkKV(t *testing.T, g *File, cfg ModelConfig, src Source, opts WriteOptions) {
	t.Helper()
	fileType := uint32(0)
	if opts.F16 {
		fileType = 1
	}
	wantKV := map[string]any{
		"general.architecture":                  "nielsgpt",
		"general.name":                          "niels-gpt",
		"general.alignment":                     uint32(32),
		"general.file_type":                     fileType,
		"nielsgpt.generation":                   uint32(1),
		"nielsgpt.vocab_size":                   uint32(cfg.Vocab),
		"nielsgpt.context_length":               uint32(cfg.Context),
		"nielsgpt.embedding_length":             uint32(cfg.Embd),
		"nielsgpt.block_count":                  uint32(cfg.Layers),
		"nielsgpt.attention.head_count":         uint32(cfg.Heads),
		"nielsgpt.feed_forward_length":          uint32(cfg.FF),
		"nielsgpt.rope.freq_base":               float32(cfg.RopeTheta),
		"nielsgpt.attention.layer_norm_epsilon": float32(1e-5),
		"tokenizer.ggml.model":                  "bytes",
		"nielsgpt.chat_format":                  "niels-v1",
		"nielsgpt.source.sha256":                testSHA,
		"nielsgpt.source.step":                  uint64(src.Step),
	}
	if src.BestValLoss != nil {
		wantKV["nielsgpt.source.best_val_loss"] = float32(*src.BestValLoss)
	}
	if len(g.KV) != len(wantKV) {
		t.Errorf("%d keys, want %d", len(g.KV), len(wantKV))
	}
	for k, v := range wantKV {
		if g.KV[k] != v {
			t.Errorf("KV %s = %#v, want %#v", k, g.KV[k], v)
		}
	}
}

// checkTensorData requires every tensor's bytes to be its weights, in PyTorch's
// row-major order, F16 for matrices only when asked.
func checkTensorData(t *testing.T, g *File, data []byte, cfg ModelConfig, weights map[string][]float32, opts WriteOptions) {
	t.Helper()
	if len(g.Tensors) != len(cfg.Tensors()) {
		t.Errorf("%d tensors, want %d", len(g.Tensors), len(cfg.Tensors()))
	}
	for _, gt := range g.Tensors {
		src := weights[gt.Name]
		if gt.Offset%32 != 0 {
			t.Errorf("%s offset %d not aligned", gt.Name, gt.Offset)
		}
		wantType := uint32(TypeF32)
		if opts.F16 && len(gt.Dims) == 2 {
			wantType = TypeF16
		}
		if gt.Type != wantType {
			t.Errorf("%s type %d, want %d", gt.Name, gt.Type, wantType)
		}
		raw := data[gt.Offset : gt.Offset+gt.Size]
		for i, v := range src {
			if gt.Type == TypeF16 {
				if h, _ := float32ToHalf(v); binary.LittleEndian.Uint16(raw[2*i:]) != h {
					t.Fatalf("%s[%d] f16 bits differ", gt.Name, i)
				}
				continue
			}
			if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])); got != v {
				t.Fatalf("%s[%d] = %v, want %v", gt.Name, i, got, v)
			}
		}
	}
}

// The tensor names and dims are the C engine's contract; spell them out literally for
// one shape (the t2_small fixture's).
func TestTensorContract(t *testing.T) {
	cfg := ModelConfig{Vocab: 256, Context: 64, Embd: 64, Layers: 2, Heads: 2, FF: 128, RopeTheta: 10000, NormEps: 1e-5}
	g, err := Parse(writeTest(t, cfg, sineWeights(cfg), Source{SHA256: testSHA}, WriteOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]uint64{
		"token_embd.weight":        {64, 256},
		"blk.0.attn_norm.weight":   {64},
		"blk.0.attn_norm.bias":     {64},
		"blk.0.attn_qkv.weight":    {64, 192},
		"blk.0.attn_output.weight": {64, 64},
		"blk.1.ffn_norm.weight":    {64},
		"blk.1.ffn_norm.bias":      {64},
		"blk.1.ffn_up.weight":      {64, 128},
		"blk.1.ffn_up.bias":        {128},
		"blk.1.ffn_down.weight":    {128, 64},
		"blk.1.ffn_down.bias":      {64},
		"output_norm.weight":       {64},
		"output_norm.bias":         {64},
	}
	have := wantTensorDims(t, g, want)
	if _, ok := have["output.weight"]; ok {
		t.Error("lm_head must not be stored: it is tied to token_embd")
	}
	if len(have) != 3+2*10 {
		t.Errorf("%d tensors, want 23", len(have))
	}
}

func TestWriteRefuses(t *testing.T) {
	src := Source{SHA256: testSHA}
	cases := []struct {
		name   string
		mutate func(cfg *ModelConfig, weights map[string][]float32, src *Source)
		want   string
	}{
		{"bad sha", func(_ *ModelConfig, _ map[string][]float32, s *Source) { s.SHA256 = "ABC" }, "sha256"},
		{"upper-case sha", func(_ *ModelConfig, _ map[string][]float32, s *Source) { s.SHA256 = strings.ToUpper(testSHA) }, "sha256"},
		{"negative step", func(_ *ModelConfig, _ map[string][]float32, s *Source) { s.Step = -1 }, "step -1"},
		{"invalid config", func(c *ModelConfig, _ map[string][]float32, _ *Source) { c.Heads = 3 }, "not divisible"},
		{"no epsilon", func(c *ModelConfig, _ map[string][]float32, _ *Source) { c.NormEps = 0 }, "layer_norm_epsilon=0"},
		{"missing weights", func(_ *ModelConfig, w map[string][]float32, _ *Source) { delete(w, "output_norm.bias") }, "no weights for tensor output_norm.bias"},
		{"short weights", func(_ *ModelConfig, w map[string][]float32, _ *Source) {
			w["blk.1.ffn_up.bias"] = w["blk.1.ffn_up.bias"][:3]
		}, "blk.1.ffn_up.bias has 3 values"},
		{"extra weights", func(_ *ModelConfig, w map[string][]float32, _ *Source) { w["output.weight"] = nil }, "output.weight, which is not a tensor"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, weights, s := tinyCfg, sineWeights(tinyCfg), src
			tc.mutate(&cfg, weights, &s)
			var buf bytes.Buffer
			err := Write(&buf, cfg, weights, s, WriteOptions{})
			wantError(t, err, tc.want)
			if buf.Len() != 0 {
				t.Errorf("a refused file wrote %d bytes", buf.Len())
			}
		})
	}

	weights := sineWeights(tinyCfg)
	weights["blk.0.attn_output.weight"][3] = 1e6
	var buf bytes.Buffer
	err := Write(&buf, tinyCfg, weights, src, WriteOptions{F16: true})
	wantError(t, err, "float16")
	if buf.Len() != 0 {
		t.Errorf("a refused F16 file wrote %d bytes", buf.Len())
	}
}

// tinyParts returns a valid file's KVs and tensors, to be broken one way per case.
func tinyParts(t testing.TB) ([]kv, []tensorOut) {
	weights := sineWeights(tinyCfg)
	g, err := Parse(writeTest(t, tinyCfg, weights, Source{SHA256: testSHA}, WriteOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	var kvs []kv
	for _, k := range []string{"general.architecture", "general.name", "general.alignment", "nielsgpt.generation",
		"nielsgpt.vocab_size", "nielsgpt.context_length", "nielsgpt.embedding_length", "nielsgpt.block_count",
		"nielsgpt.attention.head_count", "nielsgpt.feed_forward_length", "nielsgpt.rope.freq_base",
		"nielsgpt.attention.layer_norm_epsilon", "tokenizer.ggml.model", "nielsgpt.chat_format"} {
		kvs = append(kvs, kv{k, g.KV[k]})
	}
	var tensors []tensorOut
	for _, spec := range tinyCfg.Tensors() {
		tensors = append(tensors, tensorOut{name: spec.Name, dims: spec.Dims(), data: weights[spec.Name]})
	}
	return kvs, tensors
}

func rawGGUF(t testing.TB, kvs []kv, tensors []tensorOut) []byte {
	var buf bytes.Buffer
	if err := writeRaw(&buf, kvs, tensors, 32); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
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

func TestModelConfigRefuses(t *testing.T) {
	setKV := func(key string, v any) func([]kv, []tensorOut) ([]kv, []tensorOut) {
		return func(kvs []kv, ts []tensorOut) ([]kv, []tensorOut) {
			for i := range kvs {
				if kvs[i].key == key {
					if v == nil {
						return append(kvs[:i:i], kvs[i+1:]...), ts
					}
					kvs[i].value = v
				}
			}
			return kvs, ts
		}
	}
	cases := []struct {
		name   string
		mutate func([]kv, []tensorOut) ([]kv, []tensorOut)
		want   string
	}{
		{"valid", func(k []kv, ts []tensorOut) ([]kv, []tensorOut) { return k, ts }, ""},
		{"architecture", setKV("general.architecture", "llama"), `"llama", want "nielsgpt"`},
		{"generation 2", setKV("nielsgpt.generation", uint32(2)), "generation is 2"},
		{"missing key", setKV("nielsgpt.block_count", nil), "nielsgpt.block_count is missing"},
		{"wrong type", setKV("nielsgpt.embedding_length", int32(8)), "want uint32"},
		{"vocab", setKV("nielsgpt.vocab_size", uint32(32000)), "V=32000"},
		{"heads", setKV("nielsgpt.attention.head_count", uint32(3)), "not divisible"},
		{"rope", setKV("nielsgpt.rope.freq_base", float32(-1)), "rope_theta"},
		{"eps", setKV("nielsgpt.attention.layer_norm_epsilon", float32(0)), "layer_norm_epsilon"},
		{"missing eps", setKV("nielsgpt.attention.layer_norm_epsilon", nil), "nielsgpt.attention.layer_norm_epsilon is missing"},
		{"eps as float64", setKV("nielsgpt.attention.layer_norm_epsilon", 1e-5), "want float32"},
		{"tokenizer", setKV("tokenizer.ggml.model", "llama"), "tokenizer.ggml.model"},
		{"chat format", setKV("nielsgpt.chat_format", "chatml"), "chat_format"},
		{"missing tensor", func(k []kv, ts []tensorOut) ([]kv, []tensorOut) {
			return k, ts[1:]
		}, "token_embd.weight is missing"},
		{"extra tensor", func(k []kv, ts []tensorOut) ([]kv, []tensorOut) {
			return k, append(ts, tensorOut{name: "output.weight", dims: []uint64{8, 256}, data: make([]float32, 2048)})
		}, "unexpected tensor output.weight"},
		{"transposed dims", func(k []kv, ts []tensorOut) ([]kv, []tensorOut) {
			ts[0].dims = []uint64{256, 8}
			return k, ts
		}, "token_embd.weight has dims [256 8], want [8 256]"},
		{"f16 vector", func(k []kv, ts []tensorOut) ([]kv, []tensorOut) {
			ts[1].typ = TypeF16
			return k, ts
		}, "vectors must be F32"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kvs, ts := tc.mutate(tinyParts(t))
			g, err := Parse(rawGGUF(t, kvs, ts))
			if err != nil {
				t.Fatal(err)
			}
			_, err = g.ModelConfig()
			wantError(t, err, tc.want)
		})
	}
}

func TestParseKVTypes(t *testing.T) {
	kvs := []kv{
		{"u8", uint8(200)}, {"i8", int8(-5)}, {"u16", uint16(60000)}, {"i16", int16(-300)},
		{"u32", uint32(4e9)}, {"i32", int32(-7)}, {"f32", float32(1.5)}, {"b", true},
		{"s", "héllo"}, {"u64", uint64(1 << 60)}, {"i64", int64(-1 << 60)}, {"f64", 2.25},
		{"as", []string{"a", "", "bc"}}, {"au32", []uint32{1, 2}}, {"af32", []float32{0.5}},
		{"ai64", []int64{-1}}, {"ab", []bool{true, false}}, {"empty", []uint8{}},
	}
	g, err := Parse(rawGGUF(t, kvs, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs {
		if got := g.KV[kv.key]; !reflect.DeepEqual(got, kv.value) {
			t.Errorf("%s = %#v, want %#v", kv.key, got, kv.value)
		}
	}
}

func TestParseCorrupt(t *testing.T) {
	kvs, tensors := tinyParts(t)
	good := rawGGUF(t, kvs, tensors)
	g, err := Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	headerEnd := int(g.Tensors[0].Offset)

	// Every truncation inside the header, and a sample inside the data, is an error.
	for n := 0; n < len(good); n++ {
		if n > headerEnd && n%17 != 0 {
			continue
		}
		if _, err := Parse(good[:n]); err == nil {
			t.Fatalf("truncated to %d of %d bytes: no error", n, len(good))
		}
	}

	patch := func(off int, v uint64, width int) []byte {
		b := append([]byte(nil), good...)
		switch width {
		case 4:
			binary.LittleEndian.PutUint32(b[off:], uint32(v))
		case 8:
			binary.LittleEndian.PutUint64(b[off:], v)
		}
		return b
	}
	// Offsets of fields in the file, found by walking the known layout.
	firstKeyLen := 24
	firstValueType := firstKeyLen + 8 + len("general.architecture")
	firstValueLen := firstValueType + 4
	tensorInfo := bytes.Index(good, []byte("token_embd.weight")) - 8 // its name length
	nDims := tensorInfo + 8 + len("token_embd.weight")
	dim0 := nDims + 4
	typeOff := dim0 + 16
	offsetOff := typeOff + 4
	secondName := "blk.0.attn_norm.weight"
	secondOffset := bytes.Index(good, []byte(secondName)) + len(secondName) + 4 + 8 + 4
	alignment := bytes.Index(good, []byte("general.alignment")) + len("general.alignment") + 4

	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "not a GGUF file"},
		{"magic", append([]byte("GGUG"), good[4:]...), "not a GGUF file"},
		{"version 2", patch(4, 2, 4), "version 2"},
		{"big-endian", patch(4, 3<<24, 4), "big-endian"},
		{"tensor count", patch(8, 1<<40, 8), "tensor count"},
		{"kv count", patch(16, 1<<62, 8), "metadata count"},
		{"kv count a little high", patch(16, uint64(len(g.KV)+1), 8), ""},
		{"key length", patch(firstKeyLen, 1<<63, 8), "string of"},
		{"key length past end", patch(firstKeyLen, 1<<15, 8), ""},
		{"value type", patch(firstValueType, 13, 4), "unknown value type 13"},
		{"value length", patch(firstValueLen, uint64(len(good)), 8), "string of"},
		{"alignment", patch(alignment, 48, 4), "power of two"},
		{"alignment zero", patch(alignment, 0, 4), "power of two"},
		{"name length", patch(tensorInfo, 1000, 8), "max 63"},
		{"dims count", patch(nDims, 5, 4), "5 dimensions"},
		{"zero dims", patch(nDims, 0, 4), "0 dimensions"},
		{"huge dim", patch(dim0, 1<<62, 8), "do not fit"},
		{"zero dim", patch(dim0, 0, 8), "do not fit"},
		{"ggml type", patch(typeOff, 2, 4), "ggml type 2"},
		{"misaligned offset", patch(offsetOff, 4, 8), "not a multiple"},
		{"offset past end", patch(offsetOff, uint64(len(good)), 8), "past the end"},
		{"huge offset", patch(offsetOff, 1<<63, 8), "past the end"},
		{"overlap", patch(secondOffset, 0, 8), "overlap"},
		{"duplicate key", rawGGUF(t, []kv{{"a", uint8(1)}, {"a", uint8(2)}}, nil), "appears twice"},
		{"bool byte", func() []byte {
			b := rawGGUF(t, []kv{{"flag", true}}, nil)
			b[24+8+4+4] = 2
			return b
		}(), "bool byte 2"},
		{"nested array", func() []byte {
			b := rawGGUF(t, []kv{{"arr", []uint32{}}}, nil)
			binary.LittleEndian.PutUint32(b[24+8+3+4:], gvArray)
			return b
		}(), "array of value type 9"},
		{"array count", func() []byte {
			b := rawGGUF(t, []kv{{"arr", []uint32{1}}}, nil)
			binary.LittleEndian.PutUint64(b[24+8+3+4+4:], 1<<61)
			return b
		}(), "does not fit"},
		{"invalid utf8 key", rawGGUF(t, []kv{{"\xff", uint8(1)}}, nil), "UTF-8"},
		{"duplicate tensor", func() []byte {
			kvs, ts := tinyParts(t)
			ts[1].name = ts[0].name
			return rawGGUF(t, kvs, ts)
		}(), "repeated"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// wantTensorDims checks the dims of every tensor named in want, and returns
// the dims of all the file's tensors by name.
func wantTensorDims(t *testing.T, g *File, want map[string][]uint64) map[string][]uint64 {
	t.Helper()
	have := map[string][]uint64{}
	for _, tt := range g.Tensors {
		have[tt.Name] = tt.Dims
	}
	for name, dims := range want {
		if got := have[name]; !reflect.DeepEqual(got, dims) {
			t.Errorf("%s dims %v, want %v", name, got, dims)
		}
	}
	return have
}
