// Package convert reads niels-gpt checkpoints (`best.pt`) of either generation without
// Python and without executing anything from the file, and converts them to the GGUF files
// the engine loads, which package gguf writes (docs/ARCHITECTURE.md). A generation-2
// checkpoint needs its SentencePiece tokenizer (spm.model, kept beside it), whose
// vocabulary the GGUF stores (tokenizer.go).
//
// This file turns an unpickled torch.save dict into a Checkpoint (config, float32
// weights, step, best validation loss, the tokenizer's recorded sha256) and validates it
// against its generation's table of state-dict keys and shapes.
package convert

import (
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strings"

	"nielsgpt/gguf"
)

// LayerNormEps is the epsilon of every norm in niels-gpt: generation 1's LayerNorms and
// generation 2's RMSNorms alike. best.pt does not record it (the training code builds
// each norm with eps=1e-5), so the reader supplies it, and the GGUF records it.
const LayerNormEps = 1e-5

// Tensor is a contiguous row-major float32 array with PyTorch's shape.
type Tensor struct {
	Shape []int
	Data  []float32
}

// Checkpoint is what a niels-gpt `best.pt` holds that inference needs. Tensors holds
// `model_state`, with the keys of stateTable (a torch.compile `_orig_mod.` or
// DataParallel `module.` prefix, when every key has it, is removed). Config's Norm and
// MLP say the generation, recognised from the keys.
type Checkpoint struct {
	Config      gguf.ModelConfig
	Dropout     float64 // model_cfg's dropout: unused at inference, so not in the GGUF
	Tensors     map[string]*Tensor
	Step        int64    // 0 when the checkpoint records None
	BestValLoss *float64 // nil when absent or None

	// TokenizerSHA256 is train_cfg._settings_meta.tokenizer_sha256: the sha256 of the
	// spm.model a generation-2 model was trained with; "" when not recorded.
	TokenizerSHA256 string
	// Vocab is a generation-2 model's tokenizer, attached by UseTokenizer; nil until then
	// and for generation 1.
	Vocab         *gguf.Vocabulary
	tokenizerPath string // where Vocab was read from, for messages
}

