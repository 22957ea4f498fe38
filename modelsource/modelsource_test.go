package modelsource

// Model source resolution: .gguf as is, .pt converted once
// and cached while its sha256 matches, the embedded demo, and the Hub
// (against a local fake) when nothing is named; every failure names its
// cause and the offline alternative.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nielsgpt/gguf"
	"nielsgpt/internal/testkit"
)

const fixturePT = "../convert/testdata/tiny_f32.pt"

func TestMain(m *testing.M) { testkit.Main(m) }

// copyFixture copies a checkpoint fixture into dir under name.
func copyFixture(t *testing.T, src, dir, name string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func configWithModel(model string) Config {
	c := DefaultConfig()
	c.Model = model
	return c
}

func sourceSHA(t *testing.T, ggufPath string) string {
	t.Helper()
	_, g, err := gguf.ReadFile(ggufPath)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := g.SourceSHA256()
	return s
}

func sha256Hex(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func TestResolveGGUFAndErrors(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	gguf := filepath.Join(dir, "m.gguf")
	if err := os.WriteFile(gguf, []byte("GGUF"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec, err := Resolve(ctx, configWithModel(gguf), Options{})
	if err != nil || spec.Path != gguf || spec.Data != nil {
		t.Fatalf("gguf: %+v %v", spec, err)
	}
	for model, want := range map[string]string{
		filepath.Join(dir, "missing.gguf"):                                "no such file",
		filepath.Join(dir, "missing.pt"):                                  "no such file",
		copyFixture(t, fixturePT, dir, "weights.safetensors"):             "not a model file this server reads",
		copyFixture(t, "../convert/testdata/bad_shape.pt", dir, "bad.pt"): "converting",
	} {
		if _, err := Resolve(ctx, configWithModel(model), Options{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", model, err, want)
		}
	}
}

func TestResolveDemo(t *testing.T) {
	demo := []byte("GGUF demo bytes")
	spec, err := Resolve(context.Background(), configWithModel("demo"), Options{Demo: func() []byte { return demo }})
	if err != nil || !bytes.Equal(spec.Data, demo) {
		t.Fatalf("demo: %+v %v", spec, err)
	}
	if _, err := Resolve(context.Background(), configWithModel("demo"), Options{}); err == nil || !strings.Contains(err.Error(), "no embedded demo model") {
		t.Fatalf("demo without one: %v", err)
	}
}

// A .pt is converted once to X.gguf beside it; the conversion is reused while
// it records the checkpoint's sha256, and redone when the checkpoint changes.
func TestResolvePTCache(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	ctx := context.Background()
	pt := copyFixture(t, fixturePT, dir, "best.pt")
	gguf := filepath.Join(dir, "best.gguf")

	spec, err := Resolve(ctx, configWithModel(pt), Options{})
	if err != nil || spec.Path != gguf {
		t.Fatalf("first resolve: %+v %v", spec, err)
	}
	if sourceSHA(t, gguf) != sha256Hex(t, pt) {
		t.Fatal("the conversion does not record the checkpoint's sha256")
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(gguf, old, old); err != nil {
		t.Fatal(err)
	}

	spec, err = Resolve(ctx, configWithModel(pt), Options{})
	if err != nil || spec.Path != gguf || spec.Data == nil {
		t.Fatalf("second resolve: %+v %v", spec, err)
	}
	if info, _ := os.Stat(gguf); !info.ModTime().Equal(old) {
		t.Fatal("a valid cached conversion was rewritten")
	}

	// A different checkpoint under the same name: converted again.
	copyFixture(t, "../convert/testdata/tiny_f16.pt", dir, "best.pt")
	if _, err := Resolve(ctx, configWithModel(pt), Options{}); err != nil {
		t.Fatal(err)
	}
	if sourceSHA(t, gguf) != sha256Hex(t, pt) {
		t.Fatal("a stale conversion was reused")
	}

	// A readable GGUF that is not a conversion of ours, or a file that is not
	// a GGUF at all, is never overwritten: the conversion goes to the user
	// cache instead, named by the checkpoint's sha256. A damaged GGUF (our
	// interrupted or corrupted cache) is rebuilt in place.
	emptyGGUF := []byte("GGUF")
	emptyGGUF = binary.LittleEndian.AppendUint32(emptyGGUF, 3) // version
	emptyGGUF = binary.LittleEndian.AppendUint64(emptyGGUF, 0) // tensors
	emptyGGUF = binary.LittleEndian.AppendUint64(emptyGGUF, 0) // metadata pairs
	for _, tc := range []struct {
		name    string
		content []byte
		inPlace bool
	}{
		{"foreign-gguf", emptyGGUF, false},
		{"not-gguf", []byte("some notes, not a model"), false},
		{"damaged-gguf", []byte("GGUF\x03\x00\x00\x00truncated"), true},
	} {
		pt := copyFixture(t, fixturePT, dir, tc.name+".pt")
		beside := filepath.Join(dir, tc.name+".gguf")
		if err := os.WriteFile(beside, tc.content, 0o644); err != nil {
			t.Fatal(err)
		}
		spec, err := Resolve(ctx, configWithModel(pt), Options{})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got, _ := os.ReadFile(beside)
		if tc.inPlace {
			if spec.Path != beside || sourceSHA(t, beside) != sha256Hex(t, pt) {
				t.Fatalf("%s: not rebuilt in place (%s)", tc.name, spec.Path)
			}
			continue
		}
		if !bytes.Equal(got, tc.content) {
			t.Fatalf("%s: overwritten", tc.name)
		}
		want := filepath.Join(dir, "cache", "nielsgpt", sha256Hex(t, pt)+".gguf")
		if spec.Path != want || sourceSHA(t, want) != sha256Hex(t, pt) {
			t.Fatalf("%s: converted to %s, want %s", tc.name, spec.Path, want)
		}
	}
}

func hubConfig(endpoint, dir string) Config {
	c := DefaultConfig()
	c.Hub.Endpoint = endpoint
	c.Hub.RepoID = "someone/niels-gpt"
	c.Hub.Filename = "best.pt"
	c.Hub.Dir = dir
	c.Hub.Token = "hf_test_token"
	return c
}

// With no model named, the checkpoint is downloaded from the Hub into
// CKPT_DIR, converted, and on the next start used without the network.
func TestResolveFromHub(t *testing.T) {
	pt, err := os.ReadFile(fixturePT)
	if err != nil {
		t.Fatal(err)
	}
	hub := testkit.NewFakeHub(t)
	hub.Add("someone/niels-gpt", "best.pt", pt)
	dir := filepath.Join(t.TempDir(), "checkpoints")
	cfg := hubConfig(hub.URL, dir)

	spec, err := Resolve(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if spec.Path != filepath.Join(dir, "best.gguf") || sourceSHA(t, spec.Path) != sha256Hex(t, fixturePT) {
		t.Fatalf("resolved %+v", spec)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "best.pt")); !bytes.Equal(got, pt) {
		t.Fatal("CKPT_DIR/CKPT_FILENAME does not hold the checkpoint")
	}
	asked, _ := hub.Requests()
	for _, r := range asked {
		if r.Auth != "Bearer hf_test_token" {
			t.Fatalf("the Hub got Authorization %q on %s", r.Auth, r.Method)
		}
	}
	if !strings.Contains(spec.Source, "someone/niels-gpt/best.pt") || strings.Contains(spec.Source, "hf_test_token") {
		t.Fatalf("source %q", spec.Source)
	}

	// Second start: the file is present, the Hub is not asked, even offline.
	cfg.Hub.Offline = true
	if _, err := Resolve(context.Background(), cfg, Options{}); err != nil {
		t.Fatal(err)
	}
	if again, _ := hub.Requests(); len(again) != len(asked) {
		t.Fatal("the Hub was asked again for a checkpoint already in CKPT_DIR")
	}
}

// A Hub failure ends the start with the cause and the offline alternative,
// and never with some other model.
func TestResolveFromHubFails(t *testing.T) {
	hub := testkit.NewFakeHub(t)
	for name, cfg := range map[string]Config{
		"missing on the Hub": hubConfig(hub.URL, t.TempDir()),
		"offline":            func() Config { c := hubConfig(hub.URL, t.TempDir()); c.Hub.Offline = true; return c }(),
	} {
		spec, err := Resolve(context.Background(), cfg, Options{Demo: func() []byte { return []byte("GGUF") }})
		if err == nil || spec != nil {
			t.Fatalf("%s: resolved %+v", name, spec)
		}
		msg := err.Error()
		t.Logf("%s: %s", name, msg)
		if !strings.Contains(msg, "--model demo") || !strings.Contains(msg, "best.pt") || strings.Contains(msg, "hf_test_token") {
			t.Errorf("%s: message %q should name the file and --model demo, never the token", name, msg)
		}
	}
}

// A model file that is missing, truncated or not a niels-gpt GGUF is refused
// by Load with a message naming the file; it never reaches ggml's asserts
// (which would abort the process).
func TestLoadRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	good := testkit.ConvertedFixture(t, fixturePT)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	empty := []byte("GGUF")
	empty = binary.LittleEndian.AppendUint32(empty, 3)
	empty = binary.LittleEndian.AppendUint64(empty, 0)
	empty = binary.LittleEndian.AppendUint64(empty, 0)
	files := map[string][]byte{
		"truncated.gguf": data[:len(data)/2],
		"header.gguf":    data[:10],
		"not-ours.gguf":  empty,
		"text.gguf":      []byte("hello"),
		"flipped.gguf":   append(append([]byte{}, data[:8]...), append([]byte{0xff, 0xff, 0xff, 0x7f}, data[12:]...)...),
	}
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
		model, _, err := Load(context.Background(), configWithModel(path), Options{})
		if err == nil {
			model.Close()
			t.Errorf("%s: loaded", name)
			continue
		}
		if !strings.Contains(err.Error(), name) {
			t.Errorf("%s: message %q does not name the file", name, err)
		}
	}
	model, source, err := Load(context.Background(), configWithModel(good), Options{})
	if err != nil {
		t.Fatalf("the intact file: %v", err)
	}
	model.Close()
	if source != good {
		t.Fatalf("source %q, want %q", source, good)
	}
}
