package modelsource

// The model side of the configuration: which model, on which device, and
// where a checkpoint comes from when none is named. `nielsgpt serve` parses
// these rows together with the server's; `nielsgpt chat` reads them from the
// environment and lets its own flags override a few. docs/API.md lists them
// for users.

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"strings"

	"nielsgpt/hub"
	"nielsgpt/internal/settings"
)

// Config says which model to open and how to run it.
type Config struct {
	// Model names the model: a .gguf path, a .pt path, "demo", or "" for
	// the checkpoint in CKPT_DIR, downloaded from the Hub when missing.
	Model string
	// Tokenizer names a generation-2 .pt checkpoint's spm.model; "" means the spm.model
	// beside the checkpoint. A .gguf carries its own vocabulary.
	Tokenizer string
	Device    string
	// BackendDir is a folder of ggml backend modules built with CMake
	// (CPU variants, CUDA), loaded at start; "" keeps the CPU backend built
	// into the binary.
	BackendDir string
	Threads    int // 0: the engine default (one per core; decode steps use one)
	// Baseline runs the original service's algorithm (no KV cache, one
	// request at a time), so `nielsgpt bench` can measure both.
	Baseline bool
	// KVCacheMB bounds the engine's KV pool; 0 sizes it for KVWindows full
	// windows of the model.
	KVCacheMB int
	// KVHalf is KV_CACHE_TYPE=f16: half-precision keys and values, half the
	// pool's memory, not exact (f32, the default, is).
	KVHalf bool
	// KVWindows is not a setting: serve fills it with MAX_CONCURRENT, so a
	// default pool never holds back a request the concurrency cap admitted.
	// 0 leaves the engine's default.
	KVWindows int

	// Hub holds CKPT_REPO_ID, CKPT_FILENAME, CKPT_DIR, HF_TOKEN, HF_ENDPOINT
	// and HF_HUB_OFFLINE. Progress and Client are left to the caller.
	Hub hub.Options
}

// Settings are the rows of the model settings, each filling its field of c.
func Settings(c *Config) []settings.Row {
	return []settings.Row{
		{Env: "MODEL", Flag: "model", Default: "", Usage: `model to serve: a .gguf file, a .pt checkpoint (converted once, cached beside it), "demo" (embedded), or empty for CKPT_DIR/CKPT_FILENAME, else the Hub`, Apply: func(v string) error {
			c.Model = v
			return nil
		}},
		{Env: "TOKENIZER", Flag: "tokenizer", Default: "", Usage: "SentencePiece tokenizer (spm.model) of a generation-2 .pt checkpoint (default: spm.model beside the checkpoint); its sha256 must be the one the checkpoint records", Apply: func(v string) error {
			c.Tokenizer = v
			return nil
		}},
		{Env: "DEVICE", Flag: "device", Default: defaultDevice(), Usage: "compute device: cpu, cuda (a module in BACKEND_DIR), metal/mps where built, or gpu (the first GPU)", Apply: settings.NonEmpty(&c.Device)},
		{Env: "BACKEND_DIR", Flag: "backend-dir", Default: "", Usage: "folder of ggml backend modules built with CMake, loaded at start: the best CPU variant for this machine, CUDA; empty: the CPU backend built into the binary", Apply: func(v string) error {
			if v != "" {
				info, err := os.Stat(v)
				if err != nil {
					return describeFileError(err)
				}
				if !info.IsDir() {
					return errors.New("not a folder")
				}
			}
			c.BackendDir = v
			return nil
		}},
		{Env: "THREADS", Flag: "threads", Default: "0", Usage: "the most CPU threads an engine step uses (0: one per core; decode steps use one)", Apply: settings.Int(&c.Threads, 0, 1024)},
		{Env: "KV_CACHE_MB", Flag: "kv-cache-mb", Default: "0", Usage: "memory for the KV caches of all streams, in MiB (0: enough for MAX_CONCURRENT full windows)", Apply: settings.Int(&c.KVCacheMB, 0, 1<<24)},
		{Env: "KV_CACHE_TYPE", Flag: "kv-cache-type", Default: "f32", Usage: "how the KV caches store keys and values: f32 (exact) or f16 (half the memory, rounded; docs/BENCHMARKS.md)", Apply: func(v string) error {
			switch v {
			case "f32", "f16":
				c.KVHalf = v == "f16"
				return nil
			}
			return fmt.Errorf("%q is not f32 or f16", v)
		}},
		{Env: "BASELINE", Flag: "baseline", Default: "0", Switch: true, Usage: "run the original algorithm: whole window per token, one request at a time (for benchmarks)", Apply: settings.Bool(&c.Baseline)},
		{Env: "CKPT_REPO_ID", Flag: "ckpt-repo-id", Default: hub.DefaultRepoID, Usage: "Hugging Face Hub model repository", Apply: settings.NonEmpty(&c.Hub.RepoID)},
		{Env: "CKPT_FILENAME", Flag: "ckpt-filename", Default: hub.DefaultFilename, Usage: "checkpoint file name in the repository and in CKPT_DIR", Apply: func(v string) error {
			if v == "" || strings.ContainsAny(v, `/\`) || v == "." || v == ".." {
				return errors.New("must be a plain file name")
			}
			c.Hub.Filename = v
			return nil
		}},
		{Env: "CKPT_DIR", Flag: "ckpt-dir", Default: hub.DefaultDir, Usage: "directory holding (or receiving) the checkpoint", Apply: settings.NonEmpty(&c.Hub.Dir)},
		{Env: "HF_ENDPOINT", Default: hub.DefaultEndpoint, Apply: func(v string) error {
			if v == "" { // huggingface_hub reads an empty HF_ENDPOINT as unset
				v = hub.DefaultEndpoint
			}
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				return errors.New("must be an http(s) URL")
			}
			c.Hub.Endpoint = strings.TrimRight(v, "/")
			return nil
		}},
		{Env: "HF_TOKEN", Secret: true, Apply: func(v string) error {
			c.Hub.Token = strings.TrimSpace(v)
			return nil
		}},
		{Env: "HF_HUB_OFFLINE", Flag: "offline", Default: "0", Switch: true, Usage: "never use the network for the model (1/true/yes/on)", Apply: settings.Bool(&c.Hub.Offline)},
	}
}

// defaultDevice is the CPU, except on Apple Silicon, where ggml's Metal
// backend is built in and faster.
func defaultDevice() string {
	if runtime.GOOS == "darwin" && runtime.GOARCH == "arm64" {
		return "metal"
	}
	return "cpu"
}

// DefaultConfig is the configuration with no environment and no flags.
func DefaultConfig() Config {
	var c Config
	if err := settings.Defaults(Settings(&c)); err != nil {
		panic("modelsource: built-in defaults are invalid: " + err.Error()) // a bug in the table above
	}
	return c
}

// FromEnv reads the model settings from the environment alone, through
// lookupEnv (usually os.LookupEnv), for commands that have flags of their
// own for the few settings they expose.
func FromEnv(lookupEnv func(string) (string, bool)) (Config, error) {
	var c Config
	if err := settings.FromEnv(lookupEnv, Settings(&c)); err != nil {
		return Config{}, err
	}
	return c, nil
}
