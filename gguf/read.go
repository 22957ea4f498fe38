// Strict GGUF reader. ggml's own parser asserts (aborting the whole process) on some
// malformed input, so the engine runs every file through ParseGGUF and NielsGPTConfig
// first: every count and length is checked against the bytes actually present before
// anything is allocated, only known value and tensor types are accepted, and tensor data
// must be aligned, inside the file, non-overlapping and exactly as large as its dims say.
package convert

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"sort"
	"unicode/utf8"
)

// GGUFTensor describes one tensor of a parsed GGUF file.
type GGUFTensor struct {
	Name   string
	Type   uint32   // ggml type: 0 = F32, 1 = F16
	Dims   []uint64 // ggml order: ne0 (the contiguous dimension) first
	Offset int64    // absolute byte offset of the data from the start of the file
	Size   int64    // bytes: product(Dims) × element size
}

// GGUF is a parsed GGUF file. KV values are uint8, int8, uint16, int16, uint32, int32,
// float32, bool, string, uint64, int64, float64, or a slice of one of those
// ([]string, []uint32, ...) for arrays.
type GGUF struct {
	Version   uint32
	KV        map[string]any
	Tensors   []GGUFTensor
	Alignment int
}

// Limits of the parser. ggml's own names are at most 63 bytes (GGML_MAX_NAME is 64 with
// the terminator) and tensors have at most 4 dimensions.
const (
	ggufMaxNameLen   = 63
	ggufMaxDims      = 4
	ggufMaxKeyLen    = 1 << 16
	ggufMaxKV        = 1 << 16
	ggufMaxTensors   = 1 << 20
	ggufMaxAlignment = 1 << 16
)

