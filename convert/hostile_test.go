// Tests that broken and hostile checkpoints are refused promptly, with an error and
// without a panic, a hang or a huge allocation: truncations of real files, lying
// lengths and counts, storages of the wrong size, views outside their storage, globals
// that are not on the list, deep nesting, and malformed zip archives. The files are
// built here, opcode by opcode, so each one is broken in exactly one way.
package convert

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"nielsgpt/gguf"
)

// ---------------------------------------------------------------------------------------
// A pickle builder for hand-made checkpoints
// ---------------------------------------------------------------------------------------

type pickleBuilder struct{ bytes.Buffer }

func (p *pickleBuilder) op(b ...byte) *pickleBuilder { p.Write(b); return p }

func (p *pickleBuilder) str(s string) *pickleBuilder {
	p.WriteByte('X')
	binary.Write(p, binary.LittleEndian, uint32(len(s)))
	p.WriteString(s)
	return p
}

func (p *pickleBuilder) int(n int64) *pickleBuilder {
	if n >= math.MinInt32 && n <= math.MaxInt32 {
		p.WriteByte('J')
		binary.Write(p, binary.LittleEndian, int32(n))
		return p
	}
	p.op(0x8a, 8)
	binary.Write(p, binary.LittleEndian, n)
	return p
}

func (p *pickleBuilder) float(f float64) *pickleBuilder {
	p.WriteByte('G')
	binary.Write(p, binary.BigEndian, f)
	return p
}

func (p *pickleBuilder) global(module, name string) *pickleBuilder {
	p.WriteByte('c')
	p.WriteString(module + "\n" + name + "\n")
	return p
}

func (p *pickleBuilder) ints(ns []int64) *pickleBuilder {
	p.op('(')
	for _, n := range ns {
		p.int(n)
	}
	return p.op('t')
}

// handTensor is one model_state entry of a hand-made checkpoint.
type handTensor struct {
	name, key, storageType string
	numel, offset          int64
	shape, stride          []int64
	wrap                   string // "", "parameter" or "from_type": how torch wraps subclasses
	view                   *legacyView
}

// legacyView is the view_metadata of very old torch.save files: the tensor's storage
// is a window (offset, size in elements) onto a root storage.
type legacyView struct {
	key          string
	offset, size int64
}

func (p *pickleBuilder) tensor(t handTensor, legacy bool) *pickleBuilder {
	switch t.wrap {
	case "parameter":
		p.global("torch._utils", "_rebuild_parameter").op('(')
		t.wrap = ""
		p.tensor(t, legacy).op(0x88).global("collections", "OrderedDict").op(')', 'R', 't', 'R')
		return p
	case "from_type":
		p.global("torch._tensor", "_rebuild_from_type_v2").op('(').global("torch._utils", "_rebuild_tensor_v2")
		p.global("torch", "Tensor").op('(')
		t.wrap = ""
		p.tensorArgs(t, legacy)
		p.op('t', '}', 't', 'R')
		return p
	}
	p.global("torch._utils", "_rebuild_tensor_v2").op('(')
	p.tensorArgs(t, legacy)
	return p.op('t', 'R')
}

// tensorArgs writes _rebuild_tensor_v2's arguments without the enclosing tuple.
func (p *pickleBuilder) tensorArgs(t handTensor, legacy bool) *pickleBuilder {
	p.op('(').str("storage").global("torch", t.storageType).str(t.key).str("cuda:0").int(t.numel)
	if legacy && t.view != nil {
		p.op('(').str(t.view.key).int(t.view.offset).int(t.view.size).op('t')
	} else if legacy {
		p.op('N')
	}
	p.op('t', 'Q')
	p.int(t.offset).ints(t.shape).ints(t.stride).op(0x89)
	return p.global("collections", "OrderedDict").op(')', 'R')
}

// tinyCfg is the smallest valid generation 1 model: 20 tensors of a few floats each.
var tinyCfg = gguf.ModelConfig{Vocab: 256, Context: 4, Embd: 2, Layers: 1, Heads: 1, FF: 4, RopeTheta: 10000, NormEps: LayerNormEps}

// handTensors lays every tensor of tinyCfg out in its own float32 storage, with
// lm_head sharing tok_emb's, as torch.save does.
func handTensors() []handTensor { return handTensorsOf(tinyCfg) }

