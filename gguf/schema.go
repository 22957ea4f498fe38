// Package gguf reads and writes GGUF files and owns the niels-gpt schema on top of the
// format: the metadata keys, the tensor table and the one ModelConfig that the converter
// writes and the engine loads (docs/ARCHITECTURE.md).
package gguf

// The schema: what a niels-gpt generation 1 file must hold, checked in one place so the
// writer and the reader cannot drift apart and the C engine can trust what it is handed.

import (
	"fmt"
	"math"
	"slices"
)

// Metadata keys and fixed values of a niels-gpt file. The C engine never reads them: the
// engine passes the hyper-parameters across from ModelConfig.
const (
	keyArchitecture      = "general.architecture"
	keyGeneration        = "nielsgpt.generation"
	keyVocab             = "nielsgpt.vocab_size"
	keyContext           = "nielsgpt.context_length"
	keyEmbd              = "nielsgpt.embedding_length"
	keyLayers            = "nielsgpt.block_count"
	keyHeads             = "nielsgpt.attention.head_count"
	keyFF                = "nielsgpt.feed_forward_length"
	keyRopeTheta         = "nielsgpt.rope.freq_base"
	keyNormEps           = "nielsgpt.attention.layer_norm_epsilon"
	keyTokenizer         = "tokenizer.ggml.model"
	keyChatFormat        = "nielsgpt.chat_format"
	keySourceSHA256      = "nielsgpt.source.sha256"
	keySourceStep        = "nielsgpt.source.step"
	keySourceBestValLoss = "nielsgpt.source.best_val_loss"

	architecture = "nielsgpt"
	tokenizer    = "bytes"
	chatFormat   = "niels-v1"
)

// ModelConfig is a niels-gpt model's hyper-parameters: the checkpoint's model_cfg plus
// the LayerNorm epsilon, which the GGUF records and the checkpoint leaves implicit.
// The comments give the checkpoint's names.
type ModelConfig struct {
	Vocab     int     // V
	Context   int     // T: the window the model sees
	Embd      int     // C
	Layers    int     // L
	Heads     int     // H
	FF        int     // d_ff
	RopeTheta float64 // rope_theta; stored as float32
	NormEps   float64 // every LayerNorm's epsilon; stored as float32
}

// HeadDim is D = C/H.
func (c ModelConfig) HeadDim() int { return c.Embd / c.Heads }

// Bounds on hyper-parameters: generous for this model family, and small enough that
// products of them (parameter counts, GGUF dims) cannot overflow.
const (
	maxContext = 1 << 20
	maxWidth   = 1 << 16
	maxLayers  = 1 << 10
	maxFF      = 1 << 20
)

// Validate checks what generation 1 requires of its hyper-parameters. The converter
// checks a checkpoint with it and the reader a file, so both refuse the same models,
// with the checkpoint's names in the message.
func (c ModelConfig) Validate() error {
	if c.Vocab != 256 {
		return fmt.Errorf("vocab size V=%d: generation 1 is byte-level and needs V=256", c.Vocab)
	}
	for _, f := range []struct {
		name     string
		val, max int
	}{{"T", c.Context, maxContext}, {"C", c.Embd, maxWidth}, {"L", c.Layers, maxLayers}, {"H", c.Heads, maxWidth}, {"d_ff", c.FF, maxFF}} {
		if f.val < 1 || f.val > f.max {
			return fmt.Errorf("%s=%d is out of range (1..%d)", f.name, f.val, f.max)
		}
	}
	if c.Embd%c.Heads != 0 {
		return fmt.Errorf("C=%d is not divisible by H=%d", c.Embd, c.Heads)
	}
	if d := c.HeadDim(); d%2 != 0 {
		return fmt.Errorf("head size C/H=%d is odd: rotary embedding rotates pairs", d)
	}
	if math.IsNaN(c.RopeTheta) || math.IsInf(c.RopeTheta, 0) || c.RopeTheta <= 0 || c.RopeTheta > math.MaxFloat32 {
		return fmt.Errorf("rope_theta=%g is not a usable rotary base (want a finite number > 0)", c.RopeTheta)
	}
	// float32(eps) > 0 also refuses NaN and an epsilon that would be stored as zero.
	if !(float32(c.NormEps) > 0 && c.NormEps < 1) {
		return fmt.Errorf("layer_norm_epsilon=%g is not a small positive number", c.NormEps)
	}
	return nil
}

