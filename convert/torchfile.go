package convert

// The two container formats torch.save writes, and the storages and tensor views
// inside them.
//
// Zip format (torch >= 1.6, the default): an uncompressed zip whose records all sit
// under one folder, <prefix>/data.pkl (the pickle), <prefix>/data/<key> (one raw
// storage per key), <prefix>/byteorder, <prefix>/version and a few markers. The pickle
// refers to storages through persistent ids ('storage', StorageType, key, location,
// numel).
//
// Legacy format (torch < 1.6, or _use_new_zipfile_serialization=False): five pickles
// back to back (magic number, protocol version, sys_info, the object, the list of
// storage keys) followed, for each key in that list, by an int64 element count and the
// storage's raw little-endian bytes.
//
// Tensors are read lazily: unpickling only records which storage, offset, shape and
// strides a tensor uses (tensorRef), so the optimizer state that sits beside the model
// in a checkpoint costs a few bytes of bookkeeping and its data is never copied.

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/big"
	"math/bits"
	"strconv"
)

// ---------------------------------------------------------------------------------------
// Element types
// ---------------------------------------------------------------------------------------

type dtypeInfo struct {
	name string // PyTorch's name, for messages
	size int64  // bytes per element
}

var (
	dtFloat32  = &dtypeInfo{"float32", 4}
	dtFloat16  = &dtypeInfo{"float16", 2}
	dtBFloat16 = &dtypeInfo{"bfloat16", 2}
)

// storageTypes maps the torch.*Storage class names that persistent ids carry to their
// element type. Non-float types appear in optimizer state and other entries; only
// float32/float16/bfloat16 may back model weights (see materialize).
var storageTypes = map[string]*dtypeInfo{
	"FloatStorage":         dtFloat32,
	"HalfStorage":          dtFloat16,
	"BFloat16Storage":      dtBFloat16,
	"DoubleStorage":        {"float64", 8},
	"LongStorage":          {"int64", 8},
	"IntStorage":           {"int32", 4},
	"ShortStorage":         {"int16", 2},
	"CharStorage":          {"int8", 1},
	"ByteStorage":          {"uint8", 1},
	"BoolStorage":          {"bool", 1},
	"ComplexFloatStorage":  {"complex64", 8},
	"ComplexDoubleStorage": {"complex128", 16},
	"UntypedStorage":       {"uint8", 1},
}

// torchDtypes are the dtype globals _rebuild_tensor_v3 may name.
var torchDtypes = map[string]bool{
	"float32": true, "float16": true, "bfloat16": true, "float64": true, "int64": true,
	"int32": true, "int16": true, "int8": true, "uint8": true, "bool": true,
	"float": true, "half": true, "double": true, "long": true, "int": true,
}

// ---------------------------------------------------------------------------------------
// Storages and views
// ---------------------------------------------------------------------------------------

// storageRef is one storage as the pickle describes it. Its bytes are fetched only when
// a tensor that uses it is materialized.
type storageRef struct {
	key   string
	dtype *dtypeInfo
	numel int64
	// base/baseOffset: legacy view storages (view_metadata) are windows onto a root.
	base       *storageRef
	baseOffset int64
	// raw bytes (nil until loaded), in the file's byte order.
	raw    []byte
	loaded bool
}

// tensorRef is a strided view of a storage: element i of the flattened tensor is
// storage[offset + Σ index_d · stride_d].
type tensorRef struct {
	storage *storageRef
	offset  int64
	shape   []int64
	stride  []int64
}

func (t *tensorRef) numel() int64 {
	n := int64(1)
	for _, d := range t.shape {
		n *= d // bounded by checkView before any use
	}
	return n
}