// handTensorsOf is handTensors for any shape and generation.
func handTensorsOf(cfg gguf.ModelConfig) []handTensor {
	var out []handTensor
	for i, row := range stateTable(cfg) {
		t := handTensor{name: row.StateKey, key: string(rune('a' + i)), storageType: "FloatStorage"}
		if row.StateKey == "lm_head.weight" {
			t.key = out[0].key
		}
		n := int64(1)
		for d := len(row.Shape) - 1; d >= 0; d-- {
			t.shape = append([]int64{int64(row.Shape[d])}, t.shape...)
			t.stride = append([]int64{n}, t.stride...)
			n *= int64(row.Shape[d])
		}
		t.numel = n
		out = append(out, t)
	}
	return out
}

func checkpointPickle(cfg gguf.ModelConfig, tensors []handTensor, legacy bool) []byte {
	return checkpointPickleWith(cfg, tensors, legacy, nil)
}

// checkpointPickleWith is checkpointPickle with more top-level entries, which extra
// writes as key-value pairs (train_cfg, say).
func checkpointPickleWith(cfg gguf.ModelConfig, tensors []handTensor, legacy bool, extra func(*pickleBuilder)) []byte {
	p := &pickleBuilder{}
	p.op(0x80, 2, '}', '(')
	p.str("model_cfg").op('}', '(')
	for _, kv := range []struct {
		k string
		v int
	}{{"V", cfg.Vocab}, {"T", cfg.Context}, {"C", cfg.Embd}, {"L", cfg.Layers}, {"H", cfg.Heads}, {"d_ff", cfg.FF}} {
		p.str(kv.k).int(int64(kv.v))
	}
	p.str("rope_theta").float(cfg.RopeTheta).op('u')
	p.str("step").int(3)
	if extra != nil {
		extra(p)
	}
	p.str("model_state").global("collections", "OrderedDict").op(')', 'R', '(')
	for _, t := range tensors {
		p.str(t.name).tensor(t, legacy)
	}
	p.op('u', 'u', '.')
	return p.Bytes()
}

// storagesFor gives each distinct storage numel float32 values 0.5, 1.5, ...
func storagesFor(tensors []handTensor) map[string][]byte {
	out := map[string][]byte{}
	for _, t := range tensors {
		if _, ok := out[t.key]; ok {
			continue
		}
		b := make([]byte, 0, 4*t.numel)
		for i := int64(0); i < t.numel; i++ {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(i)+0.5))
		}
		out[t.key] = b
	}
	return out
}

type zipRecord struct {
	name   string
	data   []byte
	method uint16
}

func buildZip(t testing.TB, records []zipRecord) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	zw.RegisterCompressor(99, func(w io.Writer) (io.WriteCloser, error) { return nopWriteCloser{w}, nil })
	for _, r := range records {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: r.name, Method: r.method})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(r.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// zipCheckpoint packs a pickle and storages the way torch.save lays them out.
func zipCheckpoint(t testing.TB, pkl []byte, storages map[string][]byte) []byte {
	records := []zipRecord{{"archive/data.pkl", pkl, zip.Store}, {"archive/byteorder", []byte("little"), zip.Store}}
	for key, data := range storages {
		records = append(records, zipRecord{"archive/data/" + key, data, zip.Store})
	}
	return buildZip(t, append(records, zipRecord{"archive/version", []byte("3\n"), zip.Store}))
}

// legacyCheckpoint writes the pre-1.6 stream: magic, protocol, sys_info, object, keys,
// then each storage as an int64 element count and its bytes.
func legacyCheckpoint(pkl []byte, keys []string, storages map[string][]byte, elemSize int) []byte {
	var out bytes.Buffer
	out.Write([]byte{0x80, 2, 0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, '.'})
	out.Write([]byte{0x80, 2, 'M', 0xe9, 0x03, '.'})
	sys := &pickleBuilder{}
	sys.op(0x80, 2, '}', '(').str("protocol_version").int(1001).str("little_endian").op(0x88, 'u', '.')
	out.Write(sys.Bytes())
	out.Write(pkl)
	kp := &pickleBuilder{}
	kp.op(0x80, 2, ']', '(')
	for _, k := range keys {
		kp.str(k)
	}
	kp.op('e', '.')
	out.Write(kp.Bytes())
	for _, k := range keys {
		binary.Write(&out, binary.LittleEndian, uint64(len(storages[k])/elemSize))
		out.Write(storages[k])
	}
	return out.Bytes()
}

func distinctKeys(tensors []handTensor) []string {
	var keys []string
	seen := map[string]bool{}
	for _, t := range tensors {
		if !seen[t.key] {
			seen[t.key] = true
			keys = append(keys, t.key)
		}
	}
	return keys
}

// readFast reads data and fails the test if that takes far too long: a hang or a
// runaway allocation shows up as time long before it shows up as a crash. The bound
// catches those, not slowness: the largest case (a 4 MB stack flood) reads in about
// a second alone and took 4 s on two cores shared with other test binaries.
func readFast(t *testing.T, data []byte) (*Checkpoint, error) {
	t.Helper()
	start := time.Now()
	ck, err := ReadCheckpointBytes(data)
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("reading %d bytes took %v", len(data), d)
	}
	return ck, err
}

