package main

// chat reads the model settings from the environment (modelsource's table)
// and nothing else of serve's.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunChatModelEnvironment(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "from-env.gguf")
	t.Setenv("MODEL", missing)
	// A server-only setting, however wrong, does not concern a chat.
	t.Setenv("API_PORT", "not a port")
	if err := runChat(nil); err == nil || !strings.Contains(err.Error(), "from-env.gguf: no such file") {
		t.Fatalf("MODEL from the environment: %v", err)
	}
	t.Setenv("THREADS", "lots")
	if err := runChat(nil); err == nil || !strings.Contains(err.Error(), `THREADS: invalid value "lots"`) {
		t.Fatalf("bad THREADS: %v", err)
	}
	// Chat's own flag wins over the variable it shadows.
	os.Unsetenv("THREADS")
	if err := runChat([]string{"--model", filepath.Join(t.TempDir(), "flag.pt")}); err == nil || !strings.Contains(err.Error(), "flag.pt: no such file") {
		t.Fatalf("--model over MODEL: %v", err)
	}
}
