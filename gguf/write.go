package gguf

// GGUF v3 writer: turns a model's hyper-parameters and weights into the file the engine
// loads.
//
// Layout (little-endian throughout): "GGUF", version u32, tensor count u64, KV count
// u64, the KV pairs, the tensor infos (name, dims in ggml order, type, offset relative
// to the data section), zero padding to the alignment, then each tensor's data padded
// to the alignment. What the file must hold is the schema (schema.go); File.ModelConfig
// checks it back.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// GGUF constants from ggml's file-format documentation.
const (
	magic            = "GGUF"
	version3         = 3
	defaultAlignment = 32

	// Value types of GGUF metadata.
	gvUint8   = 0
	gvInt8    = 1
	gvUint16  = 2
	gvInt16   = 3
	gvUint32  = 4
	gvInt32   = 5
	gvFloat32 = 6
	gvBool    = 7
	gvString  = 8
	gvArray   = 9
	gvUint64  = 10
	gvInt64   = 11
	gvFloat64 = 12

	// llama.cpp's general.file_type values, written so generic GGUF tools describe the file.
	fileTypeAllF32    = 0
	fileTypeMostlyF16 = 1
)

// The ggml tensor types a niels-gpt file may hold.
const (
	TypeF32 = 0
	TypeF16 = 1
)

// Source records where a file's weights came from, so a GGUF can be traced back to the
// checkpoint it was converted from.
type Source struct {
	SHA256      string   // hex SHA-256 of the checkpoint file: 64 lowercase digits
	Step        int64    // the training step the checkpoint was saved at
	BestValLoss *float64 // nil when the checkpoint does not record one
}

// WriteOptions selects the weight type: float32 by default; with F16 the matrices are
// stored as float16 (vectors stay float32: the schema allows F16 for matrices only).
type WriteOptions struct{ F16 bool }

// kv is one metadata pair, in file order.
type kv struct {
	key   string
	value any
}

// tensorOut is one tensor to write: dims in ggml order (ne0 first).
type tensorOut struct {
	name string
	typ  uint32
	dims []uint64
	data []float32
}

func (t *tensorOut) size() int64 {
	n := int64(1)
	for _, d := range t.dims {
		n *= int64(d)
	}
	return n * typeSize(t.typ)
}

func typeSize(typ uint32) int64 {
	if typ == TypeF16 {
		return 2
	}
	return 4
}

// Write writes a niels-gpt generation 1 GGUF v3 file. weights holds every tensor of
// cfg.Tensors() by its GGUF name, row-major in the tensor's PyTorch shape. Nothing is
// written when cfg, src or weights are refused, including a matrix that does not fit
// in float16 when opts.F16 asks for it. A generation-2 model is written with
// WriteWithVocabulary.
func Write(w io.Writer, cfg ModelConfig, weights map[string][]float32, src Source, opts WriteOptions) error {
	if cfg.Generation() != 1 {
		return errors.New("a generation-2 model carries its vocabulary: write it with WriteWithVocabulary")
	}
	return write(w, cfg, weights, nil, src, opts)
}

// WriteWithVocabulary writes a niels-gpt generation 2 GGUF v3 file: as Write, plus the
// tokenizer's vocabulary, which must have exactly cfg.Vocab pieces and the chat pieces
// at ids 3..6 (vocab.go).
func WriteWithVocabulary(w io.Writer, cfg ModelConfig, weights map[string][]float32, voc Vocabulary, src Source, opts WriteOptions) error {
	if cfg.Generation() != 2 {
		return errors.New("a generation-1 model is byte-level and stores no vocabulary: write it with Write")
	}
	return write(w, cfg, weights, &voc, src, opts)
}

func write(w io.Writer, cfg ModelConfig, weights map[string][]float32, voc *Vocabulary, src Source, opts WriteOptions) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if !isSHA256(src.SHA256) {
		return fmt.Errorf("source sha256 %q is not 64 lowercase hex digits", src.SHA256)
	}
	if src.Step < 0 {
		return fmt.Errorf("source step %d is negative", src.Step)
	}
	if voc != nil {
		if err := CheckVocabulary(voc, cfg.Vocab); err != nil {
			return err
		}
	}
	tensors, err := tensorsToWrite(cfg, weights, opts)
	if err != nil {
		return err
	}
	return writeRaw(w, metadataOf(cfg, voc, src, opts), tensors, defaultAlignment)
}