// rebuildTensor interprets torch._utils._rebuild_tensor{,_v2,_v3}:
// (storage, storage_offset, size, stride[, requires_grad, backward_hooks[, dtype]][, metadata]).
func rebuildTensor(fn pyGlobal, args pyTuple) (any, error) {
	want := map[globalKind]int{gRebuildTensor: 4, gRebuildTensorV2: 6, gRebuildTensorV3: 7}[fn.kind]
	if len(args) < want || len(args) > want+1 {
		return nil, fmt.Errorf("%s: want %d or %d arguments, got %d", fn, want, want+1, len(args))
	}
	st, ok := args[0].(*storageRef)
	if !ok {
		return nil, fmt.Errorf("%s: storage is %s", fn, typeName(args[0]))
	}
	offset, err := asInt(args[1])
	if err != nil {
		return nil, fmt.Errorf("%s: storage offset: %v", fn, err)
	}
	shape, err := intTuple(args[2])
	if err != nil {
		return nil, fmt.Errorf("%s: size: %v", fn, err)
	}
	stride, err := intTuple(args[3])
	if err != nil {
		return nil, fmt.Errorf("%s: stride: %v", fn, err)
	}
	t := &tensorRef{storage: st, offset: offset, shape: shape, stride: stride}
	if err := t.checkView(); err != nil {
		return nil, fmt.Errorf("%s: %v", fn, err)
	}
	if fn.kind == gRebuildTensorV3 {
		if g, ok := args[6].(pyGlobal); !ok || g.kind != gTorchDtype {
			return nil, fmt.Errorf("%s: dtype is %s", fn, typeName(args[6]))
		}
	}
	return t, nil
}

// Tensors larger than this many dimensions or elements are refused before any
// arithmetic on them; torch itself caps dimensions at 64.
const maxTensorDims = 64

// checkView proves that every element the view addresses lies inside its storage, with
// overflow-safe arithmetic, so materialize can index without further checks.
func (t *tensorRef) checkView() error {
	if len(t.shape) != len(t.stride) {
		return fmt.Errorf("size has %d dimensions but stride has %d", len(t.shape), len(t.stride))
	}
	if len(t.shape) > maxTensorDims {
		return fmt.Errorf("%d dimensions (max %d)", len(t.shape), maxTensorDims)
	}
	limit := t.storage.numel
	if t.offset < 0 || t.offset > limit {
		return fmt.Errorf("storage offset %d outside a storage of %d elements", t.offset, limit)
	}
	numel := int64(1)
	last := uint64(t.offset) // highest element index addressed
	for i, d := range t.shape {
		s := t.stride[i]
		if d < 0 || s < 0 {
			return fmt.Errorf("negative size or stride (%v, %v)", t.shape, t.stride)
		}
		if d == 0 {
			numel = 0
			continue
		}
		if numel != 0 {
			hi, lo := bits.Mul64(uint64(numel), uint64(d))
			if hi != 0 || lo > uint64(limit) {
				// A view never needs more elements than its storage holds (no expanded
				// weights in a state dict), and this bounds what materialize allocates.
				return fmt.Errorf("shape %v has more elements than its storage (%d)", t.shape, limit)
			}
			numel = int64(lo)
		}
		hi, lo := bits.Mul64(uint64(d-1), uint64(s))
		if hi != 0 || lo > uint64(limit) {
			return fmt.Errorf("shape %v with stride %v reaches outside a storage of %d elements", t.shape, t.stride, limit)
		}
		last += lo
	}
	if numel > 0 && last >= uint64(limit) {
		return fmt.Errorf("shape %v with stride %v at offset %d reaches element %d of a storage of %d", t.shape, t.stride, t.offset, last, limit)
	}
	return nil
}

// isContiguous reports a row-major layout, which lets materialize convert in one pass.
func (t *tensorRef) isContiguous() bool {
	expect := int64(1)
	for i := len(t.shape) - 1; i >= 0; i-- {
		if t.shape[i] != 1 && t.stride[i] != expect {
			return false
		}
		expect *= t.shape[i]
	}
	return true
}

// materialize copies the view out as a contiguous float32 array, converting float16
// and bfloat16 exactly. order is the byte order of the storage bytes.
func (t *tensorRef) materialize(src storageSource, order binary.ByteOrder) ([]float32, error) {
	dt := t.storage.dtype
	if dt != dtFloat32 && dt != dtFloat16 && dt != dtBFloat16 {
		return nil, fmt.Errorf("dtype %s is not supported for model weights (float32, float16 or bfloat16 only)", dt.name)
	}
	raw, err := src.storageBytes(t.storage)
	if err != nil {
		return nil, err
	}
	out := make([]float32, t.numel())
	elem := func(i int64) float32 {
		switch dt {
		case dtFloat16:
			return halfToFloat32(order.Uint16(raw[2*i:]))
		case dtBFloat16:
			return bfloat16ToFloat32(order.Uint16(raw[2*i:]))
		default:
			return math.Float32frombits(order.Uint32(raw[4*i:]))
		}
	}
	if len(out) == 0 {
		return out, nil
	}
	if t.isContiguous() {
		for i := range out {
			out[i] = elem(t.offset + int64(i))
		}
		return out, nil
	}
	// General strides: walk a multi-index like an odometer.
	idx := make([]int64, len(t.shape))
	pos := t.offset
	for i := range out {
		out[i] = elem(pos)
		for d := len(idx) - 1; d >= 0; d-- {
			idx[d]++
			pos += t.stride[d]
			if idx[d] < t.shape[d] {
				break
			}
			pos -= idx[d] * t.stride[d]
			idx[d] = 0
		}
	}
	return out, nil
}

