// Package gguf reads and writes GGUF files and owns the niels-gpt schema on top of the
// format: the metadata keys, the tensor table and the one ModelConfig that the converter
// writes and the engine loads (docs/ARCHITECTURE.md).
package gguf

// The schema: what a niels-gpt file of either generation must hold, checked in one place so
// the writer and the reader cannot drift apart and the C engine can trust what it is handed.
// Generation 1 (LayerNorm, GELU, bytes) is the format every earlier file has, unchanged;
// generation 2 (RMSNorm, SwiGLU, a SentencePiece vocabulary stored in the file, vocab.go)
// adds keys and changes the tensor table.

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
	keyRMSNormEps        = "nielsgpt.attention.layer_norm_rms_epsilon" // generation 2: llama.cpp's name for an RMSNorm's
	keyNormType          = "nielsgpt.norm_type"                        // generation 2 only: "rmsnorm"
	keyMLPType           = "nielsgpt.mlp_type"                         // generation 2 only: "swiglu"
	keyTokenizer         = "tokenizer.ggml.model"
	keyChatFormat        = "nielsgpt.chat_format"
	keySourceSHA256      = "nielsgpt.source.sha256"
	keySourceStep        = "nielsgpt.source.step"
	keySourceBestValLoss = "nielsgpt.source.best_val_loss"

	architecture   = "nielsgpt"
	bytesTokenizer = "bytes"
	chatFormat     = "niels-v1"
	// chatFormatTokens is generation 2's token-native chat: each message is its role's
	// special piece (system 3, user 4, assistant 5), the encoded content and end-of-turn
	// (6); the reader checks that those ids hold those pieces (vocab.go).
	chatFormatTokens = "niels-v2"
)

// NormType is the normalisation every block and the final norm use.
type NormType uint8

const (
	// LayerNorm with weight and bias (generation 1). The zero value, so that a
	// ModelConfig written before generation 2 existed still describes generation 1.
	NormLayer NormType = iota
	// RMSNorm with a weight and no bias: x / sqrt(mean(x²) + eps) * weight (generation 2).
	NormRMS
)

func (n NormType) String() string {
	if n == NormRMS {
		return "rmsnorm"
	}
	return "layernorm"
}

// MLPType is the feed-forward block.
type MLPType uint8

const (
	// MLPGELU is fc2(GELU(fc1(x))), exact erf GELU (generation 1); the zero value.
	MLPGELU MLPType = iota
	// MLPSwiGLU is fc_out(silu(fc_g(x)) * fc_a(x)), all three with biases (generation 2).
	MLPSwiGLU
)

func (m MLPType) String() string {
	if m == MLPSwiGLU {
		return "swiglu"
	}
	return "gelu"
}

// ModelConfig is a niels-gpt model's hyper-parameters: the checkpoint's model_cfg plus
// the norm epsilon, which the GGUF records and the checkpoint leaves implicit, and the
// norm and MLP types, which the generation implies. The comments give the checkpoint's
// names. The zero Norm and MLP are generation 1's, so a config that does not mention
// them is a generation-1 config.
type ModelConfig struct {
	Vocab     int     // V
	Context   int     // T: the window the model sees
	Embd      int     // C
	Layers    int     // L
	Heads     int     // H
	FF        int     // d_ff
	RopeTheta float64 // rope_theta; stored as float32
	NormEps   float64 // every norm's epsilon; stored as float32
	Norm      NormType
	MLP       MLPType
}

// HeadDim is D = C/H.
func (c ModelConfig) HeadDim() int { return c.Embd / c.Heads }

// Generation is 2 for an RMSNorm model and 1 otherwise; Validate refuses the mixtures
// no generation has.
func (c ModelConfig) Generation() int {
	if c.Norm == NormRMS {
		return 2
	}
	return 1
}

// Bounds on hyper-parameters: generous for this model family, and small enough that
// products of them (parameter counts, GGUF dims) cannot overflow.
const (
	maxContext = 1 << 20
	maxWidth   = 1 << 16
	maxLayers  = 1 << 10
	maxFF      = 1 << 20
	maxVocab   = 1 << 20 // the tokenizer package's own cap on pieces
)

