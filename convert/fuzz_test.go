// Fuzz targets for the two parsers that read untrusted files: the checkpoint reader
// and the GGUF reader. Their seed corpora live in testdata/fuzz/<FuzzName>/ (real small
// files, broken ones, and every crasher found so far). The checkpoint seeds come from
// scripts/make_ckpt_variants.py; the GGUF seeds are written by
//
//	go test -run TestWriteGGUFSeeds ./convert/ -args -write-gguf-seeds
package convert

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

var writeGGUFSeeds = flag.Bool("write-gguf-seeds", false, "rewrite testdata/fuzz/FuzzParseGGUF seeds")

func FuzzReadCheckpoint(f *testing.F) {
	tensors := handTensors()
	f.Add(zipCheckpoint(f, checkpointPickle(tinyCfg, tensors, false), storagesFor(tensors)))
	f.Add(legacyCheckpoint(checkpointPickle(tinyCfg, tensors, true), distinctKeys(tensors), storagesFor(tensors), 4))
	f.Fuzz(func(t *testing.T, data []byte) {
		// The fuzzer reports crashes but not hangs; a panic from the watchdog turns a
		// hang into a crasher, saved with its input.
		watchdog := time.AfterFunc(10*time.Second, func() { panic("ReadCheckpointBytes hung for 10s") })
		defer watchdog.Stop()
		ck, err := ReadCheckpointBytes(data)
		if err != nil {
			return
		}
		for name, tt := range ck.Tensors {
			if len(tt.Data) != numelOf(tt.Shape) {
				t.Fatalf("%s: %d values for shape %v", name, len(tt.Data), tt.Shape)
			}
		}
		if ck.Validate() != nil {
			return
		}
		// Whatever validates must convert, and the result must pass the strict reader.
		var buf bytes.Buffer
		if err := WriteGGUF(&buf, ck, testSHA, ConvertOptions{}); err != nil {
			t.Fatalf("valid checkpoint not written: %v", err)
		}
		g, err := ParseGGUF(buf.Bytes())
		if err != nil {
			t.Fatalf("written GGUF does not parse: %v", err)
		}
		if _, err := g.NielsGPTConfig(); err != nil {
			t.Fatalf("written GGUF refused: %v", err)
		}
	})
}

func FuzzParseGGUF(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := ParseGGUF(data)
		if err != nil {
			return
		}
		for _, tt := range g.Tensors {
			if tt.Offset < 0 || tt.Size < 0 || tt.Offset+tt.Size > int64(len(data)) || tt.Offset%int64(g.Alignment) != 0 {
				t.Fatalf("tensor %s at %d+%d escapes a file of %d bytes", tt.Name, tt.Offset, tt.Size, len(data))
			}
		}
		_, _ = g.NielsGPTConfig()
	})
}

// TestWriteGGUFSeeds regenerates the FuzzParseGGUF seed files (only with the flag).
func TestWriteGGUFSeeds(t *testing.T) {
	if !*writeGGUFSeeds {
		t.Skip("pass -args -write-gguf-seeds to rewrite the seeds")
	}
	tensors := handTensors()
	ck, err := ReadCheckpointBytes(zipCheckpoint(t, checkpointPickle(tinyCfg, tensors, false), storagesFor(tensors)))
	if err != nil {
		t.Fatal(err)
	}
	seeds := map[string][]byte{}
	for name, opts := range map[string]ConvertOptions{"tiny_f32": {}, "tiny_f16": {F16: true}} {
		var buf bytes.Buffer
		if err := WriteGGUF(&buf, ck, testSHA, opts); err != nil {
			t.Fatal(err)
		}
		seeds[name] = buf.Bytes()
	}
	seeds["header_only"] = seeds["tiny_f32"][:24]
	seeds["kv_types"] = rawGGUF(t, []ggufKV{{"u8", uint8(1)}, {"s", "x"}, {"as", []string{"a", "b"}}, {"f64", 1.5}, {"b", true}}, nil)
	dir := filepath.Join("testdata", "fuzz", "FuzzParseGGUF")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(data)))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
