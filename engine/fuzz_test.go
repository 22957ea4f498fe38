// Fuzzing the engine's load path (docs/RELIABILITY.md, "Fuzzing"): LoadBytes
// takes a GGUF from disk or the network, and whatever reaches ggml unchecked
// can abort the whole process (ggml asserts call abort(), which no recover()
// catches). So every mutation of a valid file must either be refused with an
// error or load into a model that can run a step; a crash here kills the
// fuzzer, which keeps the input as a crasher in testdata/fuzz/FuzzLoadBytes.
//
// The seeds are a tiny synthetic model (a few KiB, so mutations land on
// headers and metadata as often as on weights) in F32 and F16, plus a few
// damaged copies. The committed corpus is written by
//
//	go test -run TestWriteLoadSeeds ./engine/ -args -write-load-seeds
package engine

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"nielsgpt/convert"
	"nielsgpt/gguf"
)

var writeLoadSeeds = flag.Bool("write-load-seeds", false, "rewrite testdata/fuzz/FuzzLoadBytes seeds")

// fuzzModelCfg is small in every dimension but keeps H=2 and L=2 so that
// per-head and per-layer code paths see more than one of each.
var fuzzModelCfg = gguf.ModelConfig{Vocab: 256, Context: 8, Embd: 4, Layers: 2, Heads: 2, FF: 8, RopeTheta: 10000, NormEps: convert.LayerNormEps}

// tinyGGUF writes a model of shape fuzzModelCfg with deterministic weights
// (no randomness: the seed files must not change between runs).
func tinyGGUF(t testing.TB, f16 bool) []byte {
	t.Helper()
	cfg := fuzzModelCfg
	k := 0
	ck := convert.SyntheticCheckpoint(cfg, func() float32 {
		k++
		return float32(0.1 * math.Sin(float64(k)*0.7))
	})
	if err := ck.Validate(); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	sha := "0000000000000000000000000000000000000000000000000000000000000000"
	if err := convert.WriteGGUF(&buf, ck, sha, convert.Options{F16: f16}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// loadSeeds are the inputs the fuzzer starts from, by name.
func loadSeeds(t testing.TB) map[string][]byte {
	f32, f16 := tinyGGUF(t, false), tinyGGUF(t, true)
	// One flipped letter in a tensor's name: the file still parses as GGUF,
	// so only the niels-gpt checks stand between it and ggml.
	renamed := bytes.Clone(f32)
	renamed[bytes.Index(renamed, []byte("blk.1.ffn_up.weight"))] ^= 0x20
	return map[string][]byte{
		"tiny_f32":       f32,
		"tiny_f16":       f16,
		"truncated_half": f32[:len(f32)/2],
		"header_only":    f32[:24],
		"renamed_tensor": renamed,
	}
}

func FuzzLoadBytes(f *testing.F) {
	for _, name := range []string{"tiny_f32", "tiny_f16"} {
		f.Add(loadSeeds(f)[name])
	}
	chat := []Message{{Role: "user", Content: "hi"}}
	f.Fuzz(func(t *testing.T, data []byte) {
		// A hang is as bad as a crash for a server starting up; the fuzzer
		// does not report hangs, so the watchdog turns one into a crasher.
		watchdog := time.AfterFunc(10*time.Second, func() { panic("LoadBytes or its first steps hung for 10s") })
		defer watchdog.Stop()
		m, err := LoadBytes(data, Options{Threads: 1})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("refused with an empty message")
			}
			return
		}
		defer m.Close()
		// What loads must also run: the graph is built from the file's
		// hyper-parameters, so a shape the checks let through would abort
		// in the first step rather than at load time.
		c := m.Config()
		if c.Vocab != 256 || c.Layers < 1 || c.Heads < 1 || c.Embd%c.Heads != 0 {
			t.Fatalf("loaded a model with config %+v", c)
		}
		res, err := m.Generate(context.Background(), GenerateRequest{
			Messages: chat, MaxNewTokens: 2, TraceLayer: c.Layers - 1,
			Sampling: Sampling{Temperature: 0.9, TopK: 50, Seed: 1},
		}, func(s *Step) error {
			if s.TokenID < 0 || s.TokenID >= c.Vocab || len(s.Attn) != c.Heads {
				return fmt.Errorf("step %+v out of range", s)
			}
			return nil
		})
		if err != nil || res == nil {
			t.Fatalf("a model that loads failed to generate: %v", err)
		}
		full, err := m.FullAttention(context.Background(), FullAttnRequest{
			Messages: chat, Layers: []int{0}, Sampling: Sampling{Temperature: 0},
		})
		if err != nil || len(full.Attn[0][c.Heads-1]) != len(full.TokenIDs) {
			t.Fatalf("a model that loads failed the full attention: %v", err)
		}
	})
}

// The seeds themselves must behave as named: the intact files load and the
// damaged ones are refused (so the corpus really covers both outcomes).
func TestLoadSeedsBehave(t *testing.T) {
	for name, data := range loadSeeds(t) {
		m, err := LoadBytes(data, Options{Threads: 1})
		intact := name == "tiny_f32" || name == "tiny_f16"
		switch {
		case intact && err != nil:
			t.Errorf("%s: refused: %v", name, err)
		case !intact && err == nil:
			t.Errorf("%s: loaded", name)
		}
		if m != nil {
			m.Close()
		}
	}
}

// TestWriteLoadSeeds regenerates the committed FuzzLoadBytes corpus (only
// with the flag); crashers the fuzzer found sit beside them and are kept.
func TestWriteLoadSeeds(t *testing.T) {
	if !*writeLoadSeeds {
		t.Skip("pass -args -write-load-seeds to rewrite the seeds")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzLoadBytes")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range loadSeeds(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(data)))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