// storageSource hands out a storage's raw bytes (exactly numel × element size).
type storageSource interface {
	storageBytes(s *storageRef) ([]byte, error)
}

// ---------------------------------------------------------------------------------------
// Reading a file
// ---------------------------------------------------------------------------------------

// torchFile is an unpickled checkpoint whose storages can be fetched on demand.
type torchFile struct {
	root      any
	source    storageSource
	byteOrder binary.ByteOrder
	storages  map[string]*storageRef
}

// zipMagic starts every zip local file header; torch zip checkpoints begin with one.
var zipMagic = []byte("PK\x03\x04")

// legacyMagic is the number torch's legacy format pickles first.
var legacyMagic, _ = new(big.Int).SetString("1950a86a20f9469cfc6c", 16)

func readTorchFile(data []byte) (*torchFile, error) {
	switch {
	case len(data) == 0:
		return nil, errors.New("empty file: not a PyTorch checkpoint")
	case bytes.HasPrefix(data, zipMagic):
		return readZipFormat(data)
	case data[0] == 0x80:
		return readLegacyFormat(data)
	}
	return nil, errors.New("not a PyTorch checkpoint: neither a zip archive (torch >= 1.6) nor a legacy torch.save stream")
}

// ---- zip ----

type zipSource struct {
	data    []byte
	files   map[string]*zip.File
	prefix  string
	storage map[*storageRef]bool // storages already checked against their record
}

// Deflate cannot expand data by more than about 1032:1; a larger declared ratio is a lie.
const maxDeflateRatio = 1032

func readZipFormat(data []byte) (*torchFile, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("reading the checkpoint's zip directory: %w", err)
	}
	if len(zr.File) == 0 {
		return nil, errors.New("zip archive has no records")
	}
	src := &zipSource{data: data, files: make(map[string]*zip.File, len(zr.File))}
	for _, f := range zr.File {
		if _, dup := src.files[f.Name]; dup {
			return nil, fmt.Errorf("zip record %q appears twice", f.Name)
		}
		src.files[f.Name] = f
	}
	// torch names every record <archive>/<name>, taking <archive> from the first record.
	first := zr.File[0].Name
	slash := bytes.IndexByte([]byte(first), '/')
	if slash <= 0 {
		return nil, fmt.Errorf("zip record %q is not inside a folder: not a torch.save archive", first)
	}
	src.prefix = first[:slash+1]

	pkl, err := src.record("data.pkl", -1)
	if err != nil {
		return nil, err
	}
	order := binary.ByteOrder(binary.LittleEndian)
	if _, ok := src.files[src.prefix+"byteorder"]; ok {
		bo, err := src.record("byteorder", 16)
		if err != nil {
			return nil, err
		}
		switch string(bo) {
		case "little":
		case "big":
			order = binary.BigEndian
		default:
			return nil, fmt.Errorf("byteorder record says %q (want little or big)", bo)
		}
	}
	if _, ok := src.files[src.prefix+"version"]; ok {
		v, err := src.record("version", 32)
		if err != nil {
			return nil, err
		}
		if _, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 32); err != nil {
			return nil, fmt.Errorf("version record %q is not a number", v)
		}
	}

	tf := &torchFile{source: src, byteOrder: order, storages: map[string]*storageRef{}}
	u := newUnpickler(pkl, func(pid any) (any, error) { return tf.zipPersistentLoad(src, pid) })
	root, err := u.run()
	if err != nil {
		return nil, fmt.Errorf("%sdata.pkl: %w", src.prefix, err)
	}
	if u.pos != len(pkl) {
		return nil, fmt.Errorf("%sdata.pkl: %d bytes after the pickle's STOP", src.prefix, len(pkl)-u.pos)
	}
	tf.root = root
	return tf, nil
}

