//go:build linux

package reliability

// A model file that is missing, damaged or not niels-gpt (docs/RELIABILITY.md,
// "Faults"): the real binary must stop promptly with one line naming the file
// and the problem and a non-zero exit, never an abort from ggml or a Go stack
// trace, and never serve something else instead.

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nielsgpt/gguf"
	"nielsgpt/internal/harness"
	"nielsgpt/internal/testkit"
)

// foreignGGUF is a well-formed GGUF v3 file of another architecture: what a
// user gets by pointing --model at a llama.cpp download.
func foreignGGUF(t *testing.T) []byte {
	var b bytes.Buffer
	u32 := func(v uint32) { _ = binary.Write(&b, binary.LittleEndian, v) }
	u64 := func(v uint64) { _ = binary.Write(&b, binary.LittleEndian, v) }
	str := func(s string) { u64(uint64(len(s))); b.WriteString(s) }
	b.WriteString("GGUF")
	u32(3) // version
	u64(1) // tensors
	u64(2) // metadata entries
	str("general.architecture")
	u32(8) // string
	str("llama")
	str("llama.block_count")
	u32(4) // uint32
	u32(1)
	str("token_embd.weight")
	u32(2)                // dims
	u64(4)                // ne0
	u64(8)                // ne1
	u32(0)                // F32
	u64(0)                // offset in the data section
	for b.Len()%32 != 0 { // default alignment
		b.WriteByte(0)
	}
	b.Write(make([]byte, 4*8*4))
	data := b.Bytes()
	// It must be a valid GGUF, or this case would only repeat "damaged".
	if _, err := gguf.Parse(data); err != nil {
		t.Fatalf("the foreign GGUF does not parse: %v", err)
	}
	return data
}

func TestBadModelFilesExitWithOneLine(t *testing.T) {
	dir := t.TempDir()
	good, err := os.ReadFile(deployedModel(t))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(6, 6)) // fixed bytes: the expected messages must not vary
	random := make([]byte, 64<<10)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	files := map[string][]byte{
		"truncated.gguf":    good[:len(good)/2],
		"random.gguf":       random,
		"random-magic.gguf": append([]byte("GGUF"), random...),
		"empty.gguf":        {},
		"llama.gguf":        foreignGGUF(t),
		"random.pt":         random,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct{ file, problem string }{
		{"missing.gguf", "no such file"},
		{"truncated.gguf", "runs past the end of the file"},
		{"random.gguf", "not a GGUF file"},
		{"random-magic.gguf", "is not supported"},
		{"empty.gguf", "not a GGUF file"},
		{"llama.gguf", `general.architecture is "llama", want "nielsgpt"`},
		{"random.pt", "not a PyTorch checkpoint"},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(dir, tc.file)
			code, out, elapsed, err := harness.RunToExit(harness.Spec{Exe: testkit.Binary(t), Model: path,
				Env: []string{"CKPT_DIR=" + t.TempDir(), "HF_HUB_OFFLINE=1"}}, 30*time.Second)
			if err != nil {
				t.Fatalf("%v; output:\n%s", err, out)
			}
			if code <= 0 {
				t.Fatalf("exit code %d, want a non-zero exit; output:\n%s", code, out)
			}
			// The start is quick when it fails: nothing is downloaded or
			// converted for a bad file.
			if elapsed > 10*time.Second {
				t.Errorf("took %s to give up", elapsed)
			}
			for _, bad := range []string{"panic", "goroutine ", "SIGABRT", "GGML_ASSERT", "core dumped"} {
				if strings.Contains(out, bad) {
					t.Errorf("output contains %q:\n%s", bad, out)
				}
			}
			lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
			last := lines[len(lines)-1]
			if !strings.HasPrefix(last, "nielsgpt serve: ") || !strings.Contains(last, path) || !strings.Contains(last, tc.problem) {
				t.Fatalf("last line %q does not name the file and %q; output:\n%s", last, tc.problem, out)
			}
			// Nothing after the message, and the message is the only
			// non-log line: one line says what went wrong.
			for _, l := range lines[:len(lines)-1] {
				if !strings.HasPrefix(l, "{") {
					t.Errorf("stray output line %q", l)
				}
			}
			if strings.Contains(out, `"msg":"model ready"`) {
				t.Fatal("a bad model was reported ready")
			}
			t.Log(last)
		})
	}
}