// ---------------------------------------------------------------------------------------
// The hand-made files are right when nothing is broken
// ---------------------------------------------------------------------------------------

func TestHandMadeCheckpoints(t *testing.T) {
	tensors := handTensors()
	storages := storagesFor(tensors)
	files := map[string][]byte{
		"zip":    zipCheckpoint(t, checkpointPickle(tinyCfg, tensors, false), storages),
		"legacy": legacyCheckpoint(checkpointPickle(tinyCfg, tensors, true), distinctKeys(tensors), storages, 4),
	}
	for name, data := range files {
		t.Run(name, func(t *testing.T) {
			ck, err := readFast(t, data)
			if err != nil {
				t.Fatal(err)
			}
			if err := ck.Validate(); err != nil {
				t.Fatal(err)
			}
			if ck.Config != tinyCfg || ck.Step != 3 || ck.BestValLoss != nil {
				t.Errorf("config %+v step %d bvl %v", ck.Config, ck.Step, ck.BestValLoss)
			}
			if got := ck.Tensors["blocks.0.mlp.fc1.weight"].Data; got[0] != 0.5 || got[7] != 7.5 {
				t.Errorf("fc1 data %v", got)
			}
		})
	}
}

// Optimizer state is parsed (its globals are checked) but its storages are never read:
// here its record is corrupt (a checksum that cannot match) and holds int64 data, and
// the model still loads.
func TestOptimizerStateNotRead(t *testing.T) {
	tensors := handTensors()
	model := checkpointPickle(tinyCfg, tensors, false)
	p := &pickleBuilder{}
	p.Write(model[:len(model)-2]) // reopen the top-level dict: drop its SETITEMS and STOP
	p.str("optimizer_state").op('}', '(').str("state").op('}', '(').int(0).op('}', '(')
	p.str("exp_avg").tensor(handTensor{key: "opt0", storageType: "FloatStorage", numel: 4, shape: []int64{4}, stride: []int64{1}}, false)
	p.str("step").tensor(handTensor{key: "opt1", storageType: "LongStorage", numel: 1, shape: []int64{}, stride: []int64{}}, false)
	p.op('u', 'u').str("param_groups").op(']', '(', '}', '(').str("lr").float(1e-3).str("betas").float(0.9).float(0.95).op(0x86)
	p.str("foreach").op('N').str("params").op(']', '(').int(0).op('e', 'u', 'e', 'u', 'u', '.')
	storages := storagesFor(tensors)
	storages["opt0"] = make([]byte, 16)
	storages["opt1"] = make([]byte, 8)
	data := zipCheckpoint(t, p.Bytes(), storages)
	// Corrupt opt0's bytes in place: its CRC no longer matches.
	i := bytes.Index(data, []byte("archive/data/opt0"))
	j := i + len("archive/data/opt0")
	data[j+3] ^= 0xff
	ck, err := readFast(t, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := ck.Validate(); err != nil {
		t.Fatal(err)
	}
	// The corruption is real: reading that record is refused.
	tf, err := readTorchFile(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tf.source.(*zipSource).record("data/opt0", -1); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("corrupt optimizer record read without error: %v", err)
	}
}

// Pickle forms that real checkpoints can contain beyond the fixtures: parameters and
// tensor subclasses, numpy scalars, protocol 2 bytes, sets, torch.Size, an
// argparse.Namespace train_cfg, and a best_val_loss saved as a 0-dim tensor.
func TestPickleForms(t *testing.T) {
	tensors := handTensors()
	tensors[1].wrap = "parameter"
	tensors[2].wrap = "from_type"
	model := checkpointPickle(tinyCfg, tensors, false)
	p := &pickleBuilder{}
	p.Write(model[:len(model)-2])
	// train_cfg = argparse.Namespace(lr=..., tags={"a"}, raw=b"\x00\xff", size=torch.Size([2, 3]))
	p.str("train_cfg").global("argparse", "Namespace").op(')', 0x81, '}', '(')
	p.str("tags").global("builtins", "set").op(']', '(').str("a").op('e', 0x85, 'R')
	p.str("raw").global("_codecs", "encode").op('X', 3, 0, 0, 0, 0, 0xc3, 0xbf).str("latin1").op(0x86, 'R')
	p.str("size").global("torch", "Size").op('(', '(').int(2).int(3).op('t', 't', 'R')
	p.str("device").global("torch", "device").str("cuda").int(0).op(0x86, 'R')
	p.op('u', 'b')
	// best_val_loss = torch.tensor(1.25): a 0-dim tensor with its own storage.
	p.str("best_val_loss").tensor(handTensor{key: "bvl", storageType: "FloatStorage", numel: 1}, false)
	p.op('u', '.')
	storages := storagesFor(tensors)
	storages["bvl"] = binary.LittleEndian.AppendUint32(nil, math.Float32bits(1.25))
	ck, err := readFast(t, zipCheckpoint(t, p.Bytes(), storages))
	if err != nil {
		t.Fatal(err)
	}
	if err := ck.Validate(); err != nil {
		t.Fatal(err)
	}
	if ck.BestValLoss == nil || *ck.BestValLoss != 1.25 {
		t.Errorf("best_val_loss %v, want 1.25", ck.BestValLoss)
	}
	if got := ck.Tensors[tensors[2].name].Data; got[0] != 0.5 || got[1] != 1.5 {
		t.Errorf("%s read as %v", tensors[2].name, got)
	}

	// numpy.float64(1.75) and numpy.int64(-5) as protocol 2 writes them.
	np := func(code string, raw []byte) *pickleBuilder {
		q := &pickleBuilder{}
		q.global("numpy.core.multiarray", "scalar").op('(')
		q.global("numpy", "dtype").str(code).op(0x89, 0x88, 0x87, 'R')
		q.op('(').int(3).str("<").op('N', 'N', 'N').int(-1).int(-1).int(0).op('t', 'b')
		q.global("_codecs", "encode").op('X')
		var latin []byte
		for _, b := range raw {
			latin = utf8Append(latin, rune(b))
		}
		binary.Write(q, binary.LittleEndian, uint32(len(latin)))
		q.Write(latin)
		q.str("latin1").op(0x86, 'R', 't', 'R')
		return q
	}
	p = &pickleBuilder{}
	p.Write(model[:len(model)-2])
	p.str("best_val_loss").Write(np("f8", binary.LittleEndian.AppendUint64(nil, math.Float64bits(1.75))).Bytes())
	p.str("step").Write(np("i8", binary.LittleEndian.AppendUint64(nil, uint64(0xfffffffffffffffb))).Bytes())
	p.op('u', '.')
	ck, err = readFast(t, zipCheckpoint(t, p.Bytes(), storagesFor(tensors)))
	if err != nil {
		t.Fatal(err)
	}
	if ck.BestValLoss == nil || *ck.BestValLoss != 1.75 || ck.Step != -5 {
		t.Errorf("numpy scalars read as %v, %d", ck.BestValLoss, ck.Step)
	}
	if err := ck.Validate(); err == nil || !strings.Contains(err.Error(), "step=-5") {
		t.Errorf("negative step not refused: %v", err)
	}
}

func utf8Append(b []byte, r rune) []byte {
	var buf [4]byte
	n := utf8.EncodeRune(buf[:], r)
	return append(b, buf[:n]...)
}

// Pre-1.0 legacy files describe views of a storage in the persistent id itself.
func TestLegacyStorageViews(t *testing.T) {
	build := func(view legacyView) []byte {
		tensors := handTensors()
		for _, i := range []int{0, len(tensors) - 1} { // tok_emb and the tied lm_head
			tensors[i].numel = 520
			v := view
			tensors[i].view = &v
		}
		storages := storagesFor(tensors)
		return legacyCheckpoint(checkpointPickle(tinyCfg, tensors, true), distinctKeys(tensors), storages, 4)
	}
	ck, err := readFast(t, build(legacyView{"v", 8, 512}))
	if err != nil {
		t.Fatal(err)
	}
	if err := ck.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := ck.Tensors["tok_emb.weight"].Data; got[0] != 8.5 || got[511] != 519.5 {
		t.Errorf("view read from the wrong place: %v ... %v", got[0], got[511])
	}
	for _, bad := range []legacyView{{"v", 9, 512}, {"v", -1, 4}, {"v", 0, 521}, {strings.Repeat("v", 65), 0, 512}} {
		if _, err := readFast(t, build(bad)); err == nil || !strings.Contains(err.Error(), "view metadata") {
			t.Errorf("view %+v: error %v", bad, err)
		}
	}
}

// A zip written on a big-endian machine says so in its byteorder record.
func TestBigEndianZip(t *testing.T) {
	tensors := handTensors()
	storages := storagesFor(tensors)
	for k, b := range storages {
		for i := 0; i+4 <= len(b); i += 4 {
			binary.BigEndian.PutUint32(b[i:], binary.LittleEndian.Uint32(b[i:]))
		}
		storages[k] = b
	}
	records := []zipRecord{{"archive/data.pkl", checkpointPickle(tinyCfg, tensors, false), zip.Store},
		{"archive/byteorder", []byte("big"), zip.Store}}
	for key, data := range storages {
		records = append(records, zipRecord{"archive/data/" + key, data, zip.Store})
	}
	ck, err := readFast(t, buildZip(t, records))
	if err != nil {
		t.Fatal(err)
	}
	if got := ck.Tensors["ln_f.bias"].Data; got[0] != 0.5 || got[1] != 1.5 {
		t.Errorf("big-endian data read as %v", got)
	}
}

// A deflated archive (a checkpoint re-zipped by some tool) is still readable.
func TestDeflatedZip(t *testing.T) {
	tensors := handTensors()
	records := []zipRecord{{"archive/data.pkl", checkpointPickle(tinyCfg, tensors, false), zip.Deflate}}
	for key, data := range storagesFor(tensors) {
		records = append(records, zipRecord{"archive/data/" + key, data, zip.Deflate})
	}
	ck, err := readFast(t, buildZip(t, records))
	if err != nil {
		t.Fatal(err)
	}
	if err := ck.Validate(); err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------------------------------
// Broken files
// ---------------------------------------------------------------------------------------

func TestTruncatedFiles(t *testing.T) {
	files := []string{
		filepath.Join("testdata", "tiny_f32.pt"),
		filepath.Join("testdata", "tiny_legacy.pt"),
		filepath.Join("testdata", "tiny_proto4.pt"),
		filepath.Join(fixturesDir, "t2_small.pt"),
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			// Every cut in the first 3000 bytes (headers and pickles), then a sample.
			for n := 0; n < len(data); {
				if _, err := readFast(t, data[:n]); err == nil {
					t.Fatalf("truncated to %d of %d bytes: no error", n, len(data))
				}
				if n < 3000 {
					n++
				} else {
					n += 31
				}
			}
		})
	}
}

