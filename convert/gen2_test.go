package convert

// Generation 2: the fixtures that scripts/make_fixtures_gen2.py writes with torch.save
// (one tagged as saved on CUDA, step or best_val_loss None, an optimizer state, the _raw
// settings dumps) read and convert with their tokenizer into GGUFs the strict reader
// accepts, whose tokenizer encodes as spm.model does; a tokenizer that is missing, not the
// one the checkpoint records, or does not fit the model is refused with a message that
// says what to do; and a generation-1 checkpoint is left as it was.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"nielsgpt/gguf"
	"nielsgpt/tokenizer"
)

var (
	gen2Fixtures = filepath.Join("..", "testdata", "models")
	spmDir       = filepath.Join("..", "testdata", "spm")
	tinySPM      = filepath.Join(spmDir, "tiny.model")
)

func fileSHA(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

func TestReadGen2Fixtures(t *testing.T) {
	tokSHA := fileSHA(t, tinySPM)
	loss := 2.5
	cases := []struct {
		file string
		cfg  gguf.ModelConfig
		step int64
		loss *float64
	}{
		{"tiny_gen2_a.pt", gguf.ModelConfig{Vocab: 1000, Context: 64, Embd: 32, Layers: 2, Heads: 2, FF: 48, RopeTheta: 10000, NormEps: LayerNormEps, Norm: gguf.NormRMS, MLP: gguf.MLPSwiGLU}, 1234, nil},
		{"tiny_gen2_b.pt", gguf.ModelConfig{Vocab: 1000, Context: 20, Embd: 24, Layers: 3, Heads: 2, FF: 40, RopeTheta: 500, NormEps: LayerNormEps, Norm: gguf.NormRMS, MLP: gguf.MLPSwiGLU}, 0, &loss},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			ck := readTestCheckpoint(t, filepath.Join(gen2Fixtures, tc.file))
			if ck.Config != tc.cfg || ck.Config.Generation() != 2 {
				t.Errorf("config %+v, want %+v", ck.Config, tc.cfg)
			}
			if ck.Step != tc.step || (ck.BestValLoss == nil) != (tc.loss == nil) || (tc.loss != nil && *ck.BestValLoss != *tc.loss) {
				t.Errorf("step %d best_val_loss %v", ck.Step, ck.BestValLoss)
			}
			if ck.TokenizerSHA256 != tokSHA {
				t.Errorf("recorded tokenizer sha256 %q, want %s", ck.TokenizerSHA256, tokSHA)
			}
			if _, ok := ck.Tensors["blocks.1.mlp.fc_g.bias"]; !ok {
				t.Error("no fc_g bias")
			}
		})
	}
}

// corpusLines is the tokenizer conformance corpus (scripts/make_spm_fixture.py) as text.
func corpusLines(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(spmDir, "tiny.encode.jsonl.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(gz)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var row struct {
			Text *string `json:"text"`
			Hex  string  `json:"hex"`
		}
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			t.Fatal(err)
		}
		if row.Text != nil {
			lines = append(lines, *row.Text)
		} else if b, err := hex.DecodeString(row.Hex); err == nil {
			lines = append(lines, string(b))
		}
	}
	if err := sc.Err(); err != nil || len(lines) < 100 {
		t.Fatalf("%d corpus lines, %v", len(lines), err)
	}
	return lines
}