// TensorSpec is one row of the tensor table: a tensor as the GGUF stores it and the
// checkpoint tensor it is converted from.
type TensorSpec struct {
	Name     string // the GGUF tensor name, which the C engine looks weights up by
	StateKey string // the checkpoint's model_state key
	Shape    []int  // PyTorch's shape, row-major; the GGUF dims are the reverse
}

// Dims is the shape in ggml order: ne0, the contiguous dimension, first.
func (s TensorSpec) Dims() []uint64 {
	dims := make([]uint64, len(s.Shape))
	for i, d := range s.Shape {
		dims[len(s.Shape)-1-i] = uint64(d)
	}
	return dims
}

func (s TensorSpec) numel() int {
	n := 1
	for _, d := range s.Shape {
		n *= d
	}
	return n
}

// allows says whether the tensor may be stored with ggml type typ. Vectors (norm
// weights and biases) are F32 in every file: they are tiny and precision-sensitive, so
// F16 would save nothing worth having, and the C engine loads them as they are. The
// writer and the reader both ask here, so this is the one place the rule lives.
func (s TensorSpec) allows(typ uint32) bool {
	switch typ {
	case TypeF32:
		return true
	case TypeF16:
		return len(s.Shape) > 1
	}
	return false
}

// Tensors is the tensor table of a generation 1 model of this shape, in the order GGUF
// files store them. The output head is tied to the token embedding and not stored.
func (c ModelConfig) Tensors() []TensorSpec {
	C, V, F := c.Embd, c.Vocab, c.FF
	rows := []TensorSpec{{"token_embd.weight", "tok_emb.weight", []int{V, C}}}
	for i := 0; i < c.Layers; i++ {
		g, p := fmt.Sprintf("blk.%d.", i), fmt.Sprintf("blocks.%d.", i)
		rows = append(rows,
			TensorSpec{g + "attn_norm.weight", p + "ln1.weight", []int{C}},
			TensorSpec{g + "attn_norm.bias", p + "ln1.bias", []int{C}},
			TensorSpec{g + "attn_qkv.weight", p + "attn.qkv.weight", []int{3 * C, C}},
			TensorSpec{g + "attn_output.weight", p + "attn.proj.weight", []int{C, C}},
			TensorSpec{g + "ffn_norm.weight", p + "ln2.weight", []int{C}},
			TensorSpec{g + "ffn_norm.bias", p + "ln2.bias", []int{C}},
			TensorSpec{g + "ffn_up.weight", p + "mlp.fc1.weight", []int{F, C}},
			TensorSpec{g + "ffn_up.bias", p + "mlp.fc1.bias", []int{F}},
			TensorSpec{g + "ffn_down.weight", p + "mlp.fc2.weight", []int{C, F}},
			TensorSpec{g + "ffn_down.bias", p + "mlp.fc2.bias", []int{C}},
		)
	}
	return append(rows,
		TensorSpec{"output_norm.weight", "ln_f.weight", []int{C}},
		TensorSpec{"output_norm.bias", "ln_f.bias", []int{C}},
	)
}

func (c ModelConfig) hasTensor(name string) bool {
	for _, spec := range c.Tensors() {
		if spec.Name == name {
			return true
		}
	}
	return false
}

// SourceSHA256 is the sha256 of the checkpoint the file was converted from,
// which is how a conversion cache recognises its own files; ok is false for
// a GGUF that does not say.
func (f *File) SourceSHA256() (sum string, ok bool) {
	sum, ok = f.KV[keySourceSHA256].(string)
	return sum, ok
}

