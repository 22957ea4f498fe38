// GGUF v3 writer: turns a validated Checkpoint into the file the engine loads.
//
// Layout (little-endian throughout): "GGUF", version u32, tensor count u64, KV count
// u64, the KV pairs, the tensor infos (name, dims in ggml order, type, offset relative
// to the data section), zero padding to the alignment, then each tensor's data padded
// to the alignment. The KV names and tensor names are a contract with the C engine
// (csrc) and are checked back by GGUF.NielsGPTConfig.
package convert

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
)

// GGUF constants from ggml's file-format documentation.
const (
	ggufMagic            = "GGUF"
	ggufVersion          = 3
	ggufDefaultAlignment = 32

	ggmlTypeF32 = 0
	ggmlTypeF16 = 1

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

// Names shared by the writer, NielsGPTConfig and the C engine.
const (
	ggufArchitecture = "nielsgpt"
	ggufChatFormat   = "niels-v1"
	ggufLayerNormEps = float32(1e-5)
)

// ConvertOptions selects the GGUF weight type: float32 by default; with F16 the
// matrices are stored as float16 (vectors stay float32, as llama.cpp does, because
// norms and biases are tiny and precision-sensitive).
type ConvertOptions struct{ F16 bool }

// Summary describes a finished conversion, for the command to print.
type Summary struct {
	Config ModelConfig
	Params int64
	SHA256 string
	Step   int64
}

// ggufKV is one metadata pair, in file order.
type ggufKV struct {
	key   string
	value any
}

// ggufTensorOut is one tensor to write: dims in ggml order (ne0 first).
type ggufTensorOut struct {
	name string
	typ  uint32
	dims []uint64
	data []float32
}

func (t *ggufTensorOut) size() int64 {
	n := int64(1)
	for _, d := range t.dims {
		n *= int64(d)
	}
	return n * ggmlTypeSize(t.typ)
}

func ggmlTypeSize(typ uint32) int64 {
	if typ == ggmlTypeF16 {
		return 2
	}
	return 4
}

// WriteGGUF validates ck and writes it as a GGUF v3 file. sourceSHA256 is the hex
// SHA-256 of the .pt file it came from, recorded so a GGUF can be traced to its source.
func WriteGGUF(w io.Writer, ck *Checkpoint, sourceSHA256 string, opts ConvertOptions) error {
	if err := ck.Validate(); err != nil {
		return err
	}
	if b, err := hex.DecodeString(sourceSHA256); err != nil || len(b) != sha256.Size || hex.EncodeToString(b) != sourceSHA256 {
		return fmt.Errorf("source sha256 %q is not 64 lowercase hex digits", sourceSHA256)
	}
	cfg := ck.Config
	fileType := uint32(fileTypeAllF32)
	if opts.F16 {
		fileType = fileTypeMostlyF16
	}
	kvs := []ggufKV{
		{"general.architecture", ggufArchitecture},
		{"general.name", "niels-gpt"},
		{"general.alignment", uint32(ggufDefaultAlignment)},
		{"general.file_type", fileType},
		{"nielsgpt.generation", uint32(1)},
		{"nielsgpt.vocab_size", uint32(cfg.V)},
		{"nielsgpt.context_length", uint32(cfg.T)},
		{"nielsgpt.embedding_length", uint32(cfg.C)},
		{"nielsgpt.block_count", uint32(cfg.L)},
		{"nielsgpt.attention.head_count", uint32(cfg.H)},
		{"nielsgpt.feed_forward_length", uint32(cfg.DFF)},
		{"nielsgpt.rope.freq_base", float32(cfg.RopeTheta)},
		{"nielsgpt.attention.layer_norm_epsilon", ggufLayerNormEps},
		{"tokenizer.ggml.model", "bytes"},
		{"nielsgpt.chat_format", ggufChatFormat},
		{"nielsgpt.source.sha256", sourceSHA256},
		{"nielsgpt.source.step", uint64(ck.Step)},
	}
	if ck.BestValLoss != nil {
		kvs = append(kvs, ggufKV{"nielsgpt.source.best_val_loss", float32(*ck.BestValLoss)})
	}
	var tensors []ggufTensorOut
	for _, row := range stateTable(cfg) {
		if row.gguf == "" {
			continue // lm_head: tied to token_embd, validated equal
		}
		t := ggufTensorOut{name: row.gguf, typ: ggmlTypeF32, data: ck.Tensors[row.key].Data}
		for i := len(row.shape) - 1; i >= 0; i-- {
			t.dims = append(t.dims, uint64(row.shape[i]))
		}
		if opts.F16 && len(row.shape) == 2 {
			t.typ = ggmlTypeF16
			// Check the range before writing a byte, so a refused F16 leaves no half file.
			for i, v := range t.data {
				if _, err := float32ToHalf(v); err != nil {
					return fmt.Errorf("%s element %d: %v (convert without --f16)", row.key, i, err)
				}
			}
		}
		tensors = append(tensors, t)
	}
	return writeGGUFRaw(w, kvs, tensors, ggufDefaultAlignment)
}

// writeGGUFRaw writes any KVs and tensors; WriteGGUF decides what they are, and tests
// use it to build files that deviate from the contract in one chosen way.
func writeGGUFRaw(w io.Writer, kvs []ggufKV, tensors []ggufTensorOut, alignment int64) error {
	bw := &posWriter{w: bufio.NewWriterSize(w, 1<<16)}
	bw.bytes([]byte(ggufMagic))
	bw.u32(ggufVersion)
	bw.u64(uint64(len(tensors)))
	bw.u64(uint64(len(kvs)))
	for _, kv := range kvs {
		bw.str(kv.key)
		if err := bw.value(kv.value, true); err != nil {
			return fmt.Errorf("gguf key %s: %w", kv.key, err)
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

func (p *posWriter) tensorData(t *ggufTensorOut) error {
	const chunk = 1 << 14
	buf := make([]byte, 0, chunk*4)
	for start := 0; start < len(t.data); start += chunk {
		end := min(start+chunk, len(t.data))
		buf = buf[:0]
		for _, v := range t.data[start:end] {
			if t.typ == ggmlTypeF16 {
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

// ConvertFile reads, validates and converts a checkpoint, writing the GGUF atomically:
// to a temporary file beside outPath that is synced and then renamed, so a failed or
// interrupted conversion never leaves a partial file under the final name.
func ConvertFile(inPath, outPath string, opts ConvertOptions) (*Summary, error) {
	data, err := os.ReadFile(inPath)
	if err != nil {
		return nil, err
	}
	if outInfo, err := os.Stat(outPath); err == nil {
		if inInfo, err := os.Stat(inPath); err == nil && os.SameFile(inInfo, outInfo) {
			return nil, errors.New("output path is the input checkpoint")
		}
	}
	sum := sha256.Sum256(data)
	shaHex := hex.EncodeToString(sum[:])
	ck, err := ReadCheckpointBytes(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", inPath, err)
	}
	data = nil // the weights are now in ck; let the file's bytes go before writing
	if err := ck.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", inPath, err)
	}

	dir, base := filepath.Split(outPath)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := WriteGGUF(tmp, ck, shaHex, opts); err != nil {
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		return nil, err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), outPath); err != nil {
		return nil, err
	}
	committed = true
	return &Summary{Config: ck.Config, Params: ck.Params(), SHA256: shaHex, Step: ck.Step}, nil
}
