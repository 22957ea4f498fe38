//go:build backendmodules

package engine

// The whole engine suite, PyTorch goldens included, on a backend loaded as a
// module from a CMake build (docs/ARCHITECTURE.md §7) instead of the CPU
// backend compiled into this binary, as `nielsgpt serve --backend-dir` runs.
// CTest runs it (go_engine_cpu_module in the default preset, part of
// `make test-c`; go_engine_cuda_module in the cuda preset):
//
//	NIELSGPT_BACKEND_DIR=build/default/backends go test -tags backendmodules ./engine
//	NIELSGPT_BACKEND_DIR=build/cuda/backends NIELSGPT_TEST_DEVICE=cuda go test -tags backendmodules ./engine
//
// Without the modules it fails; it never skips.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"nielsgpt/internal/testkit"
)

func TestMain(m *testing.M) {
	if err := loadTestModules(os.Getenv("NIELSGPT_BACKEND_DIR")); err != nil {
		fmt.Fprintln(os.Stderr, "engine tests with backend modules:", err)
		os.Exit(1)
	}
	if device := os.Getenv("NIELSGPT_TEST_DEVICE"); device != "" {
		fixtureOptions.Device = device
	}
	testkit.Main(m)
}

// loadTestModules loads the modules before any test loads a model, so every
// model in this process runs on a module's backend.
func loadTestModules(dir string) error {
	if dir == "" {
		return fmt.Errorf("NIELSGPT_BACKEND_DIR is not set: it names the folder of ggml modules a CMake build " +
			"wrote (cmake --preset default && cmake --build --preset default: build/default/backends)")
	}
	modules, _ := filepath.Glob(filepath.Join(dir, "libggml-*.so"))
	if len(modules) == 0 {
		return fmt.Errorf("%s holds no ggml modules (libggml-*.so): build them first "+
			"(cmake --preset default && cmake --build --preset default)", dir)
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	return loadBackends(dir)
}

// The backend that ran the goldens is the module's: the best CPU variant for
// this machine, or the device NIELSGPT_TEST_DEVICE names.
func TestModuleRuns(t *testing.T) {
	m, _ := loadFixture(t, "tiny_a")
	t.Logf("backend %s", m.Backend())
	want := "(libggml-" + fixtureOptions.Device // "CPU (libggml-cpu-icelake.so)", "CUDA0 (libggml-cuda.so)"
	if fixtureOptions.Device == "" {
		want = "CPU (libggml-cpu"
	}
	if !strings.Contains(m.Backend(), want) {
		t.Fatalf("backend %q, want %q: the module from NIELSGPT_BACKEND_DIR should run, not a built-in backend",
			m.Backend(), want)
	}
}
