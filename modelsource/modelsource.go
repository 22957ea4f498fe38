// Package modelsource chooses and opens the model that `nielsgpt serve` and
// `nielsgpt chat` run: a .gguf file, a PyTorch .pt checkpoint converted once
// and cached as a .gguf beside it, the demo model embedded in the binary, or,
// when nothing is named, the checkpoint in CKPT_DIR, downloaded from the
// Hugging Face Hub if missing. Whatever is asked for is opened or the start
// fails with the reason: never a different model in its place. Both commands
// share this package so a model opens the same way in either. A generation-2
// checkpoint is converted with its SentencePiece tokenizer (TOKENIZER, or the
// spm.model beside it), and a cached conversion is reused only while both files
// are the ones it was made from.
package modelsource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"nielsgpt/convert"
	"nielsgpt/engine"
	"nielsgpt/gguf"
	"nielsgpt/hub"
)

// DemoModelName is the MODEL value that selects the embedded model.
const DemoModelName = "demo"

// Options are the parts of obtaining a model that are not configuration:
// what the binary embeds and where progress and logs go.
type Options struct {
	// Demo returns the embedded demo model's GGUF; nil when this build has none.
	Demo func() []byte
	// Progress receives the download progress bar; nil for none (the caller
	// passes stderr only when it is a terminal).
	Progress io.Writer
	// OnStep hears the engine's step timings (metrics.EngineStep).
	OnStep func(phase string, seconds float64, tokens int)
	Log    *slog.Logger
}

// Spec is a resolved model, ready for the engine.
type Spec struct {
	Path   string // the GGUF file to load; "" when Data is set
	Data   []byte // the GGUF itself when it is already in memory
	Source string // what was asked for and what it became, for the logs
}

// Resolve turns cfg.Model (or, when empty, the CKPT_* settings) into a GGUF
// the engine can load, downloading and converting as needed.
func Resolve(ctx context.Context, cfg Config, opts Options) (*Spec, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	switch name := cfg.Model; {
	case name == DemoModelName && cfg.Tokenizer != "":
		return nil, errTokenizerNotTaken(cfg.Tokenizer, name)
	case name == DemoModelName:
		if opts.Demo == nil || len(opts.Demo()) == 0 {
			return nil, errors.New(`--model demo: this build has no embedded demo model; pass a .gguf or .pt file instead`)
		}
		return &Spec{Data: opts.Demo(), Source: "demo (embedded in the binary)"}, nil
	case name != "":
		if _, err := os.Stat(name); err != nil {
			return nil, fmt.Errorf("--model %s: %w", name, describeFileError(err))
		}
		return resolveFile(name, cfg.Tokenizer, log)
	}

	h := cfg.Hub
	h.Progress = opts.Progress
	path, err := hub.Download(ctx, h)
	if err != nil {
		hint := ""
		if !strings.Contains(err.Error(), "--model demo") {
			hint = "; to serve without the network, use --model demo (the model embedded in this binary) or --model PATH.gguf"
		}
		return nil, fmt.Errorf("no --model given, so the checkpoint %s (CKPT_DIR/CKPT_FILENAME) is needed, and it could not be obtained: %w%s",
			filepath.Join(h.Dir, h.Filename), err, hint)
	}
	spec, err := resolveFile(path, cfg.Tokenizer, log)
	if err != nil {
		return nil, err
	}
	spec.Source = fmt.Sprintf("%s/%s via %s", h.RepoID, h.Filename, spec.Source)
	return spec, nil
}

// errTokenizerNotTaken refuses a tokenizer named for a model that carries its own
// vocabulary: ignoring it would serve the file's vocabulary, not the one asked for.
func errTokenizerNotTaken(tokenizer, model string) error {
	return fmt.Errorf("--tokenizer/TOKENIZER %s: only a .pt checkpoint takes a tokenizer; %s carries its own vocabulary", tokenizer, model)
}

func describeFileError(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return errors.New("no such file")
	}
	return err
}

// resolveFile picks the loader by extension; tokenizer is the one named for a .pt.
func resolveFile(path, tokenizer string, log *slog.Logger) (*Spec, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".gguf":
		if tokenizer != "" {
			return nil, errTokenizerNotTaken(tokenizer, path)
		}
		return &Spec{Path: path, Source: path}, nil
	case ".pt", ".pth":
		return convertCached(path, tokenizer, log)
	default:
		return nil, fmt.Errorf("%s: not a model file this server reads (want a .gguf, a .pt checkpoint, or \"demo\")", path)
	}
}

