// Tests of the GGUF writer and the strict reader: round trips of real checkpoints in
// F32 and F16, the exact KV and tensor contract with the C engine, corrupted files
// (every truncation, lying counts and lengths, misaligned or overlapping data), files
// that deviate from the niels-gpt contract, and ConvertFile's atomic output.
package convert

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const testSHA = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func readTestCheckpoint(t testing.TB, path string) *Checkpoint {
	t.Helper()
	ck, err := ReadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	return ck
}

func writeTestGGUF(t testing.TB, ck *Checkpoint, opts ConvertOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteGGUF(&buf, ck, testSHA, opts); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestGGUFRoundTrip(t *testing.T) {
	cases := []struct {
		path string
		opts ConvertOptions
	}{
		{filepath.Join("testdata", "tiny_f32.pt"), ConvertOptions{}},
		{filepath.Join("testdata", "tiny_f16.pt"), ConvertOptions{F16: true}},
		{filepath.Join("testdata", "tiny_bf16.pt"), ConvertOptions{}},
		{filepath.Join(fixturesDir, "t2_small.pt"), ConvertOptions{}},
		{filepath.Join(fixturesDir, "t2_cuda_opt.pt"), ConvertOptions{F16: true}},
	}
	for _, tc := range cases {
		t.Run(filepath.Base(tc.path)+map[bool]string{true: "/f16", false: "/f32"}[tc.opts.F16], func(t *testing.T) {
			ck := readTestCheckpoint(t, tc.path)
			data := writeTestGGUF(t, ck, tc.opts)
			g, err := ParseGGUF(data)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := g.NielsGPTConfig()
			if err != nil {
				t.Fatal(err)
			}
			want := ck.Config
			want.Dropout = 0
			want.RopeTheta = float64(float32(want.RopeTheta))
			if cfg != want {
				t.Errorf("config %+v, want %+v", cfg, want)
			}
			if g.Version != 3 || g.Alignment != 32 {
				t.Errorf("version %d alignment %d", g.Version, g.Alignment)
			}
			wantKV := map[string]any{
				"general.architecture":                  "nielsgpt",
				"general.name":                          "niels-gpt",
				"general.alignment":                     uint32(32),
				"nielsgpt.generation":                   uint32(1),
				"nielsgpt.vocab_size":                   uint32(ck.Config.V),
				"nielsgpt.context_length":               uint32(ck.Config.T),
				"nielsgpt.embedding_length":             uint32(ck.Config.C),
				"nielsgpt.block_count":                  uint32(ck.Config.L),
				"nielsgpt.attention.head_count":         uint32(ck.Config.H),
				"nielsgpt.feed_forward_length":          uint32(ck.Config.DFF),
				"nielsgpt.rope.freq_base":               float32(ck.Config.RopeTheta),
				"nielsgpt.attention.layer_norm_epsilon": float32(1e-5),
				"tokenizer.ggml.model":                  "bytes",
				"nielsgpt.chat_format":                  "niels-v1",
				"nielsgpt.source.sha256":                testSHA,
				"nielsgpt.source.step":                  uint64(ck.Step),
			}
			if ck.BestValLoss != nil {
				wantKV["nielsgpt.source.best_val_loss"] = float32(*ck.BestValLoss)
			} else if _, ok := g.KV["nielsgpt.source.best_val_loss"]; ok {
				t.Error("best_val_loss written for a checkpoint without one")
			}
			for k, v := range wantKV {
				if g.KV[k] != v {
					t.Errorf("KV %s = %#v, want %#v", k, g.KV[k], v)
				}
			}

			// Every tensor's bytes are the checkpoint's values, in PyTorch's row-major
			// order, with dims reversed.
			byName := map[string]string{}
			for _, row := range stateTable(ck.Config) {
				byName[row.gguf] = row.key
			}
			if len(g.Tensors) != len(stateTable(ck.Config))-1 {
				t.Errorf("%d tensors", len(g.Tensors))
			}
			for _, gt := range g.Tensors {
				src := ck.Tensors[byName[gt.Name]]
				if src == nil {
					t.Fatalf("tensor %s has no source", gt.Name)
				}
				if gt.Offset%32 != 0 {
					t.Errorf("%s offset %d not aligned", gt.Name, gt.Offset)
				}
				wantType := uint32(0)
				if tc.opts.F16 && len(src.Shape) == 2 {
					wantType = 1
				}
				if gt.Type != wantType {
					t.Errorf("%s type %d, want %d", gt.Name, gt.Type, wantType)
				}
				for d := range gt.Dims {
					if gt.Dims[d] != uint64(src.Shape[len(src.Shape)-1-d]) {
						t.Fatalf("%s dims %v for shape %v", gt.Name, gt.Dims, src.Shape)
					}
				}
				raw := data[gt.Offset : gt.Offset+gt.Size]
				for i, v := range src.Data {
					var got float32
					if gt.Type == 1 {
						h, _ := float32ToHalf(v)
						if binary.LittleEndian.Uint16(raw[2*i:]) != h {
							t.Fatalf("%s[%d] f16 bits differ", gt.Name, i)
						}
						continue
					}
					got = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
					if got != v {
						t.Fatalf("%s[%d] = %v, want %v", gt.Name, i, got, v)
					}
				}
			}
		})
	}
}

// The tensor names and dims are the C engine's contract; spell a few out literally.
func TestGGUFTensorContract(t *testing.T) {
	ck := readTestCheckpoint(t, filepath.Join(fixturesDir, "t2_small.pt"))
	g, err := ParseGGUF(writeTestGGUF(t, ck, ConvertOptions{}))
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
	have := map[string][]uint64{}
	for _, tt := range g.Tensors {
		have[tt.Name] = tt.Dims
	}
	for name, dims := range want {
		if got, ok := have[name]; !ok || len(got) != len(dims) || (len(dims) == 2 && (got[0] != dims[0] || got[1] != dims[1])) || got[0] != dims[0] {
			t.Errorf("%s dims %v, want %v", name, got, dims)
		}
	}
	if _, ok := have["output.weight"]; ok {
		t.Error("lm_head must not be stored: it is tied to token_embd")
	}
}

func TestWriteGGUFRefuses(t *testing.T) {
	ck := readTestCheckpoint(t, filepath.Join("testdata", "tiny_f32.pt"))
	var buf bytes.Buffer
	if err := WriteGGUF(&buf, ck, "ABC", ConvertOptions{}); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Errorf("bad sha accepted: %v", err)
	}
	if err := WriteGGUF(&buf, ck, strings.ToUpper(testSHA), ConvertOptions{}); err == nil {
		t.Error("upper-case sha accepted")
	}
	bad := readTestCheckpoint(t, filepath.Join("testdata", "tiny_f32.pt"))
	delete(bad.Tensors, "ln_f.bias")
	if err := WriteGGUF(&buf, bad, testSHA, ConvertOptions{}); err == nil || !strings.Contains(err.Error(), "ln_f.bias") {
		t.Errorf("invalid checkpoint written: %v", err)
	}
	big := readTestCheckpoint(t, filepath.Join("testdata", "tiny_f32.pt"))
	big.Tensors["blocks.0.attn.proj.weight"].Data[3] = 1e6
	buf.Reset()
	err := WriteGGUF(&buf, big, testSHA, ConvertOptions{F16: true})
	if err == nil || !strings.Contains(err.Error(), "float16") {
		t.Errorf("out-of-range F16 accepted: %v", err)
	}
	if buf.Len() != 0 {
		t.Errorf("a refused F16 conversion wrote %d bytes", buf.Len())
	}
}

