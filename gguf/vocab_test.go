package gguf

// Tests of generation-2 files: the keys and tensor table spelled out, the vocabulary's
// round trip through the file (the tokenizer read back encodes as the one loaded from
// spm.model), and every way the writer or the reader refuses a vocabulary or a file that
// claims generation 2 without being one.

import (
	"bytes"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"nielsgpt/tokenizer"
)

const testTokSHA = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"

// chatSpecials are niels-gpt's chat pieces as its tokenizer spells them (ids 3..6).
var chatSpecials = []string{
	"<|ngpt_sys_84a5023f67d74cf29cc4001becde983c|>", "<|ngpt_usr_84a5023f67d74cf29cc4001becde983c|>",
	"<|ngpt_asst_84a5023f67d74cf29cc4001becde983c|>", "<|ngpt_eot_84a5023f67d74cf29cc4001becde983c|>",
}

// handVocab is the smallest vocabulary a generation-2 file accepts: unk, bos, eos, the
// chat pieces and a few normal pieces; no charsmap (the identity normaliser).
func handVocab() Vocabulary {
	pieces := []tokenizer.Piece{{Text: "<unk>", Type: tokenizer.PieceUnknown}, {Text: "<s>", Type: tokenizer.PieceControl}, {Text: "</s>", Type: tokenizer.PieceControl}}
	for _, s := range chatSpecials {
		pieces = append(pieces, tokenizer.Piece{Text: s, Type: tokenizer.PieceUserDefined})
	}
	for i, s := range []string{"▁", "a", "b", "▁ab"} {
		pieces = append(pieces, tokenizer.Piece{Text: s, Score: -float32(i + 1), Type: tokenizer.PieceNormal})
	}
	return Vocabulary{SHA256: testTokSHA, Vocab: tokenizer.Vocab{
		Pieces: pieces, UnkID: 0, BosID: 1, EosID: 2, PadID: -1, UnkSurface: " ⁇ ",
		AddDummyPrefix: true, RemoveExtraWhitespaces: true, EscapeWhitespaces: true,
	}}
}

// tinyModelVocab is testdata/spm/tiny.model's vocabulary: generation 2's tokenizer
// settings with 1,000 pieces.
func tinyModelVocab(t testing.TB) (Vocabulary, *tokenizer.SentencePiece) {
	t.Helper()
	sp, err := tokenizer.LoadModel(filepath.Join("..", "testdata", "spm", "tiny.model"))
	if err != nil {
		t.Fatal(err)
	}
	return Vocabulary{Vocab: sp.Export(), SHA256: testTokSHA}, sp
}

func gen2Config(vocab int) ModelConfig {
	return ModelConfig{Vocab: vocab, Context: 8, Embd: 8, Layers: 2, Heads: 2, FF: 12, RopeTheta: 10000, NormEps: 1e-5, Norm: NormRMS, MLP: MLPSwiGLU}
}