// metadataOf lists the KV pairs of a niels-gpt file, in file order. A generation-1 file's
// keys are exactly those it had before generation 2 existed.
func metadataOf(cfg ModelConfig, voc *Vocabulary, src Source, opts WriteOptions) []kv {
	fileType := uint32(fileTypeAllF32)
	if opts.F16 {
		fileType = fileTypeMostlyF16
	}
	kvs := []kv{
		{keyArchitecture, architecture},
		{"general.name", "niels-gpt"},
		{"general.alignment", uint32(defaultAlignment)},
		{"general.file_type", fileType},
		{keyGeneration, uint32(cfg.Generation())},
		{keyVocab, uint32(cfg.Vocab)},
		{keyContext, uint32(cfg.Context)},
		{keyEmbd, uint32(cfg.Embd)},
		{keyLayers, uint32(cfg.Layers)},
		{keyHeads, uint32(cfg.Heads)},
		{keyFF, uint32(cfg.FF)},
		{keyRopeTheta, float32(cfg.RopeTheta)},
	}
	if voc == nil {
		kvs = append(kvs,
			kv{keyNormEps, float32(cfg.NormEps)},
			kv{keyTokenizer, bytesTokenizer},
			kv{keyChatFormat, chatFormat})
	} else {
		kvs = append(kvs,
			kv{keyRMSNormEps, float32(cfg.NormEps)},
			kv{keyNormType, cfg.Norm.String()},
			kv{keyMLPType, cfg.MLP.String()})
		kvs = append(kvs, vocabularyKVs(voc)...)
		kvs = append(kvs, kv{keyChatFormat, chatFormatTokens})
	}
	kvs = append(kvs,
		kv{keySourceSHA256, src.SHA256},
		kv{keySourceStep, uint64(src.Step)})
	if src.BestValLoss != nil {
		kvs = append(kvs, kv{keySourceBestValLoss, float32(*src.BestValLoss)})
	}
	return kvs
}

// tensorsToWrite matches weights to the tensor table and picks each tensor's type.
func tensorsToWrite(cfg ModelConfig, weights map[string][]float32, opts WriteOptions) ([]tensorOut, error) {
	specs := cfg.Tensors()
	tensors := make([]tensorOut, 0, len(specs))
	for _, spec := range specs {
		data, ok := weights[spec.Name]
		if !ok {
			return nil, fmt.Errorf("no weights for tensor %s", spec.Name)
		}
		if len(data) != spec.numel() {
			return nil, fmt.Errorf("tensor %s has %d values for shape %v", spec.Name, len(data), spec.Shape)
		}
		t := tensorOut{name: spec.Name, typ: TypeF32, dims: spec.Dims(), data: data}
		if opts.F16 && spec.allows(TypeF16) {
			t.typ = TypeF16
			// Check the range before writing a byte, so a refused F16 leaves no half file.
			for i, v := range data {
				if _, err := float32ToHalf(v); err != nil {
					return nil, fmt.Errorf("%s (%s) element %d: %v (convert without --f16)", spec.Name, spec.StateKey, i, err)
				}
			}
		}
		tensors = append(tensors, t)
	}
	if len(weights) != len(specs) {
		for name := range weights {
			if !cfg.hasTensor(name) {
				return nil, fmt.Errorf("weights for %s, which is not a tensor of niels-gpt generation %d", name, cfg.Generation())
			}
		}
	}
	return tensors, nil
}

// writeRaw writes any KVs and tensors; Write decides what they are, and tests use it
// to build files that deviate from the contract in one chosen way.
func writeRaw(w io.Writer, kvs []kv, tensors []tensorOut, alignment int64) error {
	bw := &posWriter{w: bufio.NewWriterSize(w, 1<<16)}
	bw.bytes([]byte(magic))
	bw.u32(version3)
	bw.u64(uint64(len(tensors)))
	bw.u64(uint64(len(kvs)))
	for _, pair := range kvs {
		bw.str(pair.key)
		if err := bw.value(pair.value, true); err != nil {
			return fmt.Errorf("gguf key %s: %w", pair.key, err)
		}
	}
	offset := int64(0)
	for i := range tensors {
		t := &tensors[i]
		bw.str(t.name)
		bw.u32(uint32(len(t.dims)))
		for _, d := range t.dims {
			bw.u64(d)
		}
		bw.u32(t.typ)
		bw.u64(uint64(offset))
		offset = alignUp(offset+t.size(), alignment)
	}
	bw.pad(alignment)
	for i := range tensors {
		t := &tensors[i]
		if err := bw.tensorData(t); err != nil {
			return fmt.Errorf("gguf tensor %s: %w", t.name, err)
		}
		bw.pad(alignment)
	}
	if bw.err != nil {
		return bw.err
	}
	return bw.w.Flush()
}