// tinyGGUFParts returns a valid file's KVs and tensors, to be broken one way per case.
func tinyGGUFParts(t testing.TB) ([]ggufKV, []ggufTensorOut) {
	ck := readTestCheckpoint(t, filepath.Join("testdata", "tiny_f32.pt"))
	g, err := ParseGGUF(writeTestGGUF(t, ck, ConvertOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	var kvs []ggufKV
	for _, k := range []string{"general.architecture", "general.name", "general.alignment", "nielsgpt.generation",
		"nielsgpt.vocab_size", "nielsgpt.context_length", "nielsgpt.embedding_length", "nielsgpt.block_count",
		"nielsgpt.attention.head_count", "nielsgpt.feed_forward_length", "nielsgpt.rope.freq_base",
		"nielsgpt.attention.layer_norm_epsilon", "tokenizer.ggml.model", "nielsgpt.chat_format"} {
		kvs = append(kvs, ggufKV{k, g.KV[k]})
	}
	var tensors []ggufTensorOut
	for _, row := range stateTable(ck.Config) {
		if row.gguf == "" {
			continue
		}
		tt := ggufTensorOut{name: row.gguf, data: ck.Tensors[row.key].Data}
		for i := len(row.shape) - 1; i >= 0; i-- {
			tt.dims = append(tt.dims, uint64(row.shape[i]))
		}
		tensors = append(tensors, tt)
	}
	return kvs, tensors
}

func rawGGUF(t testing.TB, kvs []ggufKV, tensors []ggufTensorOut) []byte {
	var buf bytes.Buffer
	if err := writeGGUFRaw(&buf, kvs, tensors, 32); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestNielsGPTConfigRefuses(t *testing.T) {
	setKV := func(key string, v any) func([]ggufKV, []ggufTensorOut) ([]ggufKV, []ggufTensorOut) {
		return func(kvs []ggufKV, ts []ggufTensorOut) ([]ggufKV, []ggufTensorOut) {
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
		mutate func([]ggufKV, []ggufTensorOut) ([]ggufKV, []ggufTensorOut)
		want   string
	}{
		{"valid", func(k []ggufKV, ts []ggufTensorOut) ([]ggufKV, []ggufTensorOut) { return k, ts }, ""},
		{"architecture", setKV("general.architecture", "llama"), `"llama", want "nielsgpt"`},
		{"generation 2", setKV("nielsgpt.generation", uint32(2)), "generation is 2"},
		{"missing key", setKV("nielsgpt.block_count", nil), "nielsgpt.block_count is missing"},
		{"wrong type", setKV("nielsgpt.embedding_length", int32(8)), "want uint32"},
		{"vocab", setKV("nielsgpt.vocab_size", uint32(32000)), "V=32000"},
		{"heads", setKV("nielsgpt.attention.head_count", uint32(3)), "not divisible"},
		{"rope", setKV("nielsgpt.rope.freq_base", float32(-1)), "rope_theta"},
		{"eps", setKV("nielsgpt.attention.layer_norm_epsilon", float32(0)), "layer_norm_epsilon"},
		{"tokenizer", setKV("tokenizer.ggml.model", "llama"), "tokenizer.ggml.model"},
		{"chat format", setKV("nielsgpt.chat_format", "chatml"), "chat_format"},
		{"missing tensor", func(k []ggufKV, ts []ggufTensorOut) ([]ggufKV, []ggufTensorOut) {
			return k, ts[1:]
		}, "token_embd.weight is missing"},
		{"extra tensor", func(k []ggufKV, ts []ggufTensorOut) ([]ggufKV, []ggufTensorOut) {
			return k, append(ts, ggufTensorOut{name: "output.weight", dims: []uint64{8, 256}, data: make([]float32, 2048)})
		}, "unexpected tensor output.weight"},
		{"transposed dims", func(k []ggufKV, ts []ggufTensorOut) ([]ggufKV, []ggufTensorOut) {
			ts[0].dims = []uint64{256, 8}
			return k, ts
		}, "token_embd.weight has dims [256 8], want [8 256]"},
		{"f16 vector", func(k []ggufKV, ts []ggufTensorOut) ([]ggufKV, []ggufTensorOut) {
			ts[1].typ = ggmlTypeF16
			return k, ts
		}, "vectors must be F32"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kvs, ts := tc.mutate(tinyGGUFParts(t))
			g, err := ParseGGUF(rawGGUF(t, kvs, ts))
			if err != nil {
				t.Fatal(err)
			}
			_, err = g.NielsGPTConfig()
			wantError(t, err, tc.want)
		})
	}
}

func TestParseGGUFKVTypes(t *testing.T) {
	kvs := []ggufKV{
		{"u8", uint8(200)}, {"i8", int8(-5)}, {"u16", uint16(60000)}, {"i16", int16(-300)},
		{"u32", uint32(4e9)}, {"i32", int32(-7)}, {"f32", float32(1.5)}, {"b", true},
		{"s", "héllo"}, {"u64", uint64(1 << 60)}, {"i64", int64(-1 << 60)}, {"f64", 2.25},
		{"as", []string{"a", "", "bc"}}, {"au32", []uint32{1, 2}}, {"af32", []float32{0.5}},
		{"ai64", []int64{-1}}, {"ab", []bool{true, false}}, {"empty", []uint8{}},
	}
	g, err := ParseGGUF(rawGGUF(t, kvs, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs {
		if got := g.KV[kv.key]; !reflect.DeepEqual(got, kv.value) {
			t.Errorf("%s = %#v, want %#v", kv.key, got, kv.value)
		}
	}
}

func TestParseGGUFCorrupt(t *testing.T) {
	kvs, tensors := tinyGGUFParts(t)
	good := rawGGUF(t, kvs, tensors)
	g, err := ParseGGUF(good)
	if err != nil {
		t.Fatal(err)
	}
	headerEnd := int(g.Tensors[0].Offset)

	// Every truncation inside the header, and a sample inside the data, is an error.
	for n := 0; n < len(good); n++ {
		if n > headerEnd && n%17 != 0 {
			continue
		}
		if _, err := ParseGGUF(good[:n]); err == nil {
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
		{"duplicate key", rawGGUF(t, []ggufKV{{"a", uint8(1)}, {"a", uint8(2)}}, nil), "appears twice"},
		{"bool byte", func() []byte {
			b := rawGGUF(t, []ggufKV{{"flag", true}}, nil)
			b[24+8+4+4] = 2
			return b
		}(), "bool byte 2"},
		{"nested array", func() []byte {
			b := rawGGUF(t, []ggufKV{{"arr", []uint32{}}}, nil)
			binary.LittleEndian.PutUint32(b[24+8+3+4:], gvArray)
			return b
		}(), "array of value type 9"},
		{"array count", func() []byte {
			b := rawGGUF(t, []ggufKV{{"arr", []uint32{1}}}, nil)
			binary.LittleEndian.PutUint64(b[24+8+3+4+4:], 1<<61)
			return b
		}(), "does not fit"},
		{"invalid utf8 key", rawGGUF(t, []ggufKV{{"\xff", uint8(1)}}, nil), "UTF-8"},
		{"duplicate tensor", func() []byte {
			kvs, ts := tinyGGUFParts(t)
			ts[1].name = ts[0].name
			return rawGGUF(t, kvs, ts)
		}(), "repeated"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseGGUF(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestConvertFile(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "model.gguf")
	sum, err := ConvertFile(filepath.Join(fixturesDir, "t2_small.pt"), out, ConvertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Params != 82944 || sum.Step != 1 || sum.Config.C != 64 || len(sum.SHA256) != 64 {
		t.Errorf("summary %+v", sum)
	}
	data, g, err := ReadGGUFFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if g.KV["nielsgpt.source.sha256"] != sum.SHA256 || len(data) == 0 {
		t.Errorf("sha256 KV %v, summary %s", g.KV["nielsgpt.source.sha256"], sum.SHA256)
	}
	if _, err := g.NielsGPTConfig(); err != nil {
		t.Fatal(err)
	}

	// A refused checkpoint leaves neither the output nor a temporary file behind.
	bad := filepath.Join(dir, "bad.gguf")
	if _, err := ConvertFile(filepath.Join("testdata", "bad_shape.pt"), bad, ConvertOptions{}); err == nil || !strings.Contains(err.Error(), "fc1.weight") {
		t.Fatalf("bad_shape converted: %v", err)
	}
	// F16 overwrites the earlier output in place, atomically.
	if _, err := ConvertFile(filepath.Join("testdata", "tiny_f32.pt"), out, ConvertOptions{F16: true}); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "model.gguf" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only model.gguf", names)
	}
	if _, err := ConvertFile(out, out, ConvertOptions{}); err == nil {
		t.Error("converting a file onto itself succeeded")
	}
	if _, err := ConvertFile(filepath.Join(dir, "missing.pt"), out, ConvertOptions{}); err == nil {
		t.Error("missing input accepted")
	}
}