// ReadCheckpoint reads and decodes a checkpoint file. It does not Validate.
func ReadCheckpoint(path string) (*Checkpoint, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ck, err := ReadCheckpointBytes(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ck, nil
}

// ReadCheckpointBytes decodes a checkpoint held in memory. It does not Validate; it
// fails on anything it cannot read safely (unknown globals, inconsistent storages,
// non-float weights, a missing model_cfg or model_state).
func ReadCheckpointBytes(data []byte) (*Checkpoint, error) {
	tf, err := readTorchFile(data)
	if err != nil {
		return nil, err
	}
	top, ok := tf.root.(*pyDict)
	if !ok {
		return nil, fmt.Errorf("checkpoint is a %s, want the dict torch.save(dict(model_cfg=..., model_state=...)) writes", typeName(tf.root))
	}
	ck := &Checkpoint{Tensors: map[string]*Tensor{}}

	cfgV, ok := top.get("model_cfg")
	if !ok {
		return nil, errors.New("checkpoint has no model_cfg entry")
	}
	if ck.Config, ck.Dropout, err = readConfig(cfgV); err != nil {
		return nil, fmt.Errorf("model_cfg: %w", err)
	}

	if v, ok := top.get("step"); ok && v != nil {
		step, err := asInt(v)
		if err != nil {
			return nil, fmt.Errorf("step: %w", err)
		}
		ck.Step = step
	}
	if v, ok := top.get("best_val_loss"); ok && v != nil {
		f, err := scalarFloat(v, tf)
		if err != nil {
			return nil, fmt.Errorf("best_val_loss: %w", err)
		}
		ck.BestValLoss = &f
	}

	stateV, ok := top.get("model_state")
	if !ok {
		return nil, errors.New("checkpoint has no model_state entry")
	}
	state, ok := stateV.(*pyDict)
	if !ok {
		return nil, fmt.Errorf("model_state is a %s, want a state dict", typeName(stateV))
	}
	names := make([]string, len(state.keys))
	for i, k := range state.keys {
		name, ok := k.(string)
		if !ok {
			return nil, fmt.Errorf("model_state key %d is %s, want a string", i, typeName(k))
		}
		names[i] = name
	}
	prefix := wrapperPrefix(names)
	if err := recogniseGeneration(&ck.Config, names, cfgV); err != nil {
		return nil, err
	}
	if ck.TokenizerSHA256, err = recordedTokenizerSHA256(top); err != nil {
		return nil, err
	}

	// Materialize only model_state; what may be allocated is bounded by what the
	// file holds (tied weights read the same storage twice, hence the factor 2).
	budget := int64(1 << 16)
	for _, st := range tf.storages {
		budget += 2 * st.numel
	}
	for i, name := range names {
		ref, ok := state.values[i].(*tensorRef)
		if !ok {
			return nil, fmt.Errorf("model_state[%q] is %s, want a tensor", name, typeName(state.values[i]))
		}
		if budget -= ref.numel(); budget < 0 {
			return nil, errors.New("model_state asks for more tensor data than the file holds")
		}
		data, err := ref.materialize(tf.source, tf.byteOrder)
		if err != nil {
			return nil, fmt.Errorf("model_state[%q]: %w", name, err)
		}
		shape := make([]int, len(ref.shape))
		for d, n := range ref.shape {
			shape[d] = int(n)
		}
		ck.Tensors[strings.TrimPrefix(name, prefix)] = &Tensor{Shape: shape, Data: data}
	}
	return ck, nil
}

// wrapperPrefix returns the prefix that torch.compile (`_orig_mod.`) or DataParallel
// (`module.`) put on every key of a wrapped model's state dict, or "".
func wrapperPrefix(names []string) string {
	if len(names) == 0 {
		return ""
	}
	prefix := ""
	for _, p := range []string{"module.", "_orig_mod."} {
		all := true
		for _, n := range names {
			if !strings.HasPrefix(n, prefix+p) {
				all = false
				break
			}
		}
		if all {
			prefix += p
		}
	}
	return prefix
}

// readConfig reads model_cfg: the hyper-parameters and the dropout.
func readConfig(v any) (cfg gguf.ModelConfig, dropout float64, err error) {
	d, ok := v.(*pyDict)
	if !ok {
		return cfg, 0, fmt.Errorf("is a %s, want a dict", typeName(v))
	}
	for _, f := range []struct {
		key string
		dst *int
	}{{"V", &cfg.Vocab}, {"T", &cfg.Context}, {"C", &cfg.Embd}, {"L", &cfg.Layers}, {"H", &cfg.Heads}, {"d_ff", &cfg.FF}} {
		x, ok := d.get(f.key)
		if !ok {
			return cfg, 0, fmt.Errorf("missing %s", f.key)
		}
		n, err := asInt(x)
		if err != nil {
			return cfg, 0, fmt.Errorf("%s: %w", f.key, err)
		}
		if n < 0 || n > math.MaxInt32 {
			return cfg, 0, fmt.Errorf("%s = %d is out of range", f.key, n)
		}
		*f.dst = int(n)
	}
	x, ok := d.get("rope_theta")
	if !ok {
		return cfg, 0, errors.New("missing rope_theta")
	}
	if cfg.RopeTheta, err = asFloat(x); err != nil {
		return cfg, 0, fmt.Errorf("rope_theta: %w", err)
	}
	cfg.NormEps = LayerNormEps
	if x, ok := d.get("dropout"); ok {
		if dropout, err = asFloat(x); err != nil {
			return cfg, 0, fmt.Errorf("dropout: %w", err)
		}
	}
	return cfg, dropout, nil
}

func asFloat(v any) (float64, error) {
	switch x := v.(type) {
	case float64:
		return x, nil
	case int64:
		return float64(x), nil
	}
	return 0, fmt.Errorf("%s where a number was expected", typeName(v))
}

// scalarFloat accepts a number or a one-element float tensor (a loss saved with
// loss.detach() rather than loss.item()).
func scalarFloat(v any, tf *torchFile) (float64, error) {
	if t, ok := v.(*tensorRef); ok {
		if t.numel() != 1 {
			return 0, fmt.Errorf("tensor of shape %v, want a single number", t.shape)
		}
		data, err := t.materialize(tf.source, tf.byteOrder)
		if err != nil {
			return 0, err
		}
		return float64(data[0]), nil
	}
	return asFloat(v)
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

// stateTable lists every model_state tensor of generation 1: the GGUF's tensor table,
// in the order GGUF files store them, then lm_head, whose Name is empty because it is
// tied to the embedding and not stored.
func stateTable(c gguf.ModelConfig) []gguf.TensorSpec {
	return append(c.Tensors(), gguf.TensorSpec{StateKey: "lm_head.weight", Shape: []int{c.Vocab, c.Embd}})
}

// Validate checks the checkpoint against its generation exactly and names the first
// problem: the hyper-parameters, every expected key present with its exact shape, no
// other keys, the output head tied to the embedding (the GGUF stores the embedding once),
// finite weights, and for generation 2 a tokenizer that fits the model (checkTokenizer).
func (c *Checkpoint) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return fmt.Errorf("model_cfg: %w", err)
	}
	if c.Step < 0 {
		return fmt.Errorf("step=%d is negative", c.Step)
	}
	table := stateTable(c.Config)
	expected := make(map[string]bool, len(table))
	for _, row := range table {
		expected[row.StateKey] = true
		t, ok := c.Tensors[row.StateKey]
		if !ok || t == nil {
			return fmt.Errorf("model_state is missing %s", row.StateKey)
		}
		if !slices.Equal(t.Shape, row.Shape) {
			return fmt.Errorf("model_state %s has shape %v, want %v", row.StateKey, t.Shape, row.Shape)
		}
		if len(t.Data) != numelOf(row.Shape) {
			return fmt.Errorf("model_state %s has %d values for shape %v", row.StateKey, len(t.Data), t.Shape)
		}
	}
	var unexpected []string
	for k := range c.Tensors {
		if !expected[k] {
			unexpected = append(unexpected, k)
		}
	}
	if len(unexpected) > 0 {
		sort.Strings(unexpected)
		return fmt.Errorf("model_state has unexpected tensor %s (not part of niels-gpt generation %d)", unexpected[0], c.Config.Generation())
	}
	emb, head := c.Tensors["tok_emb.weight"].Data, c.Tensors["lm_head.weight"].Data
	for i := range emb {
		if math.Float32bits(emb[i]) != math.Float32bits(head[i]) {
			return fmt.Errorf("lm_head.weight differs from tok_emb.weight (first at element %d): niels-gpt ties them and the GGUF stores only the embedding", i)
		}
	}
	for _, row := range table {
		for i, v := range c.Tensors[row.StateKey].Data {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("model_state %s has a non-finite value (%v) at element %d", row.StateKey, v, i)
			}
		}
	}
	return c.checkTokenizer()
}

// Params is the number of distinct parameters, counting the tied embedding once (what
// sum(p.numel() for p in model.parameters()) reports in PyTorch).
func (c *Checkpoint) Params() int64 {
	var n int64
	for k, t := range c.Tensors {
		if k != "lm_head.weight" {
			n += int64(len(t.Data))
		}
	}
	return n
}

func numelOf(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}