func alignUp(n, alignment int64) int64 {
	return (n + alignment - 1) / alignment * alignment
}

// posWriter tracks the file position (for padding) and the first write error.
type posWriter struct {
	w   *bufio.Writer
	pos int64
	err error
	buf [8]byte
}

func (p *posWriter) bytes(b []byte) {
	if p.err != nil {
		return
	}
	n, err := p.w.Write(b)
	p.pos += int64(n)
	p.err = err
}

func (p *posWriter) u8(v uint8) { p.bytes([]byte{v}) }

func (p *posWriter) u16(v uint16) {
	binary.LittleEndian.PutUint16(p.buf[:], v)
	p.bytes(p.buf[:2])
}

func (p *posWriter) u32(v uint32) {
	binary.LittleEndian.PutUint32(p.buf[:], v)
	p.bytes(p.buf[:4])
}

func (p *posWriter) u64(v uint64) {
	binary.LittleEndian.PutUint64(p.buf[:], v)
	p.bytes(p.buf[:8])
}

func (p *posWriter) str(s string) {
	p.u64(uint64(len(s)))
	p.bytes([]byte(s))
}

func (p *posWriter) pad(alignment int64) {
	if n := alignUp(p.pos, alignment) - p.pos; n > 0 {
		p.bytes(make([]byte, n))
	}
}

// value writes a metadata value with its type tag (withType) or bare (array items).
func (p *posWriter) value(v any, withType bool) error {
	tag := func(t uint32) {
		if withType {
			p.u32(t)
		}
	}
	switch x := v.(type) {
	case uint8:
		tag(gvUint8)
		p.u8(x)
	case int8:
		tag(gvInt8)
		p.u8(uint8(x))
	case uint16:
		tag(gvUint16)
		p.u16(x)
	case int16:
		tag(gvInt16)
		p.u16(uint16(x))
	case uint32:
		tag(gvUint32)
		p.u32(x)
	case int32:
		tag(gvInt32)
		p.u32(uint32(x))
	case float32:
		tag(gvFloat32)
		p.u32(math.Float32bits(x))
	case bool:
		tag(gvBool)
		if x {
			p.u8(1)
		} else {
			p.u8(0)
		}
	case string:
		tag(gvString)
		p.str(x)
	case uint64:
		tag(gvUint64)
		p.u64(x)
	case int64:
		tag(gvInt64)
		p.u64(uint64(x))
	case float64:
		tag(gvFloat64)
		p.u64(math.Float64bits(x))
	case []string:
		return writeArray(p, gvString, x, withType)
	case []uint32:
		return writeArray(p, gvUint32, x, withType)
	case []int32:
		return writeArray(p, gvInt32, x, withType)
	case []float32:
		return writeArray(p, gvFloat32, x, withType)
	case []uint64:
		return writeArray(p, gvUint64, x, withType)
	case []int64:
		return writeArray(p, gvInt64, x, withType)
	case []uint8:
		return writeArray(p, gvUint8, x, withType)
	case []bool:
		return writeArray(p, gvBool, x, withType)
	default:
		return fmt.Errorf("value of type %T cannot be written", v)
	}
	return nil
}

func writeArray[T any](p *posWriter, elem uint32, items []T, withType bool) error {
	if !withType {
		return errors.New("arrays of arrays are not written")
	}
	p.u32(gvArray)
	p.u32(elem)
	p.u64(uint64(len(items)))
	for _, it := range items {
		if err := p.value(it, false); err != nil {
			return err
		}
	}
	return nil
}

func (p *posWriter) tensorData(t *tensorOut) error {
	const chunk = 1 << 14
	buf := make([]byte, 0, chunk*4)
	for start := 0; start < len(t.data); start += chunk {
		end := min(start+chunk, len(t.data))
		buf = buf[:0]
		for _, v := range t.data[start:end] {
			if t.typ == TypeF16 {
				h, err := float32ToHalf(v)
				if err != nil {
					return err
				}
				buf = binary.LittleEndian.AppendUint16(buf, h)
			} else {
				buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
			}
		}
		p.bytes(buf)
	}
	return p.err
}
