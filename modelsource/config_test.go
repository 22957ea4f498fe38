package modelsource

// The model settings: defaults, environment, flags over environment, a clear
// refusal of every bad value, and no flag for the token.

import (
	"flag"
	"io"
	"regexp"
	"strings"
	"testing"

	"nielsgpt/internal/settings"
	"nielsgpt/internal/testkit"
)

// parseFlags parses the model rows alone, as a command with only these
// settings would; usage goes to usageOut.
func parseFlags(args []string, env map[string]string, usageOut io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("nielsgpt serve", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	err := settings.Parse(fs, args, testkit.EnvLookup(env), Settings(&c))
	return c, err
}

func TestConfigDefaults(t *testing.T) {
	c := DefaultConfig()
	if c.Model != "" || c.Threads != 0 || c.Baseline ||
		c.Hub.RepoID != "nnandal/niels-gpt" || c.Hub.Filename != "best.pt" || c.Hub.Dir != "./checkpoints" ||
		c.Hub.Endpoint != "https://huggingface.co" || c.Hub.Token != "" || c.Hub.Offline {
		t.Fatalf("defaults %+v", c)
	}
	if c.Device == "" {
		t.Fatal("no default device")
	}
	if c.BackendDir != "" {
		t.Fatalf("BACKEND_DIR defaults to %q, want empty (the built-in CPU backend)", c.BackendDir)
	}
}

// BACKEND_DIR from the environment, and --backend-dir over it.
func TestConfigBackendDir(t *testing.T) {
	envDir, flagDir := t.TempDir(), t.TempDir()
	c, err := parseFlags(nil, map[string]string{"BACKEND_DIR": envDir}, io.Discard)
	if err != nil || c.BackendDir != envDir {
		t.Fatalf("from the environment: %q %v", c.BackendDir, err)
	}
	c, err = parseFlags([]string{"--backend-dir", flagDir}, map[string]string{"BACKEND_DIR": envDir}, io.Discard)
	if err != nil || c.BackendDir != flagDir {
		t.Fatalf("flag over the environment: %q %v", c.BackendDir, err)
	}
}

func TestConfigEnvAndFlags(t *testing.T) {
	env := map[string]string{
		"MODEL": "env.gguf", "HF_TOKEN": " hf_abc\n", "HF_HUB_OFFLINE": "1", "CKPT_DIR": "/tmp/ck",
		"CKPT_REPO_ID": "me/model", "CKPT_FILENAME": "m.pt", "THREADS": "2", "DEVICE": "gpu",
		"HF_ENDPOINT": "http://hub.local:8080/", "KV_CACHE_MB": "48", "KV_CACHE_TYPE": "f16",
	}
	c, err := parseFlags([]string{"--model", "demo", "--baseline", "--device=cpu", "--kv-cache-mb", "96"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Model != "demo" || c.Device != "cpu" || c.Threads != 2 || !c.Baseline || c.KVCacheMB != 96 || !c.KVHalf ||
		c.Hub.Token != "hf_abc" || !c.Hub.Offline || c.Hub.Dir != "/tmp/ck" || c.Hub.RepoID != "me/model" ||
		c.Hub.Filename != "m.pt" || c.Hub.Endpoint != "http://hub.local:8080" {
		t.Fatalf("config %+v", c)
	}

	// The environment alone, as chat reads it.
	c, err = FromEnv(testkit.EnvLookup(env))
	if err != nil || c.Model != "env.gguf" || c.Device != "gpu" || c.Threads != 2 || c.Hub.Token != "hf_abc" || c.KVCacheMB != 48 {
		t.Fatalf("from the environment: %+v %v", c, err)
	}
	// A switch flag given a value keeps the boolean spellings.
	if c, err := parseFlags([]string{"--offline=0"}, env, io.Discard); err != nil || c.Hub.Offline {
		t.Fatalf("--offline=0: offline %v, %v", c.Hub.Offline, err)
	}
	// Set but empty: the Hub's own default, as huggingface_hub does.
	if c, err := FromEnv(testkit.EnvLookup(map[string]string{"HF_ENDPOINT": ""})); err != nil || c.Hub.Endpoint != "https://huggingface.co" {
		t.Fatalf("empty HF_ENDPOINT: %q %v", c.Hub.Endpoint, err)
	}
}

func TestConfigRefusesBadValues(t *testing.T) {
	cases := []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"HF_HUB_OFFLINE": "maybe"}, nil, "HF_HUB_OFFLINE"},
		{map[string]string{"CKPT_FILENAME": "../etc/passwd"}, nil, "plain file name"},
		{map[string]string{"HF_ENDPOINT": "ftp://x"}, nil, "HF_ENDPOINT"},
		{map[string]string{"DEVICE": ""}, nil, `DEVICE: invalid value "": must not be empty`},
		{map[string]string{"BASELINE": "sometimes"}, nil, "BASELINE"},
		{nil, []string{"--threads", "-1"}, `--threads: invalid value "-1": must be an integer in [0, 1024]`},
		{nil, []string{"--ckpt-dir="}, "--ckpt-dir"},
		{map[string]string{"BACKEND_DIR": "/no/such/folder"}, nil, `BACKEND_DIR: invalid value "/no/such/folder": no such file`},
		{nil, []string{"--backend-dir", "config_test.go"}, "--backend-dir: invalid value \"config_test.go\": not a folder"},
		{map[string]string{"KV_CACHE_TYPE": "q8"}, nil, `KV_CACHE_TYPE: invalid value "q8": "q8" is not f32 or f16`},
		{nil, []string{"--kv-cache-type", "F16"}, `--kv-cache-type: invalid value "F16"`},
	}
	for _, tc := range cases {
		_, err := parseFlags(tc.args, tc.env, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("env %v args %v: error %v, want it to mention %q", tc.env, tc.args, err, tc.want)
		}
	}
	if _, err := FromEnv(testkit.EnvLookup(map[string]string{"THREADS": "many"})); err == nil || !strings.Contains(err.Error(), "THREADS") {
		t.Fatalf("bad THREADS from the environment: %v", err)
	}
}

// HF_TOKEN has no flag: a token on the command line would show in ps.
func TestConfigTokenHasNoFlag(t *testing.T) {
	var usage strings.Builder
	if _, err := parseFlags([]string{"-h"}, nil, &usage); err != flag.ErrHelp {
		t.Fatalf("-h: %v", err)
	}
	if regexp.MustCompile(`(?m)^\s+-(hf-)?token\s`).MatchString(usage.String()) {
		t.Fatalf("usage mentions a token flag:\n%s", usage.String())
	}
	if !strings.Contains(usage.String(), "-model") || !strings.Contains(usage.String(), "env CKPT_DIR") {
		t.Fatalf("usage lacks flags:\n%s", usage.String())
	}
}