// ModelConfig checks that the file is a niels-gpt generation 1 model as Write writes it
// (architecture, generation, every hyper-parameter key with its type, the tokenizer and
// chat format, and exactly the expected tensors with their dims and types) and returns
// its hyper-parameters. Every key it reads is required, the LayerNorm epsilon included:
// the writer has written all of them since its first version, so no file needs a default.
func (f *File) ModelConfig() (ModelConfig, error) {
	cfg, err := f.hyperParameters()
	if err != nil {
		return cfg, err
	}
	if err := f.wantString(keyTokenizer, tokenizer); err != nil {
		return cfg, err
	}
	if err := f.wantString(keyChatFormat, chatFormat); err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, f.checkTensors(cfg)
}

// hyperParameters reads the architecture, generation and model keys, each with the type
// the writer gives it.
func (f *File) hyperParameters() (ModelConfig, error) {
	var cfg ModelConfig
	if err := f.wantString(keyArchitecture, architecture); err != nil {
		return cfg, err
	}
	gen, err := metadata[uint32](f, keyGeneration)
	if err != nil {
		return cfg, err
	}
	if gen != 1 {
		return cfg, fmt.Errorf("%s is %d; this build supports generation 1", keyGeneration, gen)
	}
	for _, field := range []struct {
		key string
		dst *int
	}{
		{keyVocab, &cfg.Vocab}, {keyContext, &cfg.Context}, {keyEmbd, &cfg.Embd},
		{keyLayers, &cfg.Layers}, {keyHeads, &cfg.Heads}, {keyFF, &cfg.FF},
	} {
		v, err := metadata[uint32](f, field.key)
		if err != nil {
			return cfg, err
		}
		*field.dst = int(v)
	}
	for _, field := range []struct {
		key string
		dst *float64
	}{{keyRopeTheta, &cfg.RopeTheta}, {keyNormEps, &cfg.NormEps}} {
		v, err := metadata[float32](f, field.key)
		if err != nil {
			return cfg, err
		}
		*field.dst = float64(v)
	}
	return cfg, nil
}

// checkTensors requires exactly the tensor table of cfg: every tensor present with its
// dims and an allowed type, and nothing else.
func (f *File) checkTensors(cfg ModelConfig) error {
	have := make(map[string]*TensorInfo, len(f.Tensors))
	for i := range f.Tensors {
		have[f.Tensors[i].Name] = &f.Tensors[i]
	}
	specs := cfg.Tensors()
	for _, spec := range specs {
		t, ok := have[spec.Name]
		if !ok {
			return fmt.Errorf("tensor %s is missing", spec.Name)
		}
		want := spec.Dims()
		if !slices.Equal(t.Dims, want) {
			return fmt.Errorf("tensor %s has dims %v, want %v", spec.Name, t.Dims, want)
		}
		if !spec.allows(t.Type) {
			return fmt.Errorf("tensor %s has type %d; vectors must be F32", spec.Name, t.Type)
		}
	}
	if len(f.Tensors) != len(specs) {
		for _, t := range f.Tensors {
			if !cfg.hasTensor(t.Name) {
				return fmt.Errorf("unexpected tensor %s", t.Name)
			}
		}
	}
	return nil
}

func (f *File) wantString(key, want string) error {
	s, err := metadata[string](f, key)
	if err != nil {
		return err
	}
	if s != want {
		return fmt.Errorf("metadata %s is %q, want %q", key, s, want)
	}
	return nil
}

// metadata reads a required key whose value must be of type T.
func metadata[T any](f *File, key string) (T, error) {
	var zero T
	v, ok := f.KV[key]
	if !ok {
		return zero, fmt.Errorf("metadata %s is missing", key)
	}
	x, ok := v.(T)
	if !ok {
		return zero, fmt.Errorf("metadata %s is a %T, want %T", key, v, zero)
	}
	return x, nil
}
