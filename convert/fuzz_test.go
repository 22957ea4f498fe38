// Fuzzing the checkpoint reader, which reads untrusted files. Its seed corpus lives in
// testdata/fuzz/FuzzReadCheckpoint/ (real small files, broken ones, and every crasher
// found so far); the seeds come from scripts/make_ckpt_variants.py. The GGUF reader's
// fuzz target is in package gguf.
package convert

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"nielsgpt/gguf"
)

func FuzzReadCheckpoint(f *testing.F) {
	tensors := handTensors()
	f.Add(zipCheckpoint(f, checkpointPickle(tinyCfg, tensors, false), storagesFor(tensors)))
	f.Add(legacyCheckpoint(checkpointPickle(tinyCfg, tensors, true), distinctKeys(tensors), storagesFor(tensors), 4))
	// Generation 2, with the train_cfg that records its tokenizer's sha256.
	f.Add(gen2Checkpoint(f, func(p *pickleBuilder) { p.str(strings.Repeat("0a", 32)) }))
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
		if err := WriteGGUF(&buf, ck, testSHA, Options{}); err != nil {
			t.Fatalf("valid checkpoint not written: %v", err)
		}
		g, err := gguf.Parse(buf.Bytes())
		if err != nil {
			t.Fatalf("written GGUF does not parse: %v", err)
		}
		if _, err := g.ModelConfig(); err != nil {
			t.Fatalf("written GGUF refused: %v", err)
		}
	})
}
