package convert

// Checkpoints made in memory rather than read from a file: benchmarks, fuzz
// seeds and tests need models of shapes no real checkpoint has.

// SyntheticCheckpoint builds a generation-1 checkpoint of shape cfg whose
// weights come from value, called once per element in state-table order.
// lm_head.weight is the same tensor as tok_emb.weight, as in a real one.
func SyntheticCheckpoint(cfg ModelConfig, value func() float32) *Checkpoint {
	ck := &Checkpoint{Config: cfg, Tensors: map[string]*Tensor{}}
	for _, row := range stateTable(cfg) {
		if row.gguf == "" {
			continue // the tied head, below
		}
		data := make([]float32, numelOf(row.shape))
		for i := range data {
			data[i] = value()
		}
		ck.Tensors[row.key] = &Tensor{Shape: append([]int(nil), row.shape...), Data: data}
	}
	ck.Tensors["lm_head.weight"] = ck.Tensors["tok_emb.weight"]
	return ck
}