// zipPersistentLoad resolves ('storage', StorageType, key, location, numel).
func (tf *torchFile) zipPersistentLoad(src *zipSource, pid any) (any, error) {
	t, ok := pid.(pyTuple)
	if !ok || len(t) != 5 {
		return nil, fmt.Errorf("persistent id is %s, want ('storage', type, key, location, numel)", describePid(pid))
	}
	st, err := tf.storageFromPid(t)
	if err != nil {
		return nil, err
	}
	// The record must exist with exactly the storage's size; checked here, while
	// unpickling, so a lying file fails before anything is read or allocated.
	if !src.storage[st] {
		f, ok := src.files[src.prefix+"data/"+st.key]
		if !ok {
			return nil, fmt.Errorf("storage %q has no record %sdata/%s", st.key, src.prefix, st.key)
		}
		if want := uint64(st.numel * st.dtype.size); f.UncompressedSize64 != want {
			return nil, fmt.Errorf("storage %q: record holds %d bytes, but %d %s elements need %d", st.key, f.UncompressedSize64, st.numel, st.dtype.name, want)
		}
		if src.storage == nil {
			src.storage = map[*storageRef]bool{}
		}
		src.storage[st] = true
	}
	return st, nil
}

// storageFromPid checks the common fields of a storage persistent id and returns the
// one storageRef for its key (tensors that share a storage share the storageRef).
func (tf *torchFile) storageFromPid(t pyTuple) (*storageRef, error) {
	if s, ok := t[0].(string); !ok || s != "storage" {
		return nil, fmt.Errorf("persistent id of kind %s, want 'storage'", describePid(t[0]))
	}
	typ, ok := t[1].(pyGlobal)
	if !ok || typ.kind != gStorageType {
		return nil, fmt.Errorf("persistent id names %s, want a torch storage type", typeName(t[1]))
	}
	key, ok := t[2].(string)
	if !ok || key == "" || len(key) > 64 {
		return nil, fmt.Errorf("storage key is %s, want a short string", typeName(t[2]))
	}
	if _, ok := t[3].(string); !ok {
		return nil, fmt.Errorf("storage location is %s, want a string", typeName(t[3]))
	}
	numel, err := asInt(t[4])
	if err != nil {
		return nil, fmt.Errorf("storage %q size: %v", key, err)
	}
	dt := storageTypes[typ.name]
	if numel < 0 || numel > math.MaxInt64/16 {
		return nil, fmt.Errorf("storage %q has an impossible size %d", key, numel)
	}
	if prev, ok := tf.storages[key]; ok {
		if prev.dtype != dt || prev.numel != numel {
			return nil, fmt.Errorf("storage %q is described twice, as %d %s and as %d %s", key, prev.numel, prev.dtype.name, numel, dt.name)
		}
		return prev, nil
	}
	st := &storageRef{key: key, dtype: dt, numel: numel}
	tf.storages[key] = st
	return st, nil
}

func describePid(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return typeName(v)
}

// record returns the bytes of <prefix>/<name>, read with every size checked; max < 0
// means no limit beyond the file's own size.
func (src *zipSource) record(name string, max int64) ([]byte, error) {
	f, ok := src.files[src.prefix+name]
	if !ok {
		return nil, fmt.Errorf("zip record %s%s is missing: not a torch.save archive", src.prefix, name)
	}
	if max >= 0 && f.UncompressedSize64 > uint64(max) {
		return nil, fmt.Errorf("zip record %s is %d bytes (max %d)", f.Name, f.UncompressedSize64, max)
	}
	return src.read(f)
}

