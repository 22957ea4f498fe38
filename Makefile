# nielsgpt build. ggml's sources come from the pinned ollama module; its headers
# are passed through CGO_CPPFLAGS so that CGO_CFLAGS keeps our optimisation flags.

GO      ?= go
PYTHON  ?= /usr/bin/python3
ARCH    := $(shell uname -m)

OLLAMA_DIR := $(shell $(GO) mod download github.com/ollama/ollama >/dev/null 2>&1; $(GO) list -m -f '{{.Dir}}' github.com/ollama/ollama 2>/dev/null)
GGML_INC   := $(OLLAMA_DIR)/ml/backend/ggml/ggml/include

# Native SIMD for local x86-64 builds (without it ggml falls back to SSE2).
# AMX is left out: gcc 12 turns it on with -march=native on these Xeons, and
# ggml's AMX kernels are for quantised types we do not use. arm64 (Apple
# Silicon included) keeps the compiler's default, which already has NEON.
ifeq ($(ARCH),x86_64)
NATIVE ?= -march=native -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
endif

export CGO_ENABLED  := 1
export CGO_CPPFLAGS := -I$(GGML_INC)
export CGO_CFLAGS   := -O3 $(NATIVE)
export CGO_CXXFLAGS := -O3 $(NATIVE)

.PHONY: all build run test test-c test-deploy fuzz bench fixtures demo check-go check-cmake check-torch env

all: build

check-go:
	@command -v $(GO) >/dev/null || { echo "Go is missing: install Go 1.26 from https://go.dev/dl"; exit 1; }
	@command -v gcc >/dev/null || command -v cc >/dev/null || { echo "a C compiler is missing: apt-get install gcc g++ (macOS: xcode-select --install)"; exit 1; }
	@test -n "$(OLLAMA_DIR)" || { echo "cannot fetch github.com/ollama/ollama (ggml sources): check access to the Go module proxy"; exit 1; }

check-cmake:
	@command -v cmake >/dev/null || { echo "cmake is missing (3.21 or later): apt-get install cmake (macOS: brew install cmake)"; exit 1; }
	@command -v ctest >/dev/null || { echo "ctest is missing: it comes with cmake (apt-get install cmake)"; exit 1; }

check-torch:
	@$(PYTHON) -c 'import torch' 2>/dev/null || { echo "PyTorch is missing: apt-get install python3-torch (Debian) — only needed to regenerate fixtures or the demo model"; exit 1; }

# env prints the cgo settings, for running go commands by hand: eval "$$(make -s env)"
env:
	@echo "export CGO_ENABLED=1 CGO_CPPFLAGS='$(CGO_CPPFLAGS)' CGO_CFLAGS='$(CGO_CFLAGS)' CGO_CXXFLAGS='$(CGO_CXXFLAGS)'"

build: check-go
	$(GO) build -o bin/nielsgpt ./cmd/nielsgpt

# A session of one's own on this machine: the inspector page spends one POST per
# view, so the deployed defaults (a burst of 3, 10 a minute) would stop it within
# a minute. Either can still be set in the environment.
run: build
	RATE_LIMIT_BURST=$${RATE_LIMIT_BURST:-100} RATE_LIMIT_PER_MIN=$${RATE_LIMIT_PER_MIN:-600} ./bin/nielsgpt serve --model demo

# The engine's suite runs twice: with our kernels (on CPUs with AVX-512) and
# with ggml's ops alone, the path of every other CPU (csrc, init_panels).
test: check-go
	$(GO) vet ./...
	$(GO) test -count=1 ./...
	NIELSGPT_GGML_KERNELS=1 $(GO) test -count=1 ./engine

# The C side on its own through CMake (docs/ARCHITECTURE.md §7), one preset
# after the other: default (Release; the C tests, the backend modules, and the
# Go engine's suite on the CPU module) and asan (AddressSanitizer and UBSan).
# The cgo settings exported above reach the Go steps CTest runs, so they reuse
# the build cache of make test. CI runs only the asan preset.
C_PRESETS ?= default asan
JOBS      ?= $(shell nproc 2>/dev/null || echo 2)
test-c: check-go check-cmake
	@for preset in $(C_PRESETS); do \
		echo "== CMake preset $$preset"; \
		cmake --preset $$preset && \
		cmake --build --preset $$preset --parallel $(JOBS) && \
		ctest --preset $$preset || exit 1; \
	done

# The Helm chart (lint, template, strict decoding into Kubernetes types) and
# the Grafana dashboard's JSON, from deploy/'s own Go module: Helm and the
# Kubernetes libraries stay out of the server's module. The first run
# downloads and compiles them (several minutes); later runs take seconds.
test-deploy: check-go
	cd deploy && $(GO) vet ./... && $(GO) test -count=1 ./...

# Short coverage-guided runs of every fuzz target (CI runs this after test).
FUZZTIME ?= 30s
FUZZ_TARGETS := $(shell grep -rl --include='*_test.go' '^func Fuzz' . 2>/dev/null | xargs -r dirname | sort -u)
fuzz: check-go
	@for dir in $(FUZZ_TARGETS); do \
		for target in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go | sed 's/^func //'); do \
			echo "fuzz $$dir $$target ($(FUZZTIME))"; \
			scripts/fuzz-one.sh "$(GO)" $$dir $$target $(FUZZTIME) || exit 1; \
		done; \
	done

# The engine's step benchmarks, then the end-to-end load benchmark over
# loopback against the built-in baseline mode (docs/BENCHMARKS.md).
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 2s ./engine/
	./bin/nielsgpt bench

# Soak (docs/RELIABILITY.md): the real server under 64 concurrent streams with
# random disconnects, slow readers and bad requests for SOAK_DURATION, then the
# concurrency and rate caps; prints a summary and fails on any failed check.
# CI runs the 10-second version instead (reliability.TestShortSoak).
SOAK_DURATION ?= 3m
.PHONY: soak
soak: build
	SOAK_DURATION=$(SOAK_DURATION) $(GO) run ./reliability/cmd/soak -exe bin/nielsgpt

fixtures: check-torch
	$(PYTHON) scripts/make_fixtures.py

# Generation-2 checkpoints and goldens (testdata/models/tiny_gen2_*.pt,
# testdata/golden/tiny_gen2_*.json.gz) for testdata/spm/tiny.model.
.PHONY: fixtures-gen2
fixtures-gen2: check-torch
	@$(PYTHON) -c 'import sentencepiece' 2>/dev/null || { echo "sentencepiece is missing: apt-get install python3-sentencepiece (Debian)"; exit 1; }
	$(PYTHON) scripts/make_fixtures_gen2.py

demo: check-torch build
	$(PYTHON) scripts/train_demo.py
	./bin/nielsgpt convert models/demo/best.pt -o models/demo/demo.gguf