// convertCached returns the GGUF converted from the checkpoint at ptPath,
// converting it only when no cached conversion of exactly these bytes (and,
// for generation 2, of exactly this tokenizer) exists. The cache is X.gguf
// beside X.pt; where that name is taken by a file that is not a conversion of
// ours, or the folder is read-only, the user cache folder holds it instead,
// named by the checkpoint's sha256. tokenizer is the spm.model named for it;
// "" means the one beside it, if any.
func convertCached(ptPath, tokenizer string, log *slog.Logger) (*Spec, error) {
	sum, err := fileSHA256(ptPath)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ptPath, err)
	}
	tok := tokenizerKey{named: tokenizer != "", path: tokenizer}
	if !tok.named {
		tok.path = convert.TokenizerBeside(ptPath)
	}
	if tok.path != "" {
		if tok.sha256, err = fileSHA256(tok.path); err != nil {
			return nil, fmt.Errorf("--tokenizer %s: %w", tok.path, err)
		}
	}
	beside := strings.TrimSuffix(ptPath, filepath.Ext(ptPath)) + ".gguf"
	candidates := []string{beside}
	if dir, err := os.UserCacheDir(); err == nil {
		candidates = append(candidates, filepath.Join(dir, "nielsgpt", sum+".gguf"))
	}

	for _, out := range candidates {
		data, state := cachedConversion(out, sum, tok)
		switch state {
		case cacheHit:
			log.Info("using cached conversion", "checkpoint", ptPath, "gguf", out)
			return &Spec{Path: out, Data: data, Source: fmt.Sprintf("%s (cached conversion %s)", ptPath, out)}, nil
		case cacheForeign:
			log.Warn("not overwriting a GGUF that is not a conversion of ours", "path", out)
			continue
		}
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			log.Warn("cannot create the conversion cache folder", "path", filepath.Dir(out), "error", err)
			continue
		}
		log.Info("converting checkpoint", "checkpoint", ptPath, "gguf", out)
		summary, err := convert.ToGGUF(ptPath, out, convert.Options{Tokenizer: tokenizer})
		if err != nil {
			if errors.Is(err, fs.ErrPermission) {
				log.Warn("cannot write the converted model here", "path", out, "error", err)
				continue
			}
			return nil, fmt.Errorf("converting %s: %w", ptPath, err)
		}
		if summary.SHA256 != sum || (summary.TokenizerSHA256 != "" && summary.TokenizerSHA256 != tok.sha256) {
			return nil, fmt.Errorf("converting %s: the checkpoint or its tokenizer changed while it was being converted", ptPath)
		}
		return &Spec{Path: out, Source: fmt.Sprintf("%s (converted to %s)", ptPath, out)}, nil
	}
	return nil, fmt.Errorf("converting %s: no writable place for the converted model (tried %s)", ptPath, strings.Join(candidates, ", "))
}

type cacheState int

const (
	cacheMissing cacheState = iota // nothing usable there; safe to write
	cacheHit                       // a conversion of exactly this checkpoint
	cacheForeign                   // some other file that must not be overwritten
)

// tokenizerKey is the tokenizer a conversion would use: named, or found beside
// the checkpoint (path "" when neither), and its sha256.
type tokenizerKey struct {
	named        bool
	path, sha256 string
}

// cachedConversion checks whether path holds the conversion of the
// checkpoint whose sha256 is sum, made with tokenizer tok. A conversion of a
// different checkpoint or with a different tokenizer is stale (a file was
// replaced) and may be overwritten; a readable GGUF without our source key
// was put there by someone else. A generation-1 conversion stores no
// tokenizer, so an spm.model beside its checkpoint does not matter, but one
// named for it sends it back to the converter, which says why it refuses.
func cachedConversion(path, sum string, tok tokenizerKey) ([]byte, cacheState) {
	info, err := os.Lstat(path)
	if err != nil {
		return nil, cacheMissing
	}
	if !info.Mode().IsRegular() {
		return nil, cacheForeign
	}
	data, g, err := gguf.ReadFile(path)
	if err != nil {
		var probe [4]byte
		if f, err := os.Open(path); err == nil {
			n, _ := io.ReadFull(f, probe[:])
			f.Close()
			if n == 4 && string(probe[:]) == "GGUF" {
				return nil, cacheMissing // a damaged GGUF: rebuilding it loses nothing
			}
		}
		return nil, cacheForeign
	}
	source, ok := g.SourceSHA256()
	if !ok {
		return nil, cacheForeign
	}
	stored, gen2 := g.TokenizerSHA256()
	if source != sum || (gen2 && stored != tok.sha256) || (!gen2 && tok.named) {
		return nil, cacheMissing
	}
	return data, cacheHit
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", describeFileError(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Load resolves the model and loads it into the engine. source says what
// was asked for and what it became (a download, a cached conversion), for
// logs and banners. serve runs it in the background while already
// listening; chat runs it before the first prompt.
func Load(ctx context.Context, cfg Config, opts Options) (model *engine.Model, source string, err error) {
	spec, err := Resolve(ctx, cfg, opts)
	if err != nil {
		return nil, "", err
	}
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	engineOpts := engine.Options{Device: cfg.Device, BackendDir: cfg.BackendDir, Threads: cfg.Threads,
		Baseline: cfg.Baseline, OnStep: opts.OnStep, KVCacheMB: cfg.KVCacheMB, KVWindows: cfg.KVWindows, KVHalf: cfg.KVHalf}
	if spec.Data != nil {
		model, err = engine.LoadBytes(spec.Data, engineOpts)
	} else {
		model, err = engine.LoadFile(spec.Path, engineOpts)
	}
	if err != nil {
		if spec.Data == nil {
			return nil, "", err // LoadFile's error already names the file
		}
		return nil, "", fmt.Errorf("%s: %w", spec.Source, err)
	}
	if opts.Log != nil {
		c := model.Config()
		// The backend says which CPU variant won when BACKEND_DIR offered
		// several; kv_cache, whether the cache is exact (KV_CACHE_TYPE).
		kvCache := "f32"
		if cfg.KVHalf {
			kvCache = "f16"
		}
		opts.Log.Info("model loaded", "source", spec.Source, "device", cfg.Device, "backend", model.Backend(),
			"layers", c.Layers, "heads", c.Heads, "embd", c.Embd, "context", c.Context, "kv_cache", kvCache)
	}
	return model, spec.Source, nil
}
