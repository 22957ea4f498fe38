package engine

// Loading a GGUF into the C engine, and the one cgo call per step.

/*
#include <stdlib.h>
#include "nielsgpt.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"time"
	"unsafe"

	"nielsgpt/gguf"
	"nielsgpt/tokenizer"
)

// Options configure a loaded model.
type Options struct {
	// Device is "cpu" (default), "cuda", "metal"/"mps", or "gpu" (the first
	// GPU ggml has).
	Device string
	// BackendDir, when set, is a folder of ggml backend modules built with
	// CMake (docs/ARCHITECTURE.md §7), loaded before the model: the CPU
	// variant that suits this machine best then runs instead of the CPU
	// backend built into the binary, and Device "cuda" finds CUDA there.
	BackendDir string
	Threads    int // the most CPU threads a step uses; 0 means defaultThreads()
	// PrefillChunk caps the prompt tokens one sequence feeds per step, so a
	// long prompt shares steps with running streams. 0 means 128.
	PrefillChunk int
	// Baseline runs the original service's algorithm, for benchmarks to
	// compare against: one sequence at a time, and the whole window through
	// the model for every token (no KV cache reuse, no batching).
	Baseline bool
	// OnStep, when set, hears how long each engine step took: phase is
	// "prefill", "decode" or "mixed", tokens the tokens fed in that step.
	OnStep func(phase string, seconds float64, tokens int)
	// KVCacheMB bounds the KV pool, the memory every sequence's cache comes
	// from (MiB, at least one full window). 0 sizes it for KVWindows full
	// windows of the model.
	KVCacheMB int
	// KVWindows is how many sequences of a full window (T positions) the
	// pool holds when KVCacheMB is 0; 0 means defaultKVWindows.
	KVWindows int
	// KVWait bounds how long a new sequence waits for room in a full pool
	// before Generate fails with ErrKVFull; 0 means defaultKVWait.
	KVWait time.Duration
	// KVHalf stores the cached keys and values in half precision: half the
	// pool's memory, and every cached key and value rounded (not what
	// PyTorch computes; docs/BENCHMARKS.md measures how far it moves). The
	// default, false, is exact.
	KVHalf bool
}

// defaultKVWindows sizes a default pool: the server's default concurrency
// cap (MAX_CONCURRENT), so that by default the cap is what limits.
const defaultKVWindows = 64

// defaultKVWait is long enough to ride out a burst (a reply finishes, its
// blocks come back) and short enough that a client is told to retry rather
// than left hanging.
const defaultKVWait = 5 * time.Second

// Model is a loaded niels-gpt with its batching scheduler. It is safe for
// concurrent use: every Generate joins the same stream of batched steps.
type Model struct {
	cfg gguf.ModelConfig
	tok tokenizer.Tokenizer // the model's vocabulary: bytes, or its SentencePiece
	// tokenBytes is each id's TokenBytes, made once so that a step's text
	// grows without an allocation per token.
	tokenBytes [][]byte
	opts       Options
	c          *C.ngpt_model
	backend    string
	sched      *scheduler
	scratch    stepScratch // only the goroutine running steps touches it
}

const errLen = 512

// LoadFile loads a niels-gpt GGUF file.
func LoadFile(path string, opts Options) (*Model, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m, err := LoadBytes(data, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// The weights now live in ggml's buffers; hand the file's copy back to
	// the OS now rather than whenever the scavenger gets to it, so it never
	// adds to the peak alongside a full house of KV caches.
	debug.FreeOSMemory()
	return m, nil
}

// LoadBytes loads a niels-gpt GGUF held in memory. The file is parsed and
// checked in Go first: ggml's own checks abort the process.
func LoadBytes(data []byte, opts Options) (*Model, error) {
	g, err := gguf.Parse(data)
	if err != nil {
		return nil, err
	}
	cfg, err := g.ModelConfig()
	if err != nil {
		return nil, err
	}
	tok, err := g.Tokenizer()
	if err != nil {
		return nil, err
	}
	if opts.Threads <= 0 {
		opts.Threads = defaultThreads()
	}
	if opts.Device == "" {
		opts.Device = "cpu"
	}
	if opts.PrefillChunk <= 0 {
		opts.PrefillChunk = defaultPrefillChunk
	}
	if opts.KVWindows <= 0 {
		opts.KVWindows = defaultKVWindows
	}
	if opts.KVWait <= 0 {
		opts.KVWait = defaultKVWait
	}
	opts.PrefillChunk = min(opts.PrefillChunk, cfg.Context, stepTokenBudget)

	hp := C.ngpt_hparams{
		n_vocab: C.int32_t(cfg.Vocab), n_ctx: C.int32_t(cfg.Context), n_embd: C.int32_t(cfg.Embd),
		n_layer: C.int32_t(cfg.Layers), n_head: C.int32_t(cfg.Heads), n_ff: C.int32_t(cfg.FF),
		rope_theta: C.float(cfg.RopeTheta), norm_eps: C.float(cfg.NormEps),
		norm_type: C.NGPT_NORM_LAYER, mlp_type: C.NGPT_MLP_GELU,
	}
	if cfg.Norm == gguf.NormRMS {
		hp.norm_type = C.NGPT_NORM_RMS
	}
	if cfg.MLP == gguf.MLPSwiGLU {
		hp.mlp_type = C.NGPT_MLP_SWIGLU
	}
	if opts.KVHalf {
		hp.kv_type = C.NGPT_KV_F16
	}
	refs := make([]C.ngpt_tensor_ref, len(g.Tensors))
	for i, t := range g.Tensors {
		if len(t.Name) >= len(refs[i].name) || len(t.Dims) < 1 || len(t.Dims) > 2 {
			return nil, fmt.Errorf("tensor %q: unexpected name or rank", t.Name)
		}
		for j := 0; j < len(t.Name); j++ {
			refs[i].name[j] = C.char(t.Name[j])
		}
		refs[i]._type = C.int32_t(t.Type)
		refs[i].n_dims = C.int32_t(len(t.Dims))
		for j, d := range t.Dims {
			refs[i].ne[j] = C.int64_t(d)
		}
		refs[i].offset = C.uint64_t(t.Offset)
		refs[i].nbytes = C.uint64_t(t.Size)
	}
	if len(refs) == 0 || len(data) == 0 {
		return nil, errors.New("no tensors")
	}
	kvBlocks, err := poolBlocks(&hp, opts)
	if err != nil {
		return nil, err
	}
	device := C.CString(opts.Device)
	defer C.free(unsafe.Pointer(device))
	var errBuf [errLen]C.char
	registryMu.Lock()
	defer registryMu.Unlock()
	if opts.BackendDir != "" {
		if err := loadBackends(opts.BackendDir); err != nil {
			return nil, err
		}
	}
	c := C.ngpt_model_load(&hp, unsafe.Pointer(&data[0]), C.size_t(len(data)), &refs[0], C.int(len(refs)),
		device, C.int(opts.Threads), C.int64_t(kvBlocks), &errBuf[0], errLen)
	if c == nil {
		return nil, fmt.Errorf("loading model: %s", C.GoString(&errBuf[0]))
	}
	m := &Model{cfg: cfg, tok: tok, tokenBytes: make([][]byte, tok.VocabSize()), opts: opts, c: c, backend: C.GoString(C.ngpt_model_backend(c))}
	for id := range m.tokenBytes {
		m.tokenBytes[id] = tok.TokenBytes(id)
	}
	m.sched = newScheduler(m)
	return m, nil
}

// registryMu guards ggml's backend registry, which is process-wide and not
// safe to change while another model is choosing its device from it.
var registryMu sync.Mutex

// loadBackends loads the ggml backend modules in dir (a folder loaded
// before is skipped by the C side). registryMu must be held.
func loadBackends(dir string) error {
	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	var errBuf [errLen]C.char
	if C.ngpt_backends_load(cdir, &errBuf[0], errLen) != 0 {
		return fmt.Errorf("BACKEND_DIR: %s", C.GoString(&errBuf[0]))
	}
	return nil
}

// poolBlocks sizes the KV pool in blocks of C.NGPT_KV_BLOCK positions.
func poolBlocks(hp *C.ngpt_hparams, opts Options) (int64, error) {
	blockBytes := int64(C.ngpt_kv_block_bytes(hp))
	if blockBytes == 0 {
		// hyper-parameters ngpt_model_load refuses, with its own message
		return 0, nil
	}
	window := (int64(hp.n_ctx) + C.NGPT_KV_BLOCK - 1) / C.NGPT_KV_BLOCK // blocks
	if opts.KVCacheMB == 0 {
		return int64(opts.KVWindows) * window, nil
	}
	blocks := int64(opts.KVCacheMB) << 20 / blockBytes
	if blocks < window {
		return 0, fmt.Errorf("a KV cache of %d MiB cannot hold one window of %d positions (%.1f MiB)",
			opts.KVCacheMB, hp.n_ctx, float64(window*blockBytes)/(1<<20))
	}
	return blocks, nil
}

// defaultThreads is one per core. Only steps with long matmuls (prompt
// chunks, windows) use them all; decode steps run on one thread, because
// ggml's workers meet at a spinning barrier after every op, and with every
// core claimed for short ops a worker descheduled by the Go side made the
// others spin for a time slice (a 3 ms request took 800 ms). See csrc's
// threads section.
func defaultThreads() int {
	return max(1, runtime.NumCPU())
}

// Config reports the model's hyper-parameters.
func (m *Model) Config() gguf.ModelConfig { return m.cfg }

// Tokenizer is the model's vocabulary: tokenizer.Bytes for generation 1, the
// SentencePiece model its file stores for generation 2.
func (m *Model) Tokenizer() tokenizer.Tokenizer { return m.tok }

// Backend names the ggml backend doing the maths, and the module it was
// loaded from when BackendDir supplied it: "CPU", "Metal",
// "CPU (libggml-cpu-icelake.so)".
func (m *Model) Backend() string { return m.backend }

// Close stops the scheduler (ending every running generation) and frees the
// model. It must not race with calls that are starting.
func (m *Model) Close() {
	if m.c == nil {
		return
	}
	m.sched.stop()
	C.ngpt_model_free(m.c)
	m.c = nil
	m.scratch.free()
}

// kvCache is one sequence's cache: a run of blocks of the model's KV pool,
// for capacity positions, held from admission to the end.
type kvCache struct {
	c        *C.ngpt_seq
	capacity int
}

// errNoRoom says the pool cannot hold another cache now; the scheduler
// waits for room, and only then fails with ErrKVFull.
var errNoRoom = errors.New("no room in the KV pool")

func (m *Model) newKVCache(capacity int) (*kvCache, error) {
	var c *C.ngpt_seq
	errBuf := &m.scratch.errBuf
	switch C.ngpt_seq_new(m.c, C.int(capacity), &c, &errBuf[0], errLen) {
	case C.NGPT_OK:
		return &kvCache{c: c, capacity: capacity}, nil
	case C.NGPT_KV_FULL:
		return nil, errNoRoom
	default:
		return nil, errors.New(C.GoString(&errBuf[0]))
	}
}

func (k *kvCache) free() {
	if k != nil && k.c != nil {
		C.ngpt_seq_free(k.c)
		k.c = nil
	}
}

// kvPositions is how many positions the KV pool holds in all, and how many
// are free.
func (m *Model) kvPositions() (total, free int) {
	var st C.ngpt_kv_stats
	C.ngpt_kv_stats_get(m.c, &st)
	return int(st.blocks) * C.NGPT_KV_BLOCK, int(st.free_blocks) * C.NGPT_KV_BLOCK
}

// graphsBuilt is how many step graphs the C side has built: a step of a
// shape it has kept builds none.
func (m *Model) graphsBuilt() uint64 { return uint64(C.ngpt_graphs_built(m.c)) }

// stepItem is one sequence's share of a step, with Go-owned outputs (see
// ngpt_item in csrc/nielsgpt.h for their shapes). Nil asks for nothing.
type stepItem struct {
	cache       *kvCache
	tokens      []int32
	nPast       int
	logits      []float32 // V: the last token's, or nil
	allLogits   []float32 // n × V: every new token's, or nil
	traceLayers []int32   // layers whose newest attention rows are read
	attnRows    []float32 // len(traceLayers) × H × t
	fullLayers  []int32   // layers whose whole attention is read
	fullAttn    []float32 // len(fullLayers) × H × n × t
	lens        []float32 // L × V: the logit lens at the last token, or nil
	headMask    []float32 // L × H: 1 keeps a head, 0 ablates it; nil keeps all
}

// stepScratch is the C memory a step's items, tokens and outputs pass
// through. Go memory handed to C may hold Go pointers only when they are
// pinned, and pinning allocates on every step; memory C owns holds what it
// likes. It grows when a step needs more and is then reused, so a step
// allocates nothing.
type stepScratch struct {
	items    *C.ngpt_item
	capItems int
	words    unsafe.Pointer // 4-byte words: tokens in, logits and probabilities out
	capWords int
	errBuf   [errLen]C.char
}

func (s *stepScratch) reserve(nItems, nWords int) error {
	if nItems > s.capItems {
		C.free(unsafe.Pointer(s.items))
		s.items = (*C.ngpt_item)(C.calloc(C.size_t(nItems), C.size_t(unsafe.Sizeof(C.ngpt_item{}))))
		s.capItems = nItems
	}
	if nWords > s.capWords {
		C.free(s.words)
		s.words = C.malloc(C.size_t(nWords) * 4)
		s.capWords = nWords
	}
	if s.items == nil || s.words == nil {
		s.free()
		return errors.New("out of memory for a step")
	}
	return nil
}

func (s *stepScratch) free() {
	C.free(unsafe.Pointer(s.items))
	C.free(s.words)
	*s = stepScratch{}
}

// words returns the next n words of the scratch after *off, and moves *off on.
func (s *stepScratch) take(off *int, n int) unsafe.Pointer {
	p := unsafe.Add(s.words, *off*4)
	*off += n
	return p
}

// words counts the scratch words an item needs: its inputs and its outputs.
func (it *stepItem) words() int {
	return len(it.tokens) + len(it.logits) + len(it.allLogits) + len(it.traceLayers) + len(it.attnRows) +
		len(it.fullLayers) + len(it.fullAttn) + len(it.lens) + len(it.headMask)
}

// in copies src into the next words of the scratch and returns where they
// went; nil for an empty src.
func in[T int32 | float32](s *stepScratch, off *int, src []T) *T {
	if len(src) == 0 {
		return nil
	}
	p := (*T)(s.take(off, len(src)))
	copy(unsafe.Slice(p, len(src)), src)
	return p
}

// out reserves the next words of the scratch for an output of len(dst)
// floats; nil when dst is.
func out(s *stepScratch, off *int, dst []float32) *C.float {
	if dst == nil {
		return nil
	}
	return (*C.float)(s.take(off, len(dst)))
}

// back copies an output from the scratch into dst.
func back(dst []float32, src *C.float) {
	if dst != nil {
		copy(dst, unsafe.Slice((*float32)(unsafe.Pointer(src)), len(dst)))
	}
}

// step runs one batched forward pass: the only cgo call on the hot path.
// Inputs go to C and the outputs come back through the model's scratch.
func (m *Model) step(items []stepItem) error {
	words := 0
	for i := range items {
		words += items[i].words()
	}
	s := &m.scratch
	if err := s.reserve(len(items), words); err != nil {
		return err
	}
	citems := unsafe.Slice(s.items, len(items))
	off := 0
	for i := range items {
		it := &items[i]
		citems[i] = C.ngpt_item{
			seq:          it.cache.c,
			tokens:       (*C.int32_t)(unsafe.Pointer(in(s, &off, it.tokens))),
			n_tokens:     C.int32_t(len(it.tokens)),
			n_past:       C.int32_t(it.nPast),
			logits:       out(s, &off, it.logits),
			all_logits:   out(s, &off, it.allLogits),
			n_trace:      C.int32_t(len(it.traceLayers)),
			trace_layers: (*C.int32_t)(unsafe.Pointer(in(s, &off, it.traceLayers))),
			attn_rows:    out(s, &off, it.attnRows),
			n_full:       C.int32_t(len(it.fullLayers)),
			full_layers:  (*C.int32_t)(unsafe.Pointer(in(s, &off, it.fullLayers))),
			full_attn:    out(s, &off, it.fullAttn),
			lens:         out(s, &off, it.lens),
			head_mask:    (*C.float)(unsafe.Pointer(in(s, &off, it.headMask))),
		}
	}
	if rc := C.ngpt_step(m.c, s.items, C.int(len(items)), &s.errBuf[0], errLen); rc != 0 {
		return errors.New(C.GoString(&s.errBuf[0]))
	}
	for i := range items {
		it, ci := &items[i], &citems[i]
		back(it.logits, ci.logits)
		back(it.allLogits, ci.all_logits)
		back(it.attnRows, ci.attn_rows)
		back(it.fullAttn, ci.full_attn)
		back(it.lens, ci.lens)
	}
	return nil
}