func TestHostileCheckpoints(t *testing.T) {
	tensors := handTensors()
	storages := storagesFor(tensors)
	good := checkpointPickle(tinyCfg, tensors, false)
	zipOf := func(pkl []byte) []byte { return zipCheckpoint(t, pkl, storages) }
	// withTensor rewrites the first tensor (tok_emb), keeping the rest valid.
	withTensorAt := func(i int, mod func(h *handTensor)) []byte {
		ts := handTensors()
		mod(&ts[i])
		return zipOf(checkpointPickle(tinyCfg, ts, false))
	}
	withTensor := func(mod func(h *handTensor)) []byte { return withTensorAt(0, mod) }
	raw := func(ops ...byte) []byte { return zipOf(append([]byte{0x80, 2}, ops...)) }
	nested := func(open, close byte, n int) []byte {
		b := append([]byte{0x80, 2}, bytes.Repeat([]byte{open}, n)...)
		return zipOf(append(append(b, bytes.Repeat([]byte{close}, n-1)...), '.'))
	}
	stackGlobal := func(module, name string) []byte {
		p := &pickleBuilder{}
		p.op(0x80, 4).str(module).str(name).op(0x93, ')', 'R', '.')
		return zipOf(p.Bytes())
	}
	pkl := func(build func(p *pickleBuilder)) []byte {
		p := &pickleBuilder{}
		p.op(0x80, 2)
		build(p)
		return zipOf(p.Bytes())
	}
	legacyWithCount := func(count uint64) []byte {
		lt := handTensors()
		data := legacyCheckpoint(checkpointPickle(tinyCfg, lt, true), distinctKeys(lt), storagesFor(lt), 4)
		// The first storage's element count follows the five pickles.
		i := bytes.Index(data, []byte{0x65, '.'}) + 2
		binary.LittleEndian.PutUint64(data[i:], count)
		return data
	}

	// Memo references let a small file use one large value many times; each of these
	// would run for hours if every use cost time proportional to the value's size.
	big := strings.Repeat("k", 1<<20)
	keyReuse := &pickleBuilder{}
	keyReuse.op(0x80, 2, '}').str(big).op('q', 1, '0')
	for i := 0; i < 200000; i++ {
		keyReuse.op('h', 1, 'N', 's')
	}
	keyReuse.op('.')
	bytesReuse := &pickleBuilder{}
	bytesReuse.op(0x80, 2).global("_codecs", "encode").op('q', 2, '0').str(big).op('q', 1, '0')
	for i := 0; i < 200000; i++ {
		bytesReuse.op('h', 2, 'h', 1).str("latin1").op(0x86, 'R', '0')
	}
	bytesReuse.op('N', '.')
	// setCalls builds set(list of 100,000 Nones) called 400,000 times through the memo,
	// each call followed by extra ops.
	setCalls := func(each ...byte) *pickleBuilder {
		p := &pickleBuilder{}
		p.op(0x80, 2).global("builtins", "set").op('q', 2, '0', ']', 'q', 3, '(')
		p.Write(bytes.Repeat([]byte{'N'}, 100000))
		p.op('e', '0')
		for i := 0; i < 400000; i++ {
			p.op(append([]byte{'h', 2, 'h', 3, 0x85, 'R'}, each...)...)
		}
		p.op('N', '.')
		return p
	}
	setReuse := setCalls('0')
	setGrow := setCalls('(', 'N', 0x90, '0')

	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"large dict key reused", zipOf(keyReuse.Bytes()), "far more work"},
		{"large bytes reused", zipOf(bytesReuse.Bytes()), "far more work"},
		{"large set reused", zipOf(setReuse.Bytes()), "checkpoint is a None"},
		{"large set grown", zipOf(setGrow.Bytes()), "far more work"},
		{"empty", nil, "empty file"},
		{"text", []byte("hello, world"), "not a PyTorch checkpoint"},
		{"pickle without magic", []byte{0x80, 2, 'N', '.'}, "magic number"},
		{"huge string length", raw('X', 0xff, 0xff, 0xff, 0xff, 'a', '.'), "runs past the end"},
		{"huge string8 length", raw(0x8d, 0, 0, 0, 0, 0, 0, 0, 0x40, '.'), "runs past the end"},
		{"huge bytes8 length", raw(0x8e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '.'), "runs past the end"},
		{"huge long4", raw(0x8b, 0xff, 0xff, 0xff, 0x7f, '.'), "larger than any checkpoint needs"},
		{"huge frame", raw(0x95, 0, 0, 0, 0, 0, 0, 0, 1, 'N', '.'), "frame of"},
		{"no stop", raw('N'), "no STOP"},
		{"stop with two values", raw('N', 'N', '.'), "STOP with 2 values"},
		{"stop with open mark", raw('(', 'N', '.'), "open marks"},
		{"stack underflow", raw('t', '.'), "no MARK"},
		{"pop past mark", raw('N', '(', 0x85, '.'), "stack underflow"},
		{"memo miss", raw('j', 1, 2, 3, 4, '.'), "never stored"},
		{"protocol 1 text opcode", raw('I', '1', '\n', '.'), "protocol 0"},
		{"unknown opcode", raw(0xff, '.'), "unknown opcode"},
		{"protocol 9", zipOf([]byte{0x80, 9, 'N', '.'}), "protocol 9"},
		{"invalid utf8", raw('X', 1, 0, 0, 0, 0xff, '.'), "UTF-8"},
		{"os.system", pkl(func(p *pickleBuilder) {
			p.global("os", "system").op('(').str("echo owned").op('t', 'R', '.')
		}), "os.system"},
		{"builtins.eval by STACK_GLOBAL", stackGlobal("builtins", "eval"), "builtins.eval"},
		{"getattr", stackGlobal("__builtin__", "getattr"), "__builtin__.getattr"},
		{"global line without newline", raw(append([]byte{'c'}, bytes.Repeat([]byte{'a'}, 5000)...)...), "no newline"},
		{"reduce on a string", pkl(func(p *pickleBuilder) { p.str("x").op(')', 'R', '.') }), "not a known global"},
		{"reduce with list args", pkl(func(p *pickleBuilder) { p.global("collections", "OrderedDict").op(']', 'R', '.') }), "must be a tuple"},
		{"storage type called", pkl(func(p *pickleBuilder) { p.global("torch", "FloatStorage").op(')', 'R', '.') }), "cannot be called"},
		{"build on a string", pkl(func(p *pickleBuilder) { p.str("x").op('}', 'b', '.') }), "BUILD on str"},
		{"append to a dict", pkl(func(p *pickleBuilder) { p.op('}', 'N', 'a', '.') }), "APPEND to dict"},
		{"setitem on a list", pkl(func(p *pickleBuilder) { p.op(']', 'N', 'N', 's', '.') }), "SETITEM on list"},
		{"odd setitems", pkl(func(p *pickleBuilder) { p.op('}', '(', 'N', 'u', '.') }), "odd number"},
		{"list as dict key", pkl(func(p *pickleBuilder) { p.op('}', ']', 'N', 's', '.') }), "dict key of type list"},
		{"persistent id not a tuple", pkl(func(p *pickleBuilder) { p.str("x").op('Q', '.') }), "persistent id"},
		{"persistent id of another kind", pkl(func(p *pickleBuilder) {
			p.op('(').str("module").global("torch", "FloatStorage").str("a").str("cpu").int(1).op('t', 'Q', '.')
		}), `kind "module"`},
		{"persistent id naming a non-storage", pkl(func(p *pickleBuilder) {
			p.op('(').str("storage").global("collections", "OrderedDict").str("a").str("cpu").int(1).op('t', 'Q', '.')
		}), "want a torch storage type"},
		{"deep marks", nested('(', 'N', 100000), "marks nested deeper"},
		{"deep lists", nested(']', 'a', 200000), "is a list"},
		{"deep tuples", zipOf(append(append([]byte{0x80, 2, 'N'}, bytes.Repeat([]byte{0x85}, 200000)...), '.')), "is a tuple"},
		{"cyclic list", pkl(func(p *pickleBuilder) { p.op(']', 'q', 0, 'h', 0, 'a', '.') }), "is a list"},
		{"stack flood", zipOf(append(append([]byte{0x80, 2}, bytes.Repeat([]byte{'N'}, maxPickleStack+1)...), '.')), "stack deeper"},
		{"missing storage record", withTensor(func(h *handTensor) { h.key = "zz" }), "no record archive/data/zz"},
		{"storage record too small", withTensor(func(h *handTensor) { h.numel++ }), "record holds 2048 bytes"},
		{"terabyte storage", withTensor(func(h *handTensor) { h.numel = 1 << 40 }), "record holds"},
		{"impossible storage size", withTensor(func(h *handTensor) { h.numel = math.MaxInt64 }), "impossible size"},
		{"storage described twice", withTensorAt(len(tensors)-1, func(h *handTensor) { h.numel++ }), "described twice"},
		{"offset past storage", withTensor(func(h *handTensor) { h.offset = h.numel + 1 }), "storage offset"},
		{"view past storage end", withTensor(func(h *handTensor) { h.offset = 1 }), "reaches element 512"},
		{"negative offset", withTensor(func(h *handTensor) { h.offset = -1 }), "storage offset -1"},
		{"negative stride", withTensor(func(h *handTensor) { h.stride[1] = -1 }), "negative size or stride"},
		{"stride overflow", withTensor(func(h *handTensor) { h.stride[0] = math.MaxInt64 }), "reaches outside"},
		{"shape larger than storage", withTensor(func(h *handTensor) { h.shape = []int64{1 << 40, 1 << 40}; h.stride = []int64{0, 0} }), "more elements than its storage"},
		{"stride rank mismatch", withTensor(func(h *handTensor) { h.stride = h.stride[:1] }), "size has 2 dimensions but stride has 1"},
		{"integer weights", withTensorAt(1, func(h *handTensor) { h.storageType = "IntStorage" }), "dtype int32 is not supported"},
		{"unknown storage type", withTensor(func(h *handTensor) { h.storageType = "QInt8Storage" }), "torch.QInt8Storage"},
		{"legacy terabyte storage", legacyWithCount(1 << 40), "holds 1099511627776 elements"},
		{"legacy trailing bytes", append(legacyCheckpoint(checkpointPickle(tinyCfg, tensors, true), distinctKeys(tensors), storages, 4), 0), "unexpected bytes"},
		{"legacy unknown key", legacyCheckpoint(checkpointPickle(tinyCfg, tensors, true), append(distinctKeys(tensors), "zz"), storages, 4), `storage "zz"`},
		{"legacy missing key", legacyCheckpoint(checkpointPickle(tinyCfg, tensors, true), distinctKeys(tensors)[1:], storages, 4), "no data for storage"},
		{"zip pid in legacy", legacyCheckpoint(good, distinctKeys(tensors), storages, 4), "want ('storage', type, key, location, numel, view)"},
		{"not a dict", zipOf([]byte{0x80, 2, 'N', '.'}), "checkpoint is a None"},
		{"no model_cfg", pkl(func(p *pickleBuilder) { p.op('}', '.') }), "no model_cfg"},
		{"cfg value not int", pkl(func(p *pickleBuilder) {
			p.op('}').str("model_cfg").op('}').str("V").str("256").op('s', 's', '.')
		}), "V: str where an int was expected"},
		{"state value not tensor", pkl(func(p *pickleBuilder) {
			p.op('}', '(').str("model_cfg").op('}', '(')
			for _, k := range []string{"V", "T", "C", "L", "H", "d_ff"} {
				p.str(k).int(2)
			}
			p.str("rope_theta").float(1).op('u').str("model_state").op('}').str("w").int(1).op('s', 'u', '.')
		}), `model_state["w"] is int`},
		{"bytes after stop", zipOf(append(append([]byte(nil), good...), 'N')), "after the pickle's STOP"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readFast(t, tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestHostileZips(t *testing.T) {
	tensors := handTensors()
	pkl := checkpointPickle(tinyCfg, tensors, false)
	storages := storagesFor(tensors)
	good := zipCheckpoint(t, pkl, storages)

	// lieAboutSize rewrites the uncompressed size of the record named name in both the
	// local header and the central directory.
	lieAboutSize := func(data []byte, name string, size uint32) []byte {
		out := append([]byte(nil), data...)
		for _, sig := range []struct {
			magic      string
			sizeOffset int
			nameOffset int
		}{{"PK\x03\x04", 22, 30}, {"PK\x01\x02", 24, 46}} {
			for i := 0; ; {
				j := bytes.Index(out[i:], []byte(sig.magic))
				if j < 0 {
					break
				}
				i += j
				if bytes.HasPrefix(out[i+sig.nameOffset:], []byte(name)) {
					binary.LittleEndian.PutUint32(out[i+sig.sizeOffset:], size)
				}
				i += 4
			}
		}
		return out
	}
	var bomb bytes.Buffer
	fw, _ := flate.NewWriter(&bomb, flate.BestCompression)
	fw.Write(make([]byte, 1<<20))
	fw.Close()

	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"no folder", buildZip(t, []zipRecord{{"data.pkl", pkl, zip.Store}}), "not inside a folder"},
		{"no data.pkl", buildZip(t, []zipRecord{{"archive/other", pkl, zip.Store}}), "archive/data.pkl is missing"},
		{"pickle in another folder", buildZip(t, []zipRecord{{"a/version", []byte("3"), zip.Store}, {"b/data.pkl", pkl, zip.Store}}), "a/data.pkl is missing"},
		{"duplicate record", buildZip(t, []zipRecord{{"archive/data.pkl", pkl, zip.Store}, {"archive/data.pkl", pkl, zip.Store}}), "appears twice"},
		{"unknown compression", buildZip(t, []zipRecord{{"archive/data.pkl", pkl, 99}}), "compression method 99"},
		{"bad byteorder", buildZip(t, []zipRecord{{"archive/data.pkl", pkl, zip.Store}, {"archive/byteorder", []byte("middle"), zip.Store}}), "byteorder"},
		{"bad version", buildZip(t, []zipRecord{{"archive/data.pkl", pkl, zip.Store}, {"archive/version", []byte("three"), zip.Store}}), "version record"},
		{"storage size lie", lieAboutSize(good, "archive/data/a", 1<<30), `storage "a": record holds 1073741824`},
		{"pickle size lie", lieAboutSize(good, "archive/data.pkl", 1<<31), "data.pkl"},
		{"deflate ratio lie", lieAboutSize(buildZip(t, []zipRecord{{"archive/data.pkl", pkl, zip.Deflate}}), "archive/data.pkl", 0xfffffff0), "impossible ratio"},
		{"deflate bomb", buildZip(t, []zipRecord{{"archive/data.pkl", make([]byte, 1<<20), zip.Deflate}}), "unknown opcode"},
		{"corrupt data", func() []byte {
			d := append([]byte(nil), good...)
			i := bytes.Index(d, []byte("model_cfg"))
			d[i] = 'M'
			return d
		}(), "checksum mismatch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readFast(t, tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