func (src *zipSource) read(f *zip.File) ([]byte, error) {
	size := f.UncompressedSize64
	switch f.Method {
	case zip.Store:
		// Stored records are sliced straight out of the file: no copy, no allocation.
		off, err := f.DataOffset()
		if err != nil {
			return nil, fmt.Errorf("zip record %s: %w", f.Name, err)
		}
		if f.CompressedSize64 != size || off < 0 || uint64(off) > uint64(len(src.data)) || size > uint64(len(src.data))-uint64(off) {
			return nil, fmt.Errorf("zip record %s: %d bytes at offset %d do not fit in a file of %d bytes", f.Name, size, off, len(src.data))
		}
		b := src.data[off : uint64(off)+size]
		// A data-descriptor record may leave the directory's CRC at zero.
		if (f.CRC32 != 0 || f.Flags&0x8 == 0) && crc32.ChecksumIEEE(b) != f.CRC32 {
			return nil, fmt.Errorf("zip record %s: checksum mismatch (the file is corrupt)", f.Name)
		}
		return b, nil
	case zip.Deflate:
		// torch never compresses, but a re-zipped checkpoint is still a checkpoint.
		if f.CompressedSize64 > uint64(len(src.data)) || size > f.CompressedSize64*maxDeflateRatio+1024 {
			return nil, fmt.Errorf("zip record %s claims %d bytes from %d compressed: impossible ratio", f.Name, size, f.CompressedSize64)
		}
		rc, err := f.Open()
		if err != nil {
			return nil, fmt.Errorf("zip record %s: %w", f.Name, err)
		}
		defer rc.Close()
		buf := make([]byte, size)
		if _, err := io.ReadFull(rc, buf); err != nil {
			return nil, fmt.Errorf("zip record %s: %w", f.Name, err)
		}
		// Reading one byte more makes archive/zip verify the CRC and that nothing follows.
		if n, err := rc.Read(make([]byte, 1)); n != 0 || (err != nil && err != io.EOF) {
			if err == nil {
				err = errors.New("more data than its declared size")
			}
			return nil, fmt.Errorf("zip record %s: %w", f.Name, err)
		}
		return buf, nil
	}
	return nil, fmt.Errorf("zip record %s uses compression method %d (only stored or deflate)", f.Name, f.Method)
}

func (src *zipSource) storageBytes(s *storageRef) ([]byte, error) {
	if s.loaded {
		return s.raw, nil
	}
	raw, err := src.record("data/"+s.key, s.numel*s.dtype.size)
	if err != nil {
		return nil, err
	}
	if int64(len(raw)) != s.numel*s.dtype.size {
		return nil, fmt.Errorf("storage %q: record holds %d bytes, want %d", s.key, len(raw), s.numel*s.dtype.size)
	}
	s.raw, s.loaded = raw, true
	return raw, nil
}

// ---- legacy ----

type legacySource struct{}

func (legacySource) storageBytes(s *storageRef) ([]byte, error) {
	root := s
	if s.base != nil {
		root = s.base
	}
	if !root.loaded {
		return nil, fmt.Errorf("storage %q has no data in the file", root.key)
	}
	if s.base == nil {
		return root.raw, nil
	}
	start := s.baseOffset * s.dtype.size
	return root.raw[start : start+s.numel*s.dtype.size], nil
}

const legacyProtocolVersion = 1001

func readLegacyFormat(data []byte) (*torchFile, error) {
	pos := 0
	next := func(what string, load func(any) (any, error)) (any, error) {
		u := newUnpickler(data[pos:], load)
		v, err := u.run()
		if err != nil {
			return nil, fmt.Errorf("legacy checkpoint, %s: %w", what, err)
		}
		pos += u.pos
		return v, nil
	}
	magic, err := next("magic number", nil)
	if err != nil {
		return nil, err
	}
	if m, ok := magic.(*big.Int); !ok || m.Cmp(legacyMagic) != 0 {
		return nil, errors.New("not a PyTorch checkpoint: a pickle, but without torch's magic number")
	}
	proto, err := next("protocol version", nil)
	if err != nil {
		return nil, err
	}
	if p, ok := proto.(int64); !ok || p != legacyProtocolVersion {
		return nil, fmt.Errorf("legacy checkpoint protocol version %v is not supported (want %d)", proto, legacyProtocolVersion)
	}
	sysInfo, err := next("sys_info", nil)
	if err != nil {
		return nil, err
	}
	if d, ok := sysInfo.(*pyDict); ok {
		if le, ok := d.get("little_endian"); ok && le != true {
			// Storage bytes are always written little-endian, but torch refuses
			// big-endian sys_info too; the file came from a machine we never tested.
			return nil, errors.New("legacy checkpoint written on a big-endian machine is not supported")
		}
	} else {
		return nil, fmt.Errorf("legacy checkpoint sys_info is %s, want a dict", typeName(sysInfo))
	}

	tf := &torchFile{source: legacySource{}, byteOrder: binary.LittleEndian, storages: map[string]*storageRef{}}
	views := map[string]*storageRef{}
	root, err := next("object", func(pid any) (any, error) { return tf.legacyPersistentLoad(views, pid) })
	if err != nil {
		return nil, err
	}
	tf.root = root

	keysV, err := next("storage keys", nil)
	if err != nil {
		return nil, err
	}
	keys, ok := keysV.(*pyList)
	if !ok {
		return nil, fmt.Errorf("legacy checkpoint storage keys are %s, want a list", typeName(keysV))
	}
	seen := map[string]bool{}
	for _, kv := range keys.items {
		key, ok := kv.(string)
		if !ok {
			return nil, fmt.Errorf("legacy checkpoint storage key is %s, want a string", typeName(kv))
		}
		st, ok := tf.storages[key]
		if !ok || seen[key] {
			return nil, fmt.Errorf("legacy checkpoint lists storage %q that the object does not use (or twice)", key)
		}
		seen[key] = true
		if len(data)-pos < 8 {
			return nil, fmt.Errorf("legacy checkpoint truncated in storage %q's header", key)
		}
		n := binary.LittleEndian.Uint64(data[pos:])
		pos += 8
		if n != uint64(st.numel) {
			return nil, fmt.Errorf("legacy checkpoint storage %q holds %d elements, but the object says %d", key, n, st.numel)
		}
		size := uint64(st.numel * st.dtype.size)
		if size > uint64(len(data)-pos) {
			return nil, fmt.Errorf("legacy checkpoint truncated in storage %q (%d bytes needed, %d left)", key, size, len(data)-pos)
		}
		st.raw, st.loaded = data[pos:pos+int(size)], true
		pos += int(size)
	}
	for key := range tf.storages {
		if !seen[key] {
			return nil, fmt.Errorf("legacy checkpoint has no data for storage %q", key)
		}
	}
	if pos != len(data) {
		return nil, fmt.Errorf("legacy checkpoint has %d unexpected bytes at its end", len(data)-pos)
	}
	return tf, nil
}