func TestGen2ToGGUF(t *testing.T) {
	spm, err := tokenizer.LoadModel(tinySPM)
	if err != nil {
		t.Fatal(err)
	}
	lines := corpusLines(t)
	for _, tc := range []struct {
		file string
		opts Options
	}{{"tiny_gen2_a.pt", Options{Tokenizer: tinySPM}}, {"tiny_gen2_b.pt", Options{Tokenizer: tinySPM, F16: true}}} {
		t.Run(tc.file, func(t *testing.T) {
			in := filepath.Join(gen2Fixtures, tc.file)
			out := filepath.Join(t.TempDir(), "m.gguf")
			sum, err := ToGGUF(in, out, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if sum.Tokenizer != tinySPM || sum.TokenizerSHA256 != fileSHA(t, tinySPM) || !sum.TokenizerChecked || sum.Config.Generation() != 2 {
				t.Errorf("summary %+v", sum)
			}
			data, g, err := gguf.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := g.ModelConfig()
			if err != nil {
				t.Fatal(err)
			}
			ck := readTestCheckpoint(t, in)
			want := ck.Config
			want.NormEps = float64(float32(want.NormEps)) // the file stores float32
			if cfg != want {
				t.Errorf("config %+v, want %+v", cfg, want)
			}
			checkConvertedTensors(t, g, data, ck)
			tok, err := g.Tokenizer()
			if err != nil {
				t.Fatal(err)
			}
			if tok.VocabSize() != 1000 {
				t.Fatalf("vocab %d", tok.VocabSize())
			}
			for _, line := range lines {
				if got, want := tok.Encode(line), spm.Encode(line); !slices.Equal(got, want) {
					t.Fatalf("Encode(%q): %v from the GGUF, %v from spm.model", line, got, want)
				}
			}
		})
	}
}

// copyFile puts a copy of src at dir/name.
func copyFile(t *testing.T, src, dir, name string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Where the tokenizer comes from: named, found beside the checkpoint, or missing.
func TestGen2TokenizerSources(t *testing.T) {
	dir := t.TempDir()
	ckpt := copyFile(t, filepath.Join(gen2Fixtures, "tiny_gen2_b.pt"), dir, "best.pt")
	out := filepath.Join(dir, "best.gguf")

	_, err := ToGGUF(ckpt, out, Options{})
	for _, want := range []string{"generation-2", "spm.model", "--tokenizer", "TOKENIZER", fileSHA(t, tinySPM)} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("no tokenizer: error %v, want one containing %q", err, want)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a refused conversion left a file")
	}

	beside := copyFile(t, tinySPM, dir, "spm.model")
	sum, err := ToGGUF(ckpt, out, Options{})
	if err != nil || sum.Tokenizer != beside {
		t.Fatalf("spm.model beside the checkpoint: %+v, %v", sum, err)
	}

	// The tokenizer named wins over the one beside it, and is checked.
	other := filepath.Join(spmDir, "tiny_identity.model")
	_, err = ToGGUF(ckpt, out, Options{Tokenizer: other})
	for _, want := range []string{ckpt, other, fileSHA(t, other), fileSHA(t, tinySPM), "tokenizer_sha256"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("sha256 mismatch: error %v, want one containing %q", err, want)
		}
	}
	if _, err := ToGGUF(ckpt, out, Options{Tokenizer: filepath.Join(dir, "missing.model")}); err == nil || !strings.Contains(err.Error(), "missing.model") {
		t.Errorf("missing tokenizer: %v", err)
	}
}

func TestGen2TokenizerMustFit(t *testing.T) {
	ck := readTestCheckpoint(t, filepath.Join(gen2Fixtures, "tiny_gen2_a.pt"))
	ck.TokenizerSHA256 = "" // an older run that did not record it: nothing to compare
	other := filepath.Join(spmDir, "tiny_identity.model")
	if err := ck.UseTokenizer(other); err != nil {
		t.Fatal(err)
	}
	err := ck.Validate()
	if err == nil || !strings.Contains(err.Error(), "does not fit the model") || !strings.Contains(err.Error(), "vocab size V is 1000") {
		t.Errorf("a tokenizer of another size: %v", err)
	}
	var buf bytes.Buffer
	if err := WriteGGUF(&buf, ck, testSHA, Options{}); err == nil || buf.Len() != 0 {
		t.Errorf("written anyway: %v, %d bytes", err, buf.Len())
	}
}

