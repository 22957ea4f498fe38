package gguf

// Strict GGUF reader. ggml's own parser asserts (aborting the whole process) on some
// malformed input, so the engine runs every file through Parse and File.ModelConfig
// first: every count and length is checked against the bytes actually present before
// anything is allocated, only known value and tensor types are accepted, and tensor data
// must be aligned, inside the file, non-overlapping and exactly as large as its dims say.

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

// TensorInfo describes one tensor of a parsed GGUF file.
type TensorInfo struct {
	Name   string
	Type   uint32   // ggml type: TypeF32 or TypeF16
	Dims   []uint64 // ggml order: ne0 (the contiguous dimension) first
	Offset int64    // absolute byte offset of the data from the start of the file
	Size   int64    // bytes: product(Dims) × element size
}

// File is a parsed GGUF file. KV values are uint8, int8, uint16, int16, uint32, int32,
// float32, bool, string, uint64, int64, float64, or a slice of one of those
// ([]string, []uint32, ...) for arrays.
type File struct {
	Version   uint32
	KV        map[string]any
	Tensors   []TensorInfo
	Alignment int
}

// Limits of the parser. ggml's own names are at most 63 bytes (GGML_MAX_NAME is 64 with
// the terminator) and tensors have at most 4 dimensions.
const (
	maxNameLen   = 63
	maxDims      = 4
	maxKeyLen    = 1 << 16
	maxKV        = 1 << 16
	maxTensors   = 1 << 20
	maxAlignment = 1 << 16
)