// ReadGGUFFile reads a whole GGUF file and parses it.
func ReadGGUFFile(path string) ([]byte, *GGUF, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	g, err := ParseGGUF(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, g, nil
}

type ggufReader struct {
	data []byte
	pos  int
}

func (r *ggufReader) left() uint64 { return uint64(len(r.data) - r.pos) }

func (r *ggufReader) take(n uint64, what string) ([]byte, error) {
	if n > r.left() {
		return nil, fmt.Errorf("%s: %d bytes needed at offset %d, only %d left", what, n, r.pos, r.left())
	}
	b := r.data[r.pos : r.pos+int(n)]
	r.pos += int(n)
	return b, nil
}

func (r *ggufReader) u8(what string) (uint8, error) {
	b, err := r.take(1, what)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (r *ggufReader) u16(what string) (uint16, error) {
	b, err := r.take(2, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b), nil
}

func (r *ggufReader) u32(what string) (uint32, error) {
	b, err := r.take(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (r *ggufReader) u64(what string) (uint64, error) {
	b, err := r.take(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (r *ggufReader) str(what string, maxLen uint64) (string, error) {
	n, err := r.u64(what)
	if err != nil {
		return "", err
	}
	if n > maxLen {
		return "", fmt.Errorf("%s: string of %d bytes (max %d)", what, n, maxLen)
	}
	b, err := r.take(n, what)
	if err != nil {
		return "", err
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%s: not valid UTF-8", what)
	}
	return string(b), nil
}

// minValueSize is the fewest bytes a value of each type can occupy; counts are checked
// against it so an array cannot claim more items than the file has room for.
func minValueSize(t uint32) uint64 {
	switch t {
	case gvUint8, gvInt8, gvBool:
		return 1
	case gvUint16, gvInt16:
		return 2
	case gvUint32, gvInt32, gvFloat32:
		return 4
	case gvUint64, gvInt64, gvFloat64, gvString:
		return 8
	}
	return 0
}

// ParseGGUF parses and checks a GGUF v3 file held in memory. Tensor data is not
// copied: Offset and Size locate it in data.
func ParseGGUF(data []byte) (*GGUF, error) {
	r := &ggufReader{data: data}
	if len(data) < 4 || string(data[:4]) != ggufMagic {
		return nil, errors.New("not a GGUF file (no GGUF magic)")
	}
	r.pos = 4
	version, err := r.u32("version")
	if err != nil {
		return nil, err
	}
	if version != ggufVersion {
		if bits.ReverseBytes32(version) == ggufVersion {
			return nil, errors.New("big-endian GGUF files are not supported")
		}
		return nil, fmt.Errorf("GGUF version %d is not supported (want %d)", version, ggufVersion)
	}
	nTensors, err := r.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nKV, err := r.u64("metadata count")
	if err != nil {
		return nil, err
	}
	// A KV needs at least 8 (key length) + 1 (key) + 4 (type) + 1 (value) bytes, a
	// tensor info 8 + 1 + 4 + 8 + 4 + 8.
	if nKV > ggufMaxKV || nKV > r.left()/14 {
		return nil, fmt.Errorf("metadata count %d is impossible for a file of %d bytes", nKV, len(data))
	}
	if nTensors > ggufMaxTensors || nTensors > r.left()/33 {
		return nil, fmt.Errorf("tensor count %d is impossible for a file of %d bytes", nTensors, len(data))
	}

	g := &GGUF{Version: version, KV: make(map[string]any, nKV), Alignment: ggufDefaultAlignment}
	for i := uint64(0); i < nKV; i++ {
		key, err := r.str(fmt.Sprintf("metadata key %d", i), ggufMaxKeyLen)
		if err != nil {
			return nil, err
		}
		if key == "" {
			return nil, fmt.Errorf("metadata key %d is empty", i)
		}
		if _, dup := g.KV[key]; dup {
			return nil, fmt.Errorf("metadata key %s appears twice", key)
		}
		typ, err := r.u32(key)
		if err != nil {
			return nil, err
		}
		v, err := r.value(key, typ)
		if err != nil {
			return nil, err
		}
		g.KV[key] = v
	}
	if a, ok := g.KV["general.alignment"]; ok {
		al, ok := a.(uint32)
		if !ok || al == 0 || al&(al-1) != 0 || al > ggufMaxAlignment {
			return nil, fmt.Errorf("general.alignment %v is not a power of two uint32 up to %d", a, ggufMaxAlignment)
		}
		g.Alignment = int(al)
	}

	names := make(map[string]bool, nTensors)
	rel := make([]uint64, 0, nTensors)
	for i := uint64(0); i < nTensors; i++ {
		name, err := r.str(fmt.Sprintf("tensor %d name", i), ggufMaxNameLen)
		if err != nil {
			return nil, err
		}
		if name == "" || names[name] {
			return nil, fmt.Errorf("tensor %d name %q is empty or repeated", i, name)
		}
		names[name] = true
		nDims, err := r.u32(name)
		if err != nil {
			return nil, err
		}
		if nDims < 1 || nDims > ggufMaxDims {
			return nil, fmt.Errorf("tensor %s has %d dimensions (1..%d)", name, nDims, ggufMaxDims)
		}
		t := GGUFTensor{Name: name, Dims: make([]uint64, nDims)}
		elems := uint64(1)
		for d := range t.Dims {
			if t.Dims[d], err = r.u64(name); err != nil {
				return nil, err
			}
			hi, lo := bits.Mul64(elems, t.Dims[d])
			if t.Dims[d] == 0 || hi != 0 || lo > uint64(len(data)) {
				return nil, fmt.Errorf("tensor %s dims %v do not fit in a file of %d bytes", name, t.Dims[:d+1], len(data))
			}
			elems = lo
		}
		if t.Type, err = r.u32(name); err != nil {
			return nil, err
		}
		switch t.Type {
		case ggmlTypeF32, ggmlTypeF16:
		default:
			return nil, fmt.Errorf("tensor %s has ggml type %d (only F32=0 and F16=1)", name, t.Type)
		}
		t.Size = int64(elems) * ggmlTypeSize(t.Type) // ≤ 4 × len(data): no overflow
		off, err := r.u64(name)
		if err != nil {
			return nil, err
		}
		rel = append(rel, off)
		g.Tensors = append(g.Tensors, t)
	}

	dataStart := alignUp(int64(r.pos), int64(g.Alignment))
	if dataStart > int64(len(data)) && len(g.Tensors) > 0 {
		return nil, fmt.Errorf("tensor data would start at %d, past the end of the file (%d bytes)", dataStart, len(data))
	}
	for i := range g.Tensors {
		t := &g.Tensors[i]
		if rel[i]%uint64(g.Alignment) != 0 {
			return nil, fmt.Errorf("tensor %s offset %d is not a multiple of the alignment %d", t.Name, rel[i], g.Alignment)
		}
		if rel[i] > uint64(len(data)) || uint64(dataStart)+rel[i]+uint64(t.Size) > uint64(len(data)) {
			return nil, fmt.Errorf("tensor %s (%d bytes at data offset %d) runs past the end of the file (%d bytes)", t.Name, t.Size, rel[i], len(data))
		}
		t.Offset = dataStart + int64(rel[i])
	}
	order := make([]int, len(g.Tensors))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return g.Tensors[order[a]].Offset < g.Tensors[order[b]].Offset })
	for i := 1; i < len(order); i++ {
		prev, cur := &g.Tensors[order[i-1]], &g.Tensors[order[i]]
		if prev.Offset+prev.Size > cur.Offset {
			return nil, fmt.Errorf("tensors %s and %s overlap", prev.Name, cur.Name)
		}
	}
	return g, nil
}

// value reads one metadata value of type typ (arrays: one level, no arrays of arrays).
func (r *ggufReader) value(key string, typ uint32) (any, error) {
	switch typ {
	case gvUint8:
		return r.u8(key)
	case gvInt8:
		v, err := r.u8(key)
		return int8(v), err
	case gvUint16:
		return r.u16(key)
	case gvInt16:
		v, err := r.u16(key)
		return int16(v), err
	case gvUint32:
		return r.u32(key)
	case gvInt32:
		v, err := r.u32(key)
		return int32(v), err
	case gvFloat32:
		v, err := r.u32(key)
		return math.Float32frombits(v), err
	case gvBool:
		v, err := r.u8(key)
		if err == nil && v > 1 {
			return nil, fmt.Errorf("%s: bool byte %d (want 0 or 1)", key, v)
		}
		return v == 1, err
	case gvString:
		return r.str(key, r.left())
	case gvUint64:
		return r.u64(key)
	case gvInt64:
		v, err := r.u64(key)
		return int64(v), err
	case gvFloat64:
		v, err := r.u64(key)
		return math.Float64frombits(v), err
	case gvArray:
		elem, err := r.u32(key)
		if err != nil {
			return nil, err
		}
		n, err := r.u64(key)
		if err != nil {
			return nil, err
		}
		size := minValueSize(elem)
		if size == 0 {
			return nil, fmt.Errorf("%s: array of value type %d is not supported", key, elem)
		}
		if n > r.left()/size {
			return nil, fmt.Errorf("%s: array of %d items does not fit in the %d bytes left", key, n, r.left())
		}
		return readArray(r, key, elem, int(n))
	}
	return nil, fmt.Errorf("%s: unknown value type %d", key, typ)
}

func readArray(r *ggufReader, key string, elem uint32, n int) (any, error) {
	switch elem {
	case gvUint8:
		return arrayOf[uint8](r, key, elem, n)
	case gvInt8:
		return arrayOf[int8](r, key, elem, n)
	case gvUint16:
		return arrayOf[uint16](r, key, elem, n)
	case gvInt16:
		return arrayOf[int16](r, key, elem, n)
	case gvUint32:
		return arrayOf[uint32](r, key, elem, n)
	case gvInt32:
		return arrayOf[int32](r, key, elem, n)
	case gvFloat32:
		return arrayOf[float32](r, key, elem, n)
	case gvBool:
		return arrayOf[bool](r, key, elem, n)
	case gvString:
		return arrayOf[string](r, key, elem, n)
	case gvUint64:
		return arrayOf[uint64](r, key, elem, n)
	case gvInt64:
		return arrayOf[int64](r, key, elem, n)
	default: // gvFloat64; other types were refused by minValueSize
		return arrayOf[float64](r, key, elem, n)
	}
}

func arrayOf[T any](r *ggufReader, key string, elem uint32, n int) ([]T, error) {
	out := make([]T, n)
	for i := range out {
		v, err := r.value(key, elem)
		if err != nil {
			return nil, err
		}
		out[i] = v.(T)
	}
	return out, nil
}

// NielsGPTConfig checks that the file is a niels-gpt generation 1 model as WriteGGUF
// writes it (architecture, generation, every hyper-parameter key with its type, the
// tokenizer and chat format, and exactly the expected tensors with their dims) and
// returns its hyper-parameters. Dropout is not stored and is returned as 0.
func (g *GGUF) NielsGPTConfig() (ModelConfig, error) {
	var cfg ModelConfig
	if err := g.wantString("general.architecture", ggufArchitecture); err != nil {
		return cfg, err
	}
	gen, err := g.u32("nielsgpt.generation")
	if err != nil {
		return cfg, err
	}
	if gen != 1 {
		return cfg, fmt.Errorf("nielsgpt.generation is %d; this build supports generation 1", gen)
	}
	for _, f := range []struct {
		key string
		dst *int
	}{
		{"nielsgpt.vocab_size", &cfg.V}, {"nielsgpt.context_length", &cfg.T},
		{"nielsgpt.embedding_length", &cfg.C}, {"nielsgpt.block_count", &cfg.L},
		{"nielsgpt.attention.head_count", &cfg.H}, {"nielsgpt.feed_forward_length", &cfg.DFF},
	} {
		v, err := g.u32(f.key)
		if err != nil {
			return cfg, err
		}
		*f.dst = int(v)
	}
	theta, err := g.f32("nielsgpt.rope.freq_base")
	if err != nil {
		return cfg, err
	}
	cfg.RopeTheta = float64(theta)
	eps, err := g.f32("nielsgpt.attention.layer_norm_epsilon")
	if err != nil {
		return cfg, err
	}
	if !(eps > 0 && eps < 1) {
		return cfg, fmt.Errorf("nielsgpt.attention.layer_norm_epsilon %g is not a small positive number", eps)
	}
	if err := g.wantString("tokenizer.ggml.model", "bytes"); err != nil {
		return cfg, err
	}
	if err := g.wantString("nielsgpt.chat_format", ggufChatFormat); err != nil {
		return cfg, err
	}
	if err := validateConfig(cfg); err != nil {
		return cfg, err
	}

	have := make(map[string]*GGUFTensor, len(g.Tensors))
	for i := range g.Tensors {
		have[g.Tensors[i].Name] = &g.Tensors[i]
	}
	table := stateTable(cfg)
	expected := 0
	for _, row := range table {
		if row.gguf == "" {
			continue
		}
		expected++
		t, ok := have[row.gguf]
		if !ok {
			return cfg, fmt.Errorf("tensor %s is missing", row.gguf)
		}
		if len(t.Dims) != len(row.shape) {
			return cfg, fmt.Errorf("tensor %s has dims %v, want %v", row.gguf, t.Dims, reversedDims(row.shape))
		}
		for d := range t.Dims {
			if t.Dims[d] != uint64(row.shape[len(row.shape)-1-d]) {
				return cfg, fmt.Errorf("tensor %s has dims %v, want %v", row.gguf, t.Dims, reversedDims(row.shape))
			}
		}
		if len(t.Dims) == 1 && t.Type != ggmlTypeF32 {
			// Norm weights and biases are always F32 (see ConvertOptions); the engine
			// relies on it.
			return cfg, fmt.Errorf("tensor %s has type %d; vectors must be F32", row.gguf, t.Type)
		}
	}
	if len(g.Tensors) != expected {
		known := map[string]bool{}
		for _, row := range table {
			known[row.gguf] = true
		}
		for _, t := range g.Tensors {
			if !known[t.Name] {
				return cfg, fmt.Errorf("unexpected tensor %s", t.Name)
			}
		}
	}
	return cfg, nil
}

func reversedDims(shape []int) []uint64 {
	out := make([]uint64, len(shape))
	for i, d := range shape {
		out[len(shape)-1-i] = uint64(d)
	}
	return out
}

func (g *GGUF) wantString(key, want string) error {
	v, ok := g.KV[key]
	if !ok {
		return fmt.Errorf("metadata %s is missing", key)
	}
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("metadata %s is a %T, want a string", key, v)
	}
	if s != want {
		return fmt.Errorf("metadata %s is %q, want %q", key, s, want)
	}
	return nil
}

func (g *GGUF) u32(key string) (uint32, error) {
	v, ok := g.KV[key]
	if !ok {
		return 0, fmt.Errorf("metadata %s is missing", key)
	}
	n, ok := v.(uint32)
	if !ok {
		return 0, fmt.Errorf("metadata %s is a %T, want uint32", key, v)
	}
	return n, nil
}

func (g *GGUF) f32(key string) (float32, error) {
	v, ok := g.KV[key]
	if !ok {
		return 0, fmt.Errorf("metadata %s is missing", key)
	}
	f, ok := v.(float32)
	if !ok {
		return 0, fmt.Errorf("metadata %s is a %T, want float32", key, v)
	}
	return f, nil
}
