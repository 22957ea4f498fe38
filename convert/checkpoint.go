// Package convert reads niels-gpt generation 1 checkpoints (`best.pt`, SPEC §1) without
// Python and without executing anything from the file, and writes and checks the GGUF
// files the engine loads.
//
// This file turns an unpickled torch.save dict into a Checkpoint (config, float32
// weights, step, best validation loss) and validates it against the SPEC's table of
// state-dict keys and shapes.
package convert

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
)

// ModelConfig is `model_cfg` (SPEC §1). Dropout is recorded but unused at inference.
type ModelConfig struct {
	V, T, C, L, H, DFF int
	Dropout, RopeTheta float64
}

// Tensor is a contiguous row-major float32 array with PyTorch's shape.
type Tensor struct {
	Shape []int
	Data  []float32
}

// Checkpoint is what a niels-gpt generation 1 `best.pt` holds that inference needs.
// Tensors holds `model_state`, with the keys of the SPEC §1 table (a torch.compile
// `_orig_mod.` or DataParallel `module.` prefix, when every key has it, is removed).
type Checkpoint struct {
	Config      ModelConfig
	Tensors     map[string]*Tensor
	Step        int64
	BestValLoss *float64
}

// Bounds on hyper-parameters: generous for this model family, and small enough that
// products of them (parameter counts, GGUF dims) cannot overflow.
const (
	maxContext = 1 << 20
	maxWidth   = 1 << 16
	maxLayers  = 1 << 10
	maxFF      = 1 << 20
)

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
	if ck.Config, err = readConfig(cfgV); err != nil {
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

func readConfig(v any) (ModelConfig, error) {
	d, ok := v.(*pyDict)
	if !ok {
		return ModelConfig{}, fmt.Errorf("is a %s, want a dict", typeName(v))
	}
	var cfg ModelConfig
	for _, f := range []struct {
		key string
		dst *int
	}{{"V", &cfg.V}, {"T", &cfg.T}, {"C", &cfg.C}, {"L", &cfg.L}, {"H", &cfg.H}, {"d_ff", &cfg.DFF}} {
		x, ok := d.get(f.key)
		if !ok {
			return cfg, fmt.Errorf("missing %s", f.key)
		}
		n, err := asInt(x)
		if err != nil {
			return cfg, fmt.Errorf("%s: %w", f.key, err)
		}
		if n < 0 || n > math.MaxInt32 {
			return cfg, fmt.Errorf("%s = %d is out of range", f.key, n)
		}
		*f.dst = int(n)
	}
	x, ok := d.get("rope_theta")
	if !ok {
		return cfg, errors.New("missing rope_theta")
	}
	var err error
	if cfg.RopeTheta, err = asFloat(x); err != nil {
		return cfg, fmt.Errorf("rope_theta: %w", err)
	}
	if x, ok := d.get("dropout"); ok {
		if cfg.Dropout, err = asFloat(x); err != nil {
			return cfg, fmt.Errorf("dropout: %w", err)
		}
	}
	return cfg, nil
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

// validateConfig checks what generation 1 requires of its hyper-parameters; it is shared
// by Checkpoint.Validate and GGUF.NielsGPTConfig so both sides agree.
func validateConfig(c ModelConfig) error {
	if c.V != 256 {
		return fmt.Errorf("vocab size V=%d: generation 1 is byte-level and needs V=256", c.V)
	}
	for _, f := range []struct {
		name     string
		val, max int
	}{{"T", c.T, maxContext}, {"C", c.C, maxWidth}, {"L", c.L, maxLayers}, {"H", c.H, maxWidth}, {"d_ff", c.DFF, maxFF}} {
		if f.val < 1 || f.val > f.max {
			return fmt.Errorf("%s=%d is out of range (1..%d)", f.name, f.val, f.max)
		}
	}
	if c.C%c.H != 0 {
		return fmt.Errorf("C=%d is not divisible by H=%d", c.C, c.H)
	}
	if d := c.C / c.H; d%2 != 0 {
		return fmt.Errorf("head size C/H=%d is odd: rotary embedding rotates pairs", d)
	}
	if math.IsNaN(c.RopeTheta) || math.IsInf(c.RopeTheta, 0) || c.RopeTheta <= 0 || c.RopeTheta > math.MaxFloat32 {
		return fmt.Errorf("rope_theta=%g is not a usable rotary base (want a finite number > 0)", c.RopeTheta)
	}
	return nil
}

// stateTensor is one row of the SPEC §1 table: a state-dict key, its PyTorch shape,
// and the GGUF tensor it becomes ("" for lm_head, which is tied and not stored).
type stateTensor struct {
	key   string
	shape []int
	gguf  string
}

// stateTable lists every tensor of generation 1 in the order GGUF files store them.
func stateTable(c ModelConfig) []stateTensor {
	C, V, F := c.C, c.V, c.DFF
	rows := []stateTensor{{"tok_emb.weight", []int{V, C}, "token_embd.weight"}}
	for i := 0; i < c.L; i++ {
		p, g := fmt.Sprintf("blocks.%d.", i), fmt.Sprintf("blk.%d.", i)
		rows = append(rows,
			stateTensor{p + "ln1.weight", []int{C}, g + "attn_norm.weight"},
			stateTensor{p + "ln1.bias", []int{C}, g + "attn_norm.bias"},
			stateTensor{p + "attn.qkv.weight", []int{3 * C, C}, g + "attn_qkv.weight"},
			stateTensor{p + "attn.proj.weight", []int{C, C}, g + "attn_output.weight"},
			stateTensor{p + "ln2.weight", []int{C}, g + "ffn_norm.weight"},
			stateTensor{p + "ln2.bias", []int{C}, g + "ffn_norm.bias"},
			stateTensor{p + "mlp.fc1.weight", []int{F, C}, g + "ffn_up.weight"},
			stateTensor{p + "mlp.fc1.bias", []int{F}, g + "ffn_up.bias"},
			stateTensor{p + "mlp.fc2.weight", []int{C, F}, g + "ffn_down.weight"},
			stateTensor{p + "mlp.fc2.bias", []int{C}, g + "ffn_down.bias"},
		)
	}
	return append(rows,
		stateTensor{"ln_f.weight", []int{C}, "output_norm.weight"},
		stateTensor{"ln_f.bias", []int{C}, "output_norm.bias"},
		stateTensor{"lm_head.weight", []int{V, C}, ""},
	)
}

// Validate checks the checkpoint against SPEC §1 exactly and names the first problem:
// the hyper-parameters, every expected key present with its exact shape, no other
// keys, the output head tied to the embedding (the GGUF stores the embedding once),
// and finite weights.
func (c *Checkpoint) Validate() error {
	if err := validateConfig(c.Config); err != nil {
		return fmt.Errorf("model_cfg: %w", err)
	}
	if c.Step < 0 {
		return fmt.Errorf("step=%d is negative", c.Step)
	}
	table := stateTable(c.Config)
	expected := make(map[string]bool, len(table))
	for _, row := range table {
		expected[row.key] = true
		t, ok := c.Tensors[row.key]
		if !ok || t == nil {
			return fmt.Errorf("model_state is missing %s", row.key)
		}
		if !sameShape(t.Shape, row.shape) {
			return fmt.Errorf("model_state %s has shape %v, want %v", row.key, t.Shape, row.shape)
		}
		if len(t.Data) != numelOf(row.shape) {
			return fmt.Errorf("model_state %s has %d values for shape %v", row.key, len(t.Data), t.Shape)
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
		return fmt.Errorf("model_state has unexpected tensor %s (not part of niels-gpt generation 1)", unexpected[0])
	}
	emb, head := c.Tensors["tok_emb.weight"].Data, c.Tensors["lm_head.weight"].Data
	for i := range emb {
		if math.Float32bits(emb[i]) != math.Float32bits(head[i]) {
			return fmt.Errorf("lm_head.weight differs from tok_emb.weight (first at element %d): generation 1 ties them and the GGUF stores only the embedding", i)
		}
	}
	for _, row := range table {
		for i, v := range c.Tensors[row.key].Data {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("model_state %s has a non-finite value (%v) at element %d", row.key, v, i)
			}
		}
	}
	return nil
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

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func numelOf(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}