// ReadFile reads a whole GGUF file and parses it.
func ReadFile(path string) ([]byte, *File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	f, err := Parse(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, f, nil
}

type reader struct {
	data []byte
	pos  int
}

func (r *reader) left() uint64 { return uint64(len(r.data) - r.pos) }

func (r *reader) take(n uint64, what string) ([]byte, error) {
	if n > r.left() {
		return nil, fmt.Errorf("%s: %d bytes needed at offset %d, only %d left", what, n, r.pos, r.left())
	}
	b := r.data[r.pos : r.pos+int(n)]
	r.pos += int(n)
	return b, nil
}

func (r *reader) u8(what string) (uint8, error) {
	b, err := r.take(1, what)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (r *reader) u16(what string) (uint16, error) {
	b, err := r.take(2, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b), nil
}

func (r *reader) u32(what string) (uint32, error) {
	b, err := r.take(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (r *reader) u64(what string) (uint64, error) {
	b, err := r.take(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (r *reader) str(what string, maxLen uint64) (string, error) {
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

// Parse parses and checks a GGUF v3 file held in memory. Tensor data is not
// copied: Offset and Size locate it in data.
func Parse(data []byte) (*File, error) {
	r := &reader{data: data}
	if len(data) < 4 || string(data[:4]) != magic {
		return nil, errors.New("not a GGUF file (no GGUF magic)")
	}
	r.pos = 4
	version, err := r.u32("version")
	if err != nil {
		return nil, err
	}
	if version != version3 {
		if bits.ReverseBytes32(version) == version3 {
			return nil, errors.New("big-endian GGUF files are not supported")
		}
		return nil, fmt.Errorf("GGUF version %d is not supported (want %d)", version, version3)
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
	if nKV > maxKV || nKV > r.left()/14 {
		return nil, fmt.Errorf("metadata count %d is impossible for a file of %d bytes", nKV, len(data))
	}
	if nTensors > maxTensors || nTensors > r.left()/33 {
		return nil, fmt.Errorf("tensor count %d is impossible for a file of %d bytes", nTensors, len(data))
	}

	f := &File{Version: version, Alignment: defaultAlignment}
	if f.KV, err = r.metadata(nKV); err != nil {
		return nil, err
	}
	if a, ok := f.KV["general.alignment"]; ok {
		al, ok := a.(uint32)
		if !ok || al == 0 || al&(al-1) != 0 || al > maxAlignment {
			return nil, fmt.Errorf("general.alignment %v is not a power of two uint32 up to %d", a, maxAlignment)
		}
		f.Alignment = int(al)
	}
	rel, err := r.tensorInfos(f, nTensors)
	if err != nil {
		return nil, err
	}
	if err := f.placeTensors(rel, int64(r.pos), int64(len(data))); err != nil {
		return nil, err
	}
	return f, nil
}

// metadata reads n key-value pairs; a key may appear only once.
func (r *reader) metadata(n uint64) (map[string]any, error) {
	kv := make(map[string]any, n)
	for i := uint64(0); i < n; i++ {
		key, err := r.str(fmt.Sprintf("metadata key %d", i), maxKeyLen)
		if err != nil {
			return nil, err
		}
		if key == "" {
			return nil, fmt.Errorf("metadata key %d is empty", i)
		}
		if _, dup := kv[key]; dup {
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
		kv[key] = v
	}
	return kv, nil
}

// tensorInfos reads n tensor infos into f.Tensors and returns their data offsets,
// relative to the data section, for placeTensors to check.
func (r *reader) tensorInfos(f *File, n uint64) ([]uint64, error) {
	fileSize := uint64(len(r.data))
	names := make(map[string]bool, n)
	rel := make([]uint64, 0, n)
	for i := uint64(0); i < n; i++ {
		name, err := r.str(fmt.Sprintf("tensor %d name", i), maxNameLen)
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
		if nDims < 1 || nDims > maxDims {
			return nil, fmt.Errorf("tensor %s has %d dimensions (1..%d)", name, nDims, maxDims)
		}
		t := TensorInfo{Name: name, Dims: make([]uint64, nDims)}
		elems := uint64(1)
		for d := range t.Dims {
			if t.Dims[d], err = r.u64(name); err != nil {
				return nil, err
			}
			hi, lo := bits.Mul64(elems, t.Dims[d])
			if t.Dims[d] == 0 || hi != 0 || lo > fileSize {
				return nil, fmt.Errorf("tensor %s dims %v do not fit in a file of %d bytes", name, t.Dims[:d+1], fileSize)
			}
			elems = lo
		}
		if t.Type, err = r.u32(name); err != nil {
			return nil, err
		}
		switch t.Type {
		case TypeF32, TypeF16:
		default:
			return nil, fmt.Errorf("tensor %s has ggml type %d (only F32=0 and F16=1)", name, t.Type)
		}
		t.Size = int64(elems) * typeSize(t.Type) // ≤ 4 × len(data): no overflow
		off, err := r.u64(name)
		if err != nil {
			return nil, err
		}
		rel = append(rel, off)
		f.Tensors = append(f.Tensors, t)
	}
	return rel, nil
}

// placeTensors turns the relative offsets into absolute ones, given where the tensor
// infos ended, and checks that every tensor is aligned, inside the file and clear of
// every other.
func (f *File) placeTensors(rel []uint64, infoEnd, fileSize int64) error {
	dataStart := alignUp(infoEnd, int64(f.Alignment))
	if dataStart > fileSize && len(f.Tensors) > 0 {
		return fmt.Errorf("tensor data would start at %d, past the end of the file (%d bytes)", dataStart, fileSize)
	}
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if rel[i]%uint64(f.Alignment) != 0 {
			return fmt.Errorf("tensor %s offset %d is not a multiple of the alignment %d", t.Name, rel[i], f.Alignment)
		}
		if rel[i] > uint64(fileSize) || uint64(dataStart)+rel[i]+uint64(t.Size) > uint64(fileSize) {
			return fmt.Errorf("tensor %s (%d bytes at data offset %d) runs past the end of the file (%d bytes)", t.Name, t.Size, rel[i], fileSize)
		}
		t.Offset = dataStart + int64(rel[i])
	}
	order := make([]int, len(f.Tensors))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return f.Tensors[order[a]].Offset < f.Tensors[order[b]].Offset })
	for i := 1; i < len(order); i++ {
		prev, cur := &f.Tensors[order[i-1]], &f.Tensors[order[i]]
		if prev.Offset+prev.Size > cur.Offset {
			return fmt.Errorf("tensors %s and %s overlap", prev.Name, cur.Name)
		}
	}
	return nil
}

// value reads one metadata value of type typ (arrays: one level, no arrays of arrays).
func (r *reader) value(key string, typ uint32) (any, error) {
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

func readArray(r *reader, key string, elem uint32, n int) (any, error) {
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

func arrayOf[T any](r *reader, key string, elem uint32, n int) ([]T, error) {
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
