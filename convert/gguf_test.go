package convert

// Tests of the conversion from checkpoint to GGUF: real checkpoints round-trip through
// the strict reader in F32 and F16 with every value in place, an invalid checkpoint is
// refused before a byte is written, and ToGGUF's output is atomic. The file format
// itself is tested in package gguf.

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"nielsgpt/gguf"
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

func writeTestGGUF(t testing.TB, ck *Checkpoint, opts Options) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteGGUF(&buf, ck, testSHA, opts); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWriteGGUFRoundTrip(t *testing.T) {
	cases := []struct {
		path string
		opts Options
	}{
		{filepath.Join("testdata", "tiny_f32.pt"), Options{}},
		{filepath.Join("testdata", "tiny_f16.pt"), Options{F16: true}},
		{filepath.Join("testdata", "tiny_bf16.pt"), Options{}},
		{filepath.Join(fixturesDir, "t2_small.pt"), Options{}},
		{filepath.Join(fixturesDir, "t2_cuda_opt.pt"), Options{F16: true}},
	}
	for _, tc := range cases {
		t.Run(filepath.Base(tc.path)+map[bool]string{true: "/f16", false: "/f32"}[tc.opts.F16], func(t *testing.T) {
			ck := readTestCheckpoint(t, tc.path)
			data := writeTestGGUF(t, ck, tc.opts)
			g, err := gguf.Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := g.ModelConfig()
			if err != nil {
				t.Fatal(err)
			}
			want := ck.Config
			want.RopeTheta = float64(float32(want.RopeTheta))
			want.NormEps = float64(float32(want.NormEps))
			if cfg != want {
				t.Errorf("config %+v, want %+v", cfg, want)
			}
			if g.KV["nielsgpt.source.sha256"] != testSHA || g.KV["nielsgpt.source.step"] != uint64(ck.Step) {
				t.Errorf("source KVs %v %v", g.KV["nielsgpt.source.sha256"], g.KV["nielsgpt.source.step"])
			}
			if ck.BestValLoss != nil && g.KV["nielsgpt.source.best_val_loss"] != float32(*ck.BestValLoss) {
				t.Errorf("best_val_loss KV %v, want %v", g.KV["nielsgpt.source.best_val_loss"], *ck.BestValLoss)
			}
			checkConvertedTensors(t, g, data, ck)
		})
	}
}

// checkConvertedTensors requires every GGUF tensor to hold its checkpoint tensor's
// values, in PyTorch's row-major order: exactly in F32, to the nearest float16 in F16.
func checkConvertedTensors(t *testing.T, g *gguf.File, data []byte, ck *Checkpoint) {
	t.Helper()
	stateKey := map[string]string{}
	for _, spec := range ck.Config.Tensors() {
		stateKey[spec.Name] = spec.StateKey
	}
	if len(g.Tensors) != len(stateKey) {
		t.Errorf("%d tensors, want %d", len(g.Tensors), len(stateKey))
	}
	for _, gt := range g.Tensors {
		src := ck.Tensors[stateKey[gt.Name]]
		if src == nil {
			t.Fatalf("tensor %s has no source", gt.Name)
		}
		raw := data[gt.Offset : gt.Offset+gt.Size]
		for i, v := range src.Data {
			if gt.Type == gguf.TypeF16 {
				// Within half a float16 ulp: relative 2^-11, or 2^-25 among subnormals.
				got := halfToFloat32(binary.LittleEndian.Uint16(raw[2*i:]))
				if tol := math.Max(math.Abs(float64(v))/2048, 1.0/(1<<25)); math.Abs(float64(got-v)) > tol {
					t.Fatalf("%s[%d] = %v in F16, want %v", gt.Name, i, got, v)
				}
				continue
			}
			if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])); got != v {
				t.Fatalf("%s[%d] = %v, want %v", gt.Name, i, got, v)
			}
		}
	}
}

func TestWriteGGUFRefuses(t *testing.T) {
	bad := readTestCheckpoint(t, filepath.Join("testdata", "tiny_f32.pt"))
	delete(bad.Tensors, "ln_f.bias")
	var buf bytes.Buffer
	if err := WriteGGUF(&buf, bad, testSHA, Options{}); err == nil || !strings.Contains(err.Error(), "ln_f.bias") {
		t.Errorf("invalid checkpoint written: %v", err)
	}
	big := readTestCheckpoint(t, filepath.Join("testdata", "tiny_f32.pt"))
	big.Tensors["blocks.0.attn.proj.weight"].Data[3] = 1e6
	err := WriteGGUF(&buf, big, testSHA, Options{F16: true})
	if err == nil || !strings.Contains(err.Error(), "float16") || !strings.Contains(err.Error(), "blocks.0.attn.proj.weight") {
		t.Errorf("out-of-range F16 accepted, or the checkpoint tensor not named: %v", err)
	}
	if buf.Len() != 0 {
		t.Errorf("refused conversions wrote %d bytes", buf.Len())
	}
}

func TestToGGUF(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "model.gguf")
	sum, err := ToGGUF(filepath.Join(fixturesDir, "t2_small.pt"), out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Params != 82944 || sum.Step != 1 || sum.Config.Embd != 64 || len(sum.SHA256) != 64 {
		t.Errorf("summary %+v", sum)
	}
	data, g, err := gguf.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if g.KV["nielsgpt.source.sha256"] != sum.SHA256 || len(data) == 0 {
		t.Errorf("sha256 KV %v, summary %s", g.KV["nielsgpt.source.sha256"], sum.SHA256)
	}
	if _, err := g.ModelConfig(); err != nil {
		t.Fatal(err)
	}

	// A refused checkpoint leaves neither the output nor a temporary file behind.
	bad := filepath.Join(dir, "bad.gguf")
	if _, err := ToGGUF(filepath.Join("testdata", "bad_shape.pt"), bad, Options{}); err == nil || !strings.Contains(err.Error(), "fc1.weight") {
		t.Fatalf("bad_shape converted: %v", err)
	}
	// F16 overwrites the earlier output in place, atomically.
	if _, err := ToGGUF(filepath.Join("testdata", "tiny_f32.pt"), out, Options{F16: true}); err != nil {
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
	if _, err := ToGGUF(out, out, Options{}); err == nil {
		t.Error("converting a file onto itself succeeded")
	}
	if _, err := ToGGUF(filepath.Join(dir, "missing.pt"), out, Options{}); err == nil {
		t.Error("missing input accepted")
	}
}
