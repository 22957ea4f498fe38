package convert

// Checkpoints made in memory rather than read from a file: benchmarks, fuzz
// seeds and tests need models of shapes no real checkpoint has.

import "nielsgpt/gguf"

// SyntheticCheckpoint builds a generation-1 checkpoint of shape cfg whose
// weights come from value, called once per element in state-table order.
// lm_head.weight is the same tensor as tok_emb.weight, as in a real one.
// cfg.NormEps is taken as given; a checkpoint read from a file has LayerNormEps.
func SyntheticCheckpoint(cfg gguf.ModelConfig, value func() float32) *Checkpoint {
	ck := &Checkpoint{Config: cfg, Tensors: map[string]*Tensor{}}
	for _, spec := range cfg.Tensors() {
		data := make([]float32, numelOf(spec.Shape))
		for i := range data {
			data[i] = value()
		}
		ck.Tensors[spec.StateKey] = &Tensor{Shape: append([]int(nil), spec.Shape...), Data: data}
	}
	ck.Tensors["lm_head.weight"] = ck.Tensors["tok_emb.weight"]
	return ck
}
