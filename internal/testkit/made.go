package testkit

// Test inputs that are slow to make (a converted checkpoint, a model with
// random weights, the nielsgpt binary) are made once per test binary, on
// first use, and shared by every test that asks: a package's tests convert
// tiny_a.pt once, not once per test. They live in one temporary folder,
// which Main removes when the tests are done.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"nielsgpt/convert"
	"nielsgpt/gguf"
	"nielsgpt/internal/harness"
)

// made is the one made file of a key, or the error that making it gave.
type made struct {
	once sync.Once
	path string
	err  error
}

var kit struct {
	mu   sync.Mutex
	dir  string           // the temporary folder of this process; "" until first use
	made map[string]*made // by key
}

// makeOnce returns the file that build writes for key, building it the
// first time this process asks. Callers with the same key wait for that one
// build and share its result, failure included (a fixture that does not
// convert fails every test that uses it, with the same message). build gets
// a fresh folder of its own, so file names never clash between keys.
func makeOnce(key string, build func(dir string) (string, error)) (string, error) {
	kit.mu.Lock()
	if kit.made == nil {
		kit.made = map[string]*made{}
	}
	m, ok := kit.made[key]
	if !ok {
		m = &made{}
		kit.made[key] = m
	}
	kit.mu.Unlock()
	m.once.Do(func() {
		dir, err := entryDir()
		if err != nil {
			m.err = err
			return
		}
		m.path, m.err = build(dir)
	})
	return m.path, m.err
}

// entryDir makes a new folder inside the process's temporary folder,
// creating that on first use.
func entryDir() (string, error) {
	kit.mu.Lock()
	defer kit.mu.Unlock()
	if kit.dir == "" {
		dir, err := os.MkdirTemp("", "nielsgpt-testkit-")
		if err != nil {
			return "", err
		}
		kit.dir = dir
	}
	return os.MkdirTemp(kit.dir, "")
}

// Main runs a package's tests, then removes what testkit made for them, and
// exits with the tests' status. A package whose tests use ConvertedFixture,
// SyntheticModel or Binary calls it from its TestMain; without it the files
// stay in the system's temporary folder.
func Main(m *testing.M) {
	code := m.Run()
	kit.mu.Lock()
	if kit.dir != "" {
		_ = os.RemoveAll(kit.dir)
	}
	kit.mu.Unlock()
	os.Exit(code)
}

// ConvertedFixture converts the PyTorch checkpoint ptPath to GGUF with the
// real converter (default options), once per test binary, and returns the
// GGUF's path. The file is shared: read it, do not change it.
func ConvertedFixture(t testing.TB, ptPath string) string {
	t.Helper()
	return convertedFixture(t, ptPath, convert.Options{})
}

// ConvertedGen2Fixture is ConvertedFixture for a generation-2 checkpoint,
// with the SentencePiece model spmPath as its tokenizer.
func ConvertedGen2Fixture(t testing.TB, ptPath, spmPath string) string {
	t.Helper()
	abs, err := filepath.Abs(spmPath)
	if err != nil {
		t.Fatal(err)
	}
	return convertedFixture(t, ptPath, convert.Options{Tokenizer: abs})
}

func convertedFixture(t testing.TB, ptPath string, opts convert.Options) string {
	t.Helper()
	abs, err := filepath.Abs(ptPath)
	if err != nil {
		t.Fatal(err)
	}
	path, err := makeOnce(fmt.Sprintf("convert %s %+v", abs, opts), func(dir string) (string, error) {
		if _, err := os.Stat(abs); errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("fixture %s is missing (`make fixtures` writes it): %w", ptPath, err)
		}
		out := filepath.Join(dir, strings.TrimSuffix(filepath.Base(abs), filepath.Ext(abs))+".gguf")
		if _, err := convert.ToGGUF(abs, out, opts); err != nil {
			return "", fmt.Errorf("converting %s: %w", ptPath, err)
		}
		return out, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// SyntheticModel is WriteSyntheticModel for tests: the model of shape cfg
// and seed is written once per test binary and shared (read it, do not
// change it).
func SyntheticModel(t testing.TB, cfg gguf.ModelConfig, seed uint64) string {
	t.Helper()
	path, err := makeOnce(fmt.Sprintf("synthetic %+v %d", cfg, seed), func(dir string) (string, error) {
		return harness.WriteSyntheticModel(dir, cfg, seed)
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}
