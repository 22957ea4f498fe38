package main

// serve's configuration is two packages' tables in one FlagSet: one -h
// listing, flags over environment for either, every problem at once.

import (
	"errors"
	"flag"
	"io"
	"regexp"
	"strings"
	"testing"

	"nielsgpt/internal/testkit"
)

func TestServeConfigBothTables(t *testing.T) {
	env := testkit.EnvLookup(map[string]string{"API_PORT": "9000", "MODEL": "env.gguf", "THREADS": "2", "HF_TOKEN": "hf_abc",
		"MAX_CONCURRENT": "12"})
	cfg, modelCfg, err := parseServeConfig([]string{"--port", "9100", "--model", "demo", "--offline"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Port != 9100 || modelCfg.Model != "demo" || modelCfg.Threads != 2 || !modelCfg.Hub.Offline || modelCfg.Hub.Token != "hf_abc" {
		t.Fatalf("server %+v, model %+v", cfg, modelCfg)
	}
	// The default KV pool holds a full window per generation slot.
	if modelCfg.KVCacheMB != 0 || modelCfg.KVWindows != 12 {
		t.Fatalf("KV pool: %d MiB, %d windows; want the default, sized for MAX_CONCURRENT=12", modelCfg.KVCacheMB, modelCfg.KVWindows)
	}

	_, _, err = parseServeConfig(nil, testkit.EnvLookup(map[string]string{"API_PORT": "x", "CKPT_FILENAME": "../x"}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), `API_PORT: invalid value "x"`) || !strings.Contains(err.Error(), "CKPT_FILENAME") {
		t.Fatalf("problems from both tables at once: %v", err)
	}
	if _, _, err := parseServeConfig([]string{"extra"}, testkit.EnvLookup(nil), io.Discard); err == nil ||
		err.Error() != `unexpected argument "extra" (flags only; see nielsgpt serve -h)` {
		t.Fatalf("positional argument: %v", err)
	}
	if _, _, err := parseServeConfig([]string{"--nope"}, testkit.EnvLookup(nil), io.Discard); err == nil {
		t.Fatal("unknown flag accepted")
	}
}

// One listing names the HTTP and the model flags, and never a token flag: a
// token on the command line would show in ps.
func TestServeUsage(t *testing.T) {
	var usage strings.Builder
	if _, _, err := parseServeConfig([]string{"-h"}, testkit.EnvLookup(nil), &usage); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	text := usage.String()
	if !strings.HasPrefix(text, "usage: nielsgpt serve [flags]") {
		t.Fatalf("usage does not start with its synopsis:\n%s", text)
	}
	if regexp.MustCompile(`(?m)^\s+-(hf-)?token\s`).MatchString(text) {
		t.Fatalf("usage mentions a token flag:\n%s", text)
	}
	testkit.ContainsAll(t, "usage", text, "-model", "env MAX_CONCURRENT", "env CKPT_DIR", "-offline", "-port")
}