func writeGen2(t testing.TB, cfg ModelConfig, voc Vocabulary, opts WriteOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteWithVocabulary(&buf, cfg, sineWeights(cfg), voc, Source{SHA256: testSHA, Step: 7}, opts); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWriteGen2RoundTrip(t *testing.T) {
	voc, sp := tinyModelVocab(t)
	for _, opts := range []WriteOptions{{}, {F16: true}} {
		cfg := gen2Config(1000)
		data := writeGen2(t, cfg, voc, opts)
		g, err := Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		got, err := g.ModelConfig()
		if err != nil {
			t.Fatal(err)
		}
		want := cfg
		want.NormEps = float64(float32(cfg.NormEps))
		if got != want || got.Generation() != 2 {
			t.Errorf("config %+v, want %+v", got, want)
		}
		checkTensorData(t, g, data, cfg, sineWeights(cfg), opts)
		tok, err := g.Tokenizer()
		if err != nil {
			t.Fatal(err)
		}
		back, ok := tok.(*tokenizer.SentencePiece)
		if !ok {
			t.Fatalf("tokenizer is a %T", tok)
		}
		if !reflect.DeepEqual(back.Export(), sp.Export()) {
			t.Error("the vocabulary read back differs from spm.model's")
		}
		for _, text := range []string{"hello world", "  Crème brûlée\tÅngström ＡＢＣ  ", "x" + chatSpecials[1] + "y", "日本語 🙂"} {
			if a, b := back.Encode(text), sp.Encode(text); !slices.Equal(a, b) {
				t.Errorf("Encode(%q) = %v from the GGUF, %v from spm.model", text, a, b)
			}
		}
		if sum, ok := g.TokenizerSHA256(); !ok || sum != testTokSHA {
			t.Errorf("TokenizerSHA256 %q %v", sum, ok)
		}
	}
}

// The generation-2 keys are a contract with the engine and with tools that read the
// file: spell them out.
func TestGen2Keys(t *testing.T) {
	voc := handVocab()
	cfg := gen2Config(len(voc.Pieces))
	g, err := Parse(writeGen2(t, cfg, voc, WriteOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	wantKV := map[string]any{
		"nielsgpt.generation":                       uint32(2),
		"nielsgpt.vocab_size":                       uint32(11),
		"nielsgpt.attention.layer_norm_rms_epsilon": float32(1e-5),
		"nielsgpt.norm_type":                        "rmsnorm",
		"nielsgpt.mlp_type":                         "swiglu",
		"nielsgpt.chat_format":                      "niels-v2",
		"tokenizer.ggml.model":                      "nielsgpt-spm",
		"tokenizer.ggml.tokens":                     []string{"<unk>", "<s>", "</s>", chatSpecials[0], chatSpecials[1], chatSpecials[2], chatSpecials[3], "▁", "a", "b", "▁ab"},
		"tokenizer.ggml.scores":                     []float32{0, 0, 0, 0, 0, 0, 0, -1, -2, -3, -4},
		"tokenizer.ggml.token_type":                 []int32{2, 3, 3, 4, 4, 4, 4, 1, 1, 1, 1},
		"tokenizer.ggml.precompiled_charsmap":       []uint8{},
		"tokenizer.ggml.unknown_token_id":           uint32(0),
		"tokenizer.ggml.bos_token_id":               uint32(1),
		"tokenizer.ggml.eos_token_id":               uint32(2),
		"tokenizer.ggml.add_space_prefix":           true,
		"tokenizer.ggml.remove_extra_whitespaces":   true,
		"nielsgpt.tokenizer.escape_whitespaces":     true,
		"nielsgpt.tokenizer.byte_fallback":          false,
		"nielsgpt.tokenizer.unk_surface":            " ⁇ ",
		"nielsgpt.tokenizer.normalizer_name":        "",
		"nielsgpt.tokenizer.sha256":                 testTokSHA,
		"nielsgpt.source.sha256":                    testSHA,
	}
	for k, v := range wantKV {
		if !reflect.DeepEqual(g.KV[k], v) {
			t.Errorf("KV %s = %#v, want %#v", k, g.KV[k], v)
		}
	}
	for _, k := range []string{"tokenizer.ggml.padding_token_id", "nielsgpt.attention.layer_norm_epsilon"} {
		if _, ok := g.KV[k]; ok {
			t.Errorf("KV %s is written", k)
		}
	}
}

// The generation-2 tensor table, spelled out for one shape.
func TestTensorContractGen2(t *testing.T) {
	voc := handVocab()
	cfg := gen2Config(len(voc.Pieces))
	g, err := Parse(writeGen2(t, cfg, voc, WriteOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]uint64{
		"token_embd.weight":        {8, 11},
		"blk.0.attn_norm.weight":   {8},
		"blk.0.attn_qkv.weight":    {8, 24},
		"blk.0.attn_output.weight": {8, 8},
		"blk.1.ffn_norm.weight":    {8},
		"blk.1.ffn_gate.weight":    {8, 12},
		"blk.1.ffn_gate.bias":      {12},
		"blk.1.ffn_up.weight":      {8, 12},
		"blk.1.ffn_up.bias":        {12},
		"blk.1.ffn_down.weight":    {12, 8},
		"blk.1.ffn_down.bias":      {8},
		"output_norm.weight":       {8},
	}
	have := wantTensorDims(t, g, want)
	if len(have) != 2+2*10 {
		t.Errorf("%d tensors, want 22", len(have))
	}
	keys := map[string]string{"blk.0.ffn_gate.weight": "blocks.0.mlp.fc_g.weight", "blk.0.ffn_up.bias": "blocks.0.mlp.fc_a.bias",
		"blk.0.ffn_down.weight": "blocks.0.mlp.fc_out.weight", "output_norm.weight": "ln_f.weight"}
	for _, spec := range cfg.Tensors() {
		if k, ok := keys[spec.Name]; ok && spec.StateKey != k {
			t.Errorf("%s comes from %s, want %s", spec.Name, spec.StateKey, k)
		}
	}
}

func TestWriteGen2Refuses(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(cfg *ModelConfig, voc *Vocabulary)
		want   string
	}{
		{"vocab size", func(c *ModelConfig, _ *Vocabulary) { c.Vocab = 12 }, "11 pieces but the model's vocab size V is 12"},
		{"tokenizer sha", func(_ *ModelConfig, v *Vocabulary) { v.SHA256 = "" }, "tokenizer sha256"},
		{"chat piece", func(_ *ModelConfig, v *Vocabulary) { v.Pieces[6].Text = "<eot>" }, "piece 6"},
		{"chat piece type", func(_ *ModelConfig, v *Vocabulary) { v.Pieces[3].Type = tokenizer.PieceControl }, "user-defined chat piece <|ngpt_sys_"},
		{"not utf-8", func(_ *ModelConfig, v *Vocabulary) { v.Pieces[8].Text = "\xff" }, "piece 8 is not valid UTF-8"},
		{"bos id", func(_ *ModelConfig, v *Vocabulary) { v.BosID = 11 }, "bos id 11"},
		{"tokenizer refuses", func(_ *ModelConfig, v *Vocabulary) { v.Pieces[0].Type = tokenizer.PieceNormal }, "no unknown piece"},
		{"mixed generation", func(c *ModelConfig, _ *Vocabulary) { c.MLP = MLPGELU }, "not a niels-gpt generation"},
		{"tiny vocab", func(c *ModelConfig, v *Vocabulary) { c.Vocab = 5; v.Pieces = v.Pieces[:5] }, "V=5"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			voc := handVocab()
			cfg := gen2Config(len(voc.Pieces))
			weights := sineWeights(cfg)
			tc.mutate(&cfg, &voc)
			var buf bytes.Buffer
			err := WriteWithVocabulary(&buf, cfg, weights, voc, Source{SHA256: testSHA}, WriteOptions{})
			wantError(t, err, tc.want)
			if buf.Len() != 0 {
				t.Errorf("a refused file wrote %d bytes", buf.Len())
			}
		})
	}
	var buf bytes.Buffer
	cfg := gen2Config(11)
	wantError(t, Write(&buf, cfg, sineWeights(cfg), Source{SHA256: testSHA}, WriteOptions{}), "WriteWithVocabulary")
	wantError(t, WriteWithVocabulary(&buf, tinyCfg, sineWeights(tinyCfg), handVocab(), Source{SHA256: testSHA}, WriteOptions{}), "stores no vocabulary")
}

// gen2Parts returns a valid generation-2 file's KVs, in the writer's order, and tensors,
// to be broken one way per case.
func gen2Parts() ([]kv, []tensorOut) {
	voc := handVocab()
	cfg := gen2Config(len(voc.Pieces))
	weights := sineWeights(cfg)
	var tensors []tensorOut
	for _, spec := range cfg.Tensors() {
		tensors = append(tensors, tensorOut{name: spec.Name, dims: spec.Dims(), data: weights[spec.Name]})
	}
	return metadataOf(cfg, &voc, Source{SHA256: testSHA}, WriteOptions{}), tensors
}

// setGen2KV replaces (or, with nil, removes) one key of gen2Parts' file.
func setGen2KV(key string, v any) func([]kv, []tensorOut) ([]kv, []tensorOut) {
	return func(kvs []kv, ts []tensorOut) ([]kv, []tensorOut) {
		for i := range kvs {
			if kvs[i].key == key {
				if v == nil {
					return slices.Delete(kvs, i, i+1), ts
				}
				kvs[i].value = v
				return kvs, ts
			}
		}
		return append(kvs, kv{key, v}), ts
	}
}

func TestModelConfigRefusesGen2(t *testing.T) {
	tokens := []string{"<unk>", "<s>", "</s>", chatSpecials[0], chatSpecials[1], chatSpecials[2], chatSpecials[3], "▁", "a", "b", "▁ab"}
	cases := []struct {
		name   string
		mutate func([]kv, []tensorOut) ([]kv, []tensorOut)
		want   string
	}{
		{"valid", func(k []kv, ts []tensorOut) ([]kv, []tensorOut) { return k, ts }, ""},
		{"generation 3", setGen2KV("nielsgpt.generation", uint32(3)), "generations 1 and 2"},
		{"norm type", setGen2KV("nielsgpt.norm_type", "layernorm"), `generation is 2, but metadata nielsgpt.norm_type is "layernorm"`},
		{"no mlp type", setGen2KV("nielsgpt.mlp_type", nil), "nielsgpt.mlp_type is missing"},
		{"gen-1 epsilon", setGen2KV("nielsgpt.attention.layer_norm_rms_epsilon", nil), "layer_norm_rms_epsilon is missing"},
		{"byte tokenizer", setGen2KV("tokenizer.ggml.model", "bytes"), `"bytes", want "nielsgpt-spm"`},
		{"chat format", setGen2KV("nielsgpt.chat_format", "niels-v1"), `"niels-v1", want "niels-v2"`},
		{"vocab size", setGen2KV("nielsgpt.vocab_size", uint32(12)), "token_embd.weight has dims"},
		{"fewer tokens", setGen2KV("tokenizer.ggml.tokens", tokens[:10]), "10 tokens, 11 scores"},
		{"tokens as ints", setGen2KV("tokenizer.ggml.tokens", []int32{1}), "want []string"},
		{"types as u32", setGen2KV("tokenizer.ggml.token_type", []uint32{2, 3, 3, 4, 4, 4, 4, 1, 1, 1, 1}), "want []int32"},
		{"unknown type", setGen2KV("tokenizer.ggml.token_type", []int32{2, 3, 3, 4, 4, 4, 4, 1, 1, 1, 9}), "unknown type 9"},
		{"no charsmap", setGen2KV("tokenizer.ggml.precompiled_charsmap", nil), "precompiled_charsmap is missing"},
		{"bad charsmap", setGen2KV("tokenizer.ggml.precompiled_charsmap", []uint8{0xff, 0xff, 0xff, 0xff}), "charsmap"},
		{"eos id", setGen2KV("tokenizer.ggml.eos_token_id", uint32(1<<31)), "eos id 11"},
		{"pad id type", setGen2KV("tokenizer.ggml.padding_token_id", int32(-1)), "want uint32"},
		{"no byte fallback key", setGen2KV("nielsgpt.tokenizer.byte_fallback", nil), "byte_fallback is missing"},
		{"tokenizer sha", setGen2KV("nielsgpt.tokenizer.sha256", "abc"), "tokenizer sha256"},
		{"chat piece", setGen2KV("tokenizer.ggml.tokens", append(slices.Clone(tokens[:6]), append([]string{"<eot>"}, tokens[7:]...)...)), "piece 6"},
		{"gen-1 tensor", func(k []kv, ts []tensorOut) ([]kv, []tensorOut) {
			return k, append(ts, tensorOut{name: "output_norm.bias", dims: []uint64{8}, data: make([]float32, 8)})
		}, "unexpected tensor output_norm.bias"},
		{"missing gate", func(k []kv, ts []tensorOut) ([]kv, []tensorOut) {
			return k, slices.DeleteFunc(ts, func(x tensorOut) bool { return x.name == "blk.1.ffn_gate.bias" })
		}, "blk.1.ffn_gate.bias is missing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kvs, ts := tc.mutate(gen2Parts())
			g, err := Parse(rawGGUF(t, kvs, ts))
			if err != nil {
				t.Fatal(err)
			}
			_, err = g.ModelConfig()
			wantError(t, err, tc.want)
			_, err = g.Tokenizer()
			wantError(t, err, tc.want)
		})
	}
}

// A generation-1 file's tokenizer is the byte tokenizer, and it names no spm.model.
func TestTokenizerGen1(t *testing.T) {
	g, err := Parse(writeTest(t, tinyCfg, sineWeights(tinyCfg), Source{SHA256: testSHA}, WriteOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := g.Tokenizer()
	if err != nil || tok != (tokenizer.Bytes{}) {
		t.Fatalf("tokenizer %#v, %v", tok, err)
	}
	if _, ok := g.TokenizerSHA256(); ok {
		t.Error("a generation-1 file names a tokenizer sha256")
	}
	if strings.Contains(string(writeTest(t, tinyCfg, sineWeights(tinyCfg), Source{SHA256: testSHA}, WriteOptions{})), "tokenizer.ggml.tokens") {
		t.Error("a generation-1 file stores a vocabulary")
	}
}
