package engine

// Choosing the backend: the built-in CPU backend by default, and clear
// refusals when BACKEND_DIR or DEVICE ask for what is not there. The modules
// themselves are tested in modules_test.go, which needs a CMake build.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBackendChoice(t *testing.T) {
	m, _ := loadFixture(t, "tiny_a")
	// (modules_test.go runs this suite with a CPU module loaded instead)
	if m.Backend() != "CPU" && os.Getenv("NIELSGPT_BACKEND_DIR") == "" {
		t.Fatalf("backend %q, want the built-in CPU", m.Backend())
	}

	data := tinyGGUF(t, false)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		opts Options
		want string
	}{
		{Options{BackendDir: filepath.Join(t.TempDir(), "missing")}, "No such file"},
		{Options{BackendDir: file}, "not a folder"},
		{Options{BackendDir: t.TempDir()}, "no ggml backend module there loads"},
		{Options{Device: "cuda"}, "BACKEND_DIR"},
		{Options{Device: "tpu"}, "unknown device tpu"},
	}
	for _, tc := range cases {
		tc.opts.Threads = 1
		m, err := LoadBytes(data, tc.opts)
		if err == nil {
			m.Close()
			t.Errorf("%+v: loaded", tc.opts)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %q, want it to mention %q", tc.opts, err, tc.want)
		}
	}
}