// A generation-1 checkpoint refuses a tokenizer named for it and ignores an spm.model
// that only lies beside it; its GGUF is what it always was.
func TestGen1IgnoresTokenizerBeside(t *testing.T) {
	dir := t.TempDir()
	ckpt := copyFile(t, filepath.Join("testdata", "tiny_f32.pt"), dir, "best.pt")
	copyFile(t, tinySPM, dir, "spm.model")
	if _, err := ToGGUF(ckpt, filepath.Join(dir, "a.gguf"), Options{Tokenizer: tinySPM}); err == nil || !strings.Contains(err.Error(), "takes no tokenizer") {
		t.Errorf("named tokenizer for generation 1: %v", err)
	}
	sum, err := ToGGUF(ckpt, filepath.Join(dir, "a.gguf"), Options{})
	if err != nil || sum.Tokenizer != "" || sum.Config.Generation() != 1 {
		t.Fatalf("%+v, %v", sum, err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "a.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	ck := readTestCheckpoint(t, ckpt)
	if err := WriteGGUF(&want, ck, sum.SHA256, Options{}); err != nil || !bytes.Equal(got, want.Bytes()) {
		t.Errorf("the GGUF differs from the one written without a tokenizer beside: %v", err)
	}
}

func TestRecogniseGeneration(t *testing.T) {
	raw := func(mlp any) *pyDict {
		r, d := newPyDict(), newPyDict()
		_ = r.set("mlp_type", mlp)
		_ = d.set("_raw", r)
		return d
	}
	cases := []struct {
		names    []string
		modelCfg any
		gen      int
		err      string
	}{
		{[]string{"blocks.0.mlp.fc1.weight"}, raw("swiglu"), 1, ""}, // the keys win over _raw
		{[]string{"_orig_mod.blocks.0.mlp.fc_a.weight"}, nil, 2, ""},
		{[]string{"tok_emb.weight"}, raw("swiglu"), 2, ""},
		{[]string{"tok_emb.weight"}, raw(int64(3)), 1, ""},
		{[]string{"tok_emb.weight"}, newPyDict(), 1, ""},
		{[]string{"blocks.0.mlp.fc1.weight", "blocks.1.mlp.fc_a.bias"}, nil, 0, "both mlp.fc1"},
	}
	for _, tc := range cases {
		var cfg gguf.ModelConfig
		err := recogniseGeneration(&cfg, tc.names, tc.modelCfg)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: error %v", tc.names, err)
			}
			continue
		}
		if err != nil || cfg.Generation() != tc.gen {
			t.Errorf("%v: generation %d, %v; want %d", tc.names, cfg.Generation(), err, tc.gen)
		}
	}
}

// gen2TinyCfg is the smallest generation-2 shape the schema accepts.
var gen2TinyCfg = gguf.ModelConfig{Vocab: 7, Context: 4, Embd: 2, Layers: 1, Heads: 1, FF: 2, RopeTheta: 10000, NormEps: LayerNormEps, Norm: gguf.NormRMS, MLP: gguf.MLPSwiGLU}

// gen2Checkpoint is a hand-built generation-2 checkpoint whose
// train_cfg._settings_meta.tokenizer_sha256 is written by sha (nothing for no train_cfg).
func gen2Checkpoint(t testing.TB, sha func(*pickleBuilder)) []byte {
	tensors := handTensorsOf(gen2TinyCfg)
	pkl := checkpointPickleWith(gen2TinyCfg, tensors, false, func(p *pickleBuilder) {
		if sha != nil {
			p.str("train_cfg").op('}', '(').str("_settings_meta").op('}', '(').str("tokenizer_sha256")
			sha(p)
			p.op('u', 'u')
		}
	})
	return zipCheckpoint(t, pkl, storagesFor(tensors))
}

func TestRecordedTokenizerSHA256(t *testing.T) {
	upper := strings.Repeat("AB", 32)
	cases := []struct {
		name  string
		write func(*pickleBuilder)
		want  string
		err   string
	}{
		{"no train_cfg", nil, "", ""},
		{"upper case", func(p *pickleBuilder) { p.str(upper) }, strings.Repeat("ab", 32), ""},
		{"None", func(p *pickleBuilder) { p.op('N') }, "", ""},
		{"short", func(p *pickleBuilder) { p.str("abc") }, "", `tokenizer_sha256 is "abc", not a sha256`},
		{"int", func(p *pickleBuilder) { p.int(5) }, "", "tokenizer_sha256 is a int"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ck, err := ReadCheckpointBytes(gen2Checkpoint(t, tc.write))
			wantError(t, err, tc.err)
			if tc.err != "" {
				return
			}
			if ck.TokenizerSHA256 != tc.want || ck.Config != gen2TinyCfg {
				t.Errorf("sha %q config %+v", ck.TokenizerSHA256, ck.Config)
			}
		})
	}
}
