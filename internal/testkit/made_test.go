package testkit

import (
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"nielsgpt/gguf"
)

// Concurrent callers of one key share one build and its result; another
// key gets its own build in its own folder.
func TestMakeOnceBuildsOncePerKey(t *testing.T) {
	var builds atomic.Int32
	build := func(dir string) (string, error) {
		builds.Add(1)
		return dir, nil
	}
	var wg sync.WaitGroup
	paths := make([]string, 8)
	for i := range paths {
		wg.Go(func() { paths[i], _ = makeOnce(t.Name()+" a", build) })
	}
	wg.Wait()
	other, _ := makeOnce(t.Name()+" b", build)
	if builds.Load() != 2 {
		t.Fatalf("%d builds for two keys", builds.Load())
	}
	for _, p := range paths {
		if p != paths[0] {
			t.Fatalf("callers of one key got different results: %q", paths)
		}
	}
	if other == paths[0] || filepath.Dir(other) != filepath.Dir(paths[0]) {
		t.Fatalf("folders %q and %q: want two folders side by side", other, paths[0])
	}

	// A failure is remembered too: the build is not retried per test.
	boom := errors.New("boom")
	for range 2 {
		if _, err := makeOnce(t.Name()+" c", func(string) (string, error) { builds.Add(1); return "", boom }); err != boom {
			t.Fatalf("got %v", err)
		}
	}
	if builds.Load() != 3 {
		t.Fatalf("a failed build ran %d times", builds.Load()-2)
	}
}

func TestConvertedFixture(t *testing.T) {
	pt := filepath.Join("..", "..", "testdata", "models", "tiny_a.pt")
	path := ConvertedFixture(t, pt)
	if again := ConvertedFixture(t, pt); again != path {
		t.Fatalf("converted twice: %s and %s", path, again)
	}
	_, g, err := gguf.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err := g.ModelConfig(); err != nil || cfg.Vocab != 256 {
		t.Fatalf("config %+v, %v", cfg, err)
	}

	msg := runFailing(func(tb testing.TB) { ConvertedFixture(tb, "no-such-fixture.pt") })
	if !strings.Contains(msg, "no-such-fixture.pt is missing") || !strings.Contains(msg, "make fixtures") {
		t.Fatalf("message %q", msg)
	}
}