// Validate checks what the model's generation requires of its hyper-parameters. The
// converter checks a checkpoint with it and the reader a file, so both refuse the same
// models, with the checkpoint's names in the message.
func (c ModelConfig) Validate() error {
	switch {
	case c.Norm == NormLayer && c.MLP == MLPGELU:
		if c.Vocab != 256 {
			return fmt.Errorf("vocab size V=%d: generation 1 is byte-level and needs V=256", c.Vocab)
		}
	case c.Norm == NormRMS && c.MLP == MLPSwiGLU:
		// The chat pieces sit at ids 3..6; the vocabulary itself is checked where it is read.
		if c.Vocab < 7 || c.Vocab > maxVocab {
			return fmt.Errorf("vocab size V=%d is out of range for generation 2 (7..%d)", c.Vocab, maxVocab)
		}
	default:
		return fmt.Errorf("norm %s with MLP %s is not a niels-gpt generation (1: layernorm+gelu, 2: rmsnorm+swiglu)", c.Norm, c.MLP)
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

// Tensors is the tensor table of a model of this shape and generation, in the order GGUF
// files store them. The output head is tied to the token embedding and not stored. The
// names are llama.cpp's where one fits; in generation 2, ffn_gate is SwiGLU's silu branch
// (fc_g), ffn_up its linear branch (fc_a) and ffn_down the projection back (fc_out).
func (c ModelConfig) Tensors() []TensorSpec {
	C, V := c.Embd, c.Vocab
	rows := []TensorSpec{{"token_embd.weight", "tok_emb.weight", []int{V, C}}}
	for i := 0; i < c.Layers; i++ {
		g, p := fmt.Sprintf("blk.%d.", i), fmt.Sprintf("blocks.%d.", i)
		rows = append(rows, c.norm(g+"attn_norm", p+"ln1")...)
		rows = append(rows,
			TensorSpec{g + "attn_qkv.weight", p + "attn.qkv.weight", []int{3 * C, C}},
			TensorSpec{g + "attn_output.weight", p + "attn.proj.weight", []int{C, C}},
		)
		rows = append(rows, c.norm(g+"ffn_norm", p+"ln2")...)
		rows = append(rows, c.mlp(g, p+"mlp.")...)
	}
	return append(rows, c.norm("output_norm", "ln_f")...)
}

// norm is one norm's rows: weight and bias for LayerNorm, the weight alone for RMSNorm.
func (c ModelConfig) norm(name, key string) []TensorSpec {
	rows := []TensorSpec{{name + ".weight", key + ".weight", []int{c.Embd}}}
	if c.Norm == NormLayer {
		rows = append(rows, TensorSpec{name + ".bias", key + ".bias", []int{c.Embd}})
	}
	return rows
}

// mlp is one block's feed-forward rows; every Linear has a bias in both generations.
func (c ModelConfig) mlp(g, p string) []TensorSpec {
	C, F := c.Embd, c.FF
	linear := func(name, key string, out, in int) []TensorSpec {
		return []TensorSpec{
			{g + name + ".weight", p + key + ".weight", []int{out, in}},
			{g + name + ".bias", p + key + ".bias", []int{out}},
		}
	}
	if c.MLP == MLPSwiGLU {
		return slices.Concat(linear("ffn_gate", "fc_g", F, C), linear("ffn_up", "fc_a", F, C), linear("ffn_down", "fc_out", C, F))
	}
	return slices.Concat(linear("ffn_up", "fc1", F, C), linear("ffn_down", "fc2", C, F))
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

// ModelConfig checks that the file is a niels-gpt model as Write writes it (architecture,
// generation, every hyper-parameter key with its type, the tokenizer and chat format, and
// exactly the expected tensors with their dims and types) and returns its
// hyper-parameters. Every key it reads is required, the norm epsilon included: the writer
// has written all of them since its first version, so no file needs a default. For a
// generation-2 file it also checks the stored vocabulary's shape (Tokenizer builds it).
func (f *File) ModelConfig() (ModelConfig, error) {
	cfg, err := f.hyperParameters()
	if err != nil || cfg.Generation() == 1 {
		if err == nil {
			err = f.checkGeneration1(cfg)
		}
		return cfg, err
	}
	if err := f.checkGeneration2(cfg); err != nil {
		// Say which generation the file claims: a file that claims the wrong one fails
		// on keys that would otherwise look merely missing.
		return cfg, fmt.Errorf("%s is 2, but %w", keyGeneration, err)
	}
	return cfg, nil
}

func (f *File) checkGeneration1(cfg ModelConfig) error {
	if err := f.wantString(keyTokenizer, bytesTokenizer); err != nil {
		return err
	}
	if err := f.wantString(keyChatFormat, chatFormat); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	return f.checkTensors(cfg)
}

func (f *File) checkGeneration2(cfg ModelConfig) error {
	if err := f.wantString(keyTokenizer, spmTokenizer); err != nil {
		return err
	}
	if err := f.wantString(keyChatFormat, chatFormatTokens); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := f.checkTensors(cfg); err != nil {
		return err
	}
	_, err := f.vocabulary(cfg.Vocab)
	return err
}

// hyperParameters reads the architecture, generation and model keys, each with the type
// the writer gives it. The generation decides the norm and MLP and which epsilon key
// holds the norm's epsilon.
func (f *File) hyperParameters() (ModelConfig, error) {
	var cfg ModelConfig
	if err := f.wantString(keyArchitecture, architecture); err != nil {
		return cfg, err
	}
	gen, err := metadata[uint32](f, keyGeneration)
	if err != nil {
		return cfg, err
	}
	epsKey := keyNormEps
	switch gen {
	case 1:
	case 2:
		// Generation 2 is exactly RMSNorm and SwiGLU; the keys say so for readers that
		// do not know the generations, and must agree.
		if err := f.wantString(keyNormType, NormRMS.String()); err != nil {
			return cfg, fmt.Errorf("%s is 2, but %w", keyGeneration, err)
		}
		if err := f.wantString(keyMLPType, MLPSwiGLU.String()); err != nil {
			return cfg, fmt.Errorf("%s is 2, but %w", keyGeneration, err)
		}
		cfg.Norm, cfg.MLP, epsKey = NormRMS, MLPSwiGLU, keyRMSNormEps
	default:
		return cfg, fmt.Errorf("%s is %d; this build supports generations 1 and 2", keyGeneration, gen)
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
	}{{keyRopeTheta, &cfg.RopeTheta}, {epsKey, &cfg.NormEps}} {
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