// legacyPersistentLoad resolves ('storage', StorageType, root_key, location, numel,
// view_metadata), where view_metadata is None or (view_key, offset, view_size).
func (tf *torchFile) legacyPersistentLoad(views map[string]*storageRef, pid any) (any, error) {
	t, ok := pid.(pyTuple)
	if !ok || len(t) != 6 {
		return nil, fmt.Errorf("persistent id is %s, want ('storage', type, key, location, numel, view)", describePid(pid))
	}
	root, err := tf.storageFromPid(t[:5])
	if err != nil {
		return nil, err
	}
	if t[5] == nil {
		return root, nil
	}
	vm, ok := t[5].(pyTuple)
	if !ok || len(vm) != 3 {
		return nil, fmt.Errorf("storage %q view metadata is %s, want (key, offset, size)", root.key, typeName(t[5]))
	}
	vkey, ok := vm[0].(string)
	if len(vkey) > 64 {
		ok = false // keys are short ids; a long one only costs hashing
	}
	off, err1 := asInt(vm[1])
	size, err2 := asInt(vm[2])
	if !ok || err1 != nil || err2 != nil || off < 0 || size < 0 || off > root.numel || size > root.numel-off {
		return nil, fmt.Errorf("storage %q view metadata is out of range", root.key)
	}
	if v, ok := views[vkey]; ok {
		if v.base != root || v.baseOffset != off || v.numel != size {
			return nil, fmt.Errorf("storage view %q is described twice differently", vkey)
		}
		return v, nil
	}
	v := &storageRef{key: vkey, dtype: root.dtype, numel: size, base: root, baseOffset: off}
	views[vkey] = v
	return v, nil
}

// ---------------------------------------------------------------------------------------
// Small conversions shared by the readers
// ---------------------------------------------------------------------------------------

func asInt(v any) (int64, error) {
	switch x := v.(type) {
	case int64:
		return x, nil
	case bool:
		// Python bools are ints, and torch never writes one where an int is expected;
		// refusing keeps a mistyped field from being read as 0 or 1.
		return 0, errors.New("bool where an int was expected")
	}
	return 0, fmt.Errorf("%s where an int was expected", typeName(v))
}

func intTuple(v any) ([]int64, error) {
	var items []any
	switch x := v.(type) {
	case pyTuple:
		items = x
	case *pyList:
		items = x.items
	default:
		return nil, fmt.Errorf("%s where a tuple of ints was expected", typeName(v))
	}
	if len(items) > maxTensorDims {
		return nil, fmt.Errorf("%d dimensions (max %d)", len(items), maxTensorDims)
	}
	out := make([]int64, len(items))
	for i, it := range items {
		n, err := asInt(it)
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}
