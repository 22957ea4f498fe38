// A strict, bounded unpickler for the pickles that torch.save writes.
//
// Python's own unpickler imports and calls whatever the file names, which is why a
// checkpoint from an untrusted source must never be loaded with it (SPEC §6). This one
// builds inert Go values: a GLOBAL is looked up in a small table of names torch.save is
// known to emit (allowedGlobals) and anything else is refused, naming the global.
// Nothing the file says is ever executed; "calls" (REDUCE, NEWOBJ, BUILD) are
// interpreted only for the handful of known names, producing plain data.
//
// Every length read from the file is checked against the bytes actually left before
// anything is allocated, and the stack, mark stack and memo have fixed caps, so a
// hostile pickle fails fast instead of exhausting memory. No function here recurses
// over the values the file builds, so deeply nested or cyclic structures cannot
// overflow the Go stack.
package convert

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Caps on the unpickler's working state. Real checkpoints stay far below them: the
// deployed model's data.pkl has a few hundred memo entries and marks nest 5 deep.
const (
	maxPickleStack = 1 << 22
	maxPickleMarks = 1 << 12
	maxPickleMemo  = 1 << 22
	// LONG1/LONG4 integers: torch's legacy magic number needs 10 bytes; nothing a
	// checkpoint carries needs more than a few hundred.
	maxLongBytes = 1 << 10
	// GLOBAL names are text lines; Python module paths are short.
	maxGlobalLine = 1 << 10
)

// ---------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------

// The Go shapes of unpickled values:
//
//	None → nil, bool → bool, int → int64 or *big.Int, float → float64,
//	str → string, bytes/bytearray → []byte, tuple → pyTuple, list → *pyList,
//	dict/OrderedDict → *pyDict, set/frozenset → *pyList, allowed global → pyGlobal,
//	torch storage → *storageRef (from the container's persistent_load),
//	torch tensor → *tensorRef, numpy dtype → *npDtype, other allowed objects → *pyObject.
type pyTuple []any

// pyList is a pointer type because APPEND mutates a list that may also sit in the memo.
type pyList struct{ items []any }

// pyDict keeps insertion order (checkpoint keys are reported in file order) and
// indexes keys by a scalar encoding; only scalar keys are accepted (see dictKeyOf),
// which keeps hashing O(1) per item so SETITEMS cannot be made quadratic.
type pyDict struct {
	keys   []any
	values []any
	index  map[string]int
}

func newPyDict() *pyDict { return &pyDict{index: map[string]int{}} }

func (d *pyDict) set(k, v any) error {
	ks, err := dictKeyOf(k)
	if err != nil {
		return err
	}
	if i, ok := d.index[ks]; ok {
		d.values[i] = v
		return nil
	}
	d.index[ks] = len(d.keys)
	d.keys = append(d.keys, k)
	d.values = append(d.values, v)
	return nil
}

// get looks up a string key.
func (d *pyDict) get(key string) (any, bool) {
	i, ok := d.index["s"+key]
	if !ok {
		return nil, false
	}
	return d.values[i], true
}

// dictKeyOf encodes a hashable scalar so that equal Python keys map to equal strings.
// Python treats 1, 1.0 and True as the same key; checkpoints never mix them, so the
// encoding keeps them apart rather than reproduce that subtlety.
func dictKeyOf(k any) (string, error) {
	switch v := k.(type) {
	case string:
		return "s" + v, nil
	case int64:
		return "i" + strconv.FormatInt(v, 10), nil
	case bool:
		return "b" + strconv.FormatBool(v), nil
	case nil:
		return "n", nil
	case float64:
		return "f" + strconv.FormatUint(math.Float64bits(v), 16), nil
	default:
		return "", fmt.Errorf("dict key of type %s is not supported (only str, int64, float, bool and None keys)", typeName(k))
	}
}

// pyGlobal is a name from allowedGlobals; it is data, never code.
type pyGlobal struct {
	module, name string
	kind         globalKind
}

func (g pyGlobal) String() string { return g.module + "." + g.name }

// pyObject is an instance of an allowed plain-data class (e.g. argparse.Namespace in a
// train_cfg): its state is kept but never interpreted.
type pyObject struct {
	class pyGlobal
	args  pyTuple
	state any
}

// npDtype is a numpy dtype as numpy pickles it: numpy.dtype("f8", False, True) and then
// BUILD with a state tuple whose second item is the byte order.
type npDtype struct {
	code      string // "f8", "i4", "b1", ...
	byteOrder string // "<", ">", "|" or "=" (native, which numpy writes as "<" on x86/arm)
}

// typeName names a value's Python type for error messages.
func typeName(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case bool:
		return "bool"
	case int64, *big.Int:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case []byte:
		return "bytes"
	case pyTuple:
		return "tuple"
	case *pyList:
		return "list"
	case *pyDict:
		return "dict"
	case pyGlobal:
		return "global " + x.String()
	case *pyObject:
		return x.class.String() + " object"
	case *npDtype:
		return "numpy.dtype"
	case *storageRef:
		return "torch storage"
	case *tensorRef:
		return "torch.Tensor"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// ---------------------------------------------------------------------------------------
// Known globals
// ---------------------------------------------------------------------------------------

type globalKind int

const (
	gOrderedDict globalKind = iota + 1
	gRebuildTensor
	gRebuildTensorV2
	gRebuildTensorV3
	gRebuildParameter
	gRebuildParameterWithState
	gRebuildFromTypeV2
	gStorageType // torch.FloatStorage & co.: only ever an argument to persistent_load
	gTorchDtype  // torch.float32 & co.: only ever an argument (to _rebuild_tensor_v3)
	gTensorType  // torch.Tensor, torch.nn.parameter.Parameter: new_type of _rebuild_from_type_v2
	gTorchSize
	gTorchDevice
	gSet
	gBytes
	gCodecsEncode
	gNumpyScalar
	gNumpyDtype
	gPlainObject // inert record: argparse.Namespace, pathlib paths
)

// allowedGlobals is every module.name a checkpoint may reference. The list comes from
// what torch.save writes for a dict of ints, floats, strings, tensors and optimizer
// state (see the fixtures), plus what protocol 2 uses for bytes and sets, numpy
// scalars (a loss taken from numpy), and plain records often found in a train_cfg.
var allowedGlobals = map[string]globalKind{
	"collections.OrderedDict":                    gOrderedDict,
	"torch._utils._rebuild_tensor":               gRebuildTensor,
	"torch._utils._rebuild_tensor_v2":            gRebuildTensorV2,
	"torch._utils._rebuild_tensor_v3":            gRebuildTensorV3,
	"torch._utils._rebuild_parameter":            gRebuildParameter,
	"torch._utils._rebuild_parameter_with_state": gRebuildParameterWithState,
	"torch._tensor._rebuild_from_type_v2":        gRebuildFromTypeV2,
	"torch.Tensor":                               gTensorType,
	"torch._tensor.Tensor":                       gTensorType,
	"torch.nn.parameter.Parameter":               gTensorType,
	"torch.Size":                                 gTorchSize,
	"torch.device":                               gTorchDevice,
	"builtins.set":                               gSet,
	"builtins.frozenset":                         gSet,
	"__builtin__.set":                            gSet,
	"__builtin__.frozenset":                      gSet,
	"builtins.bytes":                             gBytes,
	"__builtin__.bytes":                          gBytes,
	"builtins.bytearray":                         gBytes,
	"__builtin__.bytearray":                      gBytes,
	"_codecs.encode":                             gCodecsEncode,
	"numpy.core.multiarray.scalar":               gNumpyScalar,
	"numpy._core.multiarray.scalar":              gNumpyScalar,
	"numpy.dtype":                                gNumpyDtype,
	"argparse.Namespace":                         gPlainObject,
	"pathlib.Path":                               gPlainObject,
	"pathlib.PosixPath":                          gPlainObject,
	"pathlib.WindowsPath":                        gPlainObject,
	"pathlib.PurePosixPath":                      gPlainObject,
	"pathlib.PureWindowsPath":                    gPlainObject,
	"pathlib._local.PosixPath":                   gPlainObject,
	"pathlib._local.WindowsPath":                 gPlainObject,
}

func init() {
	for name := range storageTypes {
		allowedGlobals["torch."+name] = gStorageType
	}
	for name := range torchDtypes {
		allowedGlobals["torch."+name] = gTorchDtype
	}
}

func lookupGlobal(module, name string) (pyGlobal, error) {
	kind, ok := allowedGlobals[module+"."+name]
	if !ok {
		return pyGlobal{}, fmt.Errorf("refusing pickle global %s.%s: not something a niels-gpt checkpoint contains (nothing in the file is executed)", module, name)
	}
	return pyGlobal{module: module, name: name, kind: kind}, nil
}

// ---------------------------------------------------------------------------------------
// The machine
// ---------------------------------------------------------------------------------------

// unpickler runs one pickle from data[pos:]; it stops at STOP and leaves pos after it,
// because torch's legacy format writes several pickles back to back.
type unpickler struct {
	data  []byte
	pos   int
	stack []any
	marks []int
	memo  map[uint32]any
	// persistentLoad resolves BINPERSID ids; torch uses them for storages.
	persistentLoad func(pid any) (any, error)
	// budget bounds the work done beyond one step per opcode. Memo references let a
	// small file name one large value many times (as a dict key, as call arguments);
	// every operation whose cost grows with a value's size is charged here, so such a
	// file fails fast instead of running for hours.
	budget int64
}

func newUnpickler(data []byte, persistentLoad func(any) (any, error)) *unpickler {
	return &unpickler{data: data, memo: map[uint32]any{}, persistentLoad: persistentLoad,
		budget: 16*int64(len(data)) + 1<<20}
}

func (u *unpickler) charge(n int) error {
	u.budget -= int64(n)
	if u.budget < 0 {
		return errors.New("pickle does far more work than its size accounts for (a large value referenced over and over)")
	}
	return nil
}

// chargeItems charges for hashing dict keys or scanning call arguments.
func (u *unpickler) chargeItems(items []any) error {
	if err := u.charge(1 + len(items)); err != nil {
		return err
	}
	for _, it := range items {
		switch v := it.(type) {
		case string:
			if err := u.charge(len(v)); err != nil {
				return err
			}
		case []byte:
			if err := u.charge(len(v)); err != nil {
				return err
			}
		}
	}
	return nil
}

// pickleError carries the opcode offset so a report on a broken file can be located.
type pickleError struct {
	offset int
	op     byte
	err    error
}

func (e *pickleError) Error() string {
	return fmt.Sprintf("pickle: at byte %d (opcode 0x%02x %s): %v", e.offset, e.op, opName(e.op), e.err)
}

func (e *pickleError) Unwrap() error { return e.err }

func opName(op byte) string {
	if n, ok := opNames[op]; ok {
		return n
	}
	return "unknown"
}

var opNames = map[byte]string{
	'(': "MARK", '.': "STOP", '0': "POP", '1': "POP_MARK", '2': "DUP", 'F': "FLOAT", 'I': "INT",
	'J': "BININT", 'K': "BININT1", 'L': "LONG", 'M': "BININT2", 'N': "NONE", 'P': "PERSID",
	'Q': "BINPERSID", 'R': "REDUCE", 'S': "STRING", 'T': "BINSTRING", 'U': "SHORT_BINSTRING",
	'V': "UNICODE", 'X': "BINUNICODE", 'a': "APPEND", 'b': "BUILD", 'c': "GLOBAL", 'd': "DICT",
	'}': "EMPTY_DICT", 'e': "APPENDS", 'g': "GET", 'h': "BINGET", 'i': "INST", 'j': "LONG_BINGET",
	'l': "LIST", ']': "EMPTY_LIST", 'o': "OBJ", 'p': "PUT", 'q': "BINPUT", 'r': "LONG_BINPUT",
	's': "SETITEM", 't': "TUPLE", ')': "EMPTY_TUPLE", 'u': "SETITEMS", 'G': "BINFLOAT",
	0x80: "PROTO", 0x81: "NEWOBJ", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x85: "TUPLE1",
	0x86: "TUPLE2", 0x87: "TUPLE3", 0x88: "NEWTRUE", 0x89: "NEWFALSE", 0x8a: "LONG1", 0x8b: "LONG4",
	'B': "BINBYTES", 'C': "SHORT_BINBYTES", 0x8c: "SHORT_BINUNICODE", 0x8d: "BINUNICODE8",
	0x8e: "BINBYTES8", 0x8f: "EMPTY_SET", 0x90: "ADDITEMS", 0x91: "FROZENSET", 0x92: "NEWOBJ_EX",
	0x93: "STACK_GLOBAL", 0x94: "MEMOIZE", 0x95: "FRAME", 0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER",
	0x98: "READONLY_BUFFER",
}

// run executes opcodes until STOP and returns the value left on the stack.
func (u *unpickler) run() (any, error) {
	for {
		if u.pos >= len(u.data) {
			return nil, fmt.Errorf("pickle: truncated: no STOP opcode before the end of the data (%d bytes)", len(u.data))
		}
		start := u.pos
		op := u.data[u.pos]
		u.pos++
		done, err := u.step(op)
		if err != nil {
			return nil, &pickleError{offset: start, op: op, err: err}
		}
		if done {
			if len(u.stack) != 1 || len(u.marks) != 0 {
				return nil, &pickleError{offset: start, op: op, err: fmt.Errorf("STOP with %d values on the stack and %d open marks (want 1 and 0)", len(u.stack), len(u.marks))}
			}
			return u.stack[0], nil
		}
	}
}

// take returns the next n bytes, checked against what is left.
func (u *unpickler) take(n uint64) ([]byte, error) {
	if n > uint64(len(u.data)-u.pos) {
		return nil, fmt.Errorf("length %d runs past the end of the data (%d bytes left)", n, len(u.data)-u.pos)
	}
	b := u.data[u.pos : u.pos+int(n)]
	u.pos += int(n)
	return b, nil
}

func (u *unpickler) u8() (uint64, error) {
	b, err := u.take(1)
	if err != nil {
		return 0, err
	}
	return uint64(b[0]), nil
}

func (u *unpickler) u16() (uint64, error) {
	b, err := u.take(2)
	if err != nil {
		return 0, err
	}
	return uint64(binary.LittleEndian.Uint16(b)), nil
}

func (u *unpickler) u32() (uint64, error) {
	b, err := u.take(4)
	if err != nil {
		return 0, err
	}
	return uint64(binary.LittleEndian.Uint32(b)), nil
}

func (u *unpickler) u64() (uint64, error) {
	b, err := u.take(8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// line reads a text line (GLOBAL operands), bounded so a missing newline fails fast.
func (u *unpickler) line() (string, error) {
	rest := u.data[u.pos:]
	if len(rest) > maxGlobalLine {
		rest = rest[:maxGlobalLine]
	}
	for i, c := range rest {
		if c == '\n' {
			u.pos += i + 1
			return string(rest[:i]), nil
		}
	}
	return "", fmt.Errorf("no newline within %d bytes", len(rest))
}

func (u *unpickler) push(v any) error {
	if len(u.stack) >= maxPickleStack {
		return fmt.Errorf("stack deeper than %d values", maxPickleStack)
	}
	u.stack = append(u.stack, v)
	return nil
}

func (u *unpickler) pop() (any, error) {
	base := 0
	if n := len(u.marks); n > 0 {
		base = u.marks[n-1]
	}
	if len(u.stack) <= base {
		return nil, fmt.Errorf("stack underflow")
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

func (u *unpickler) top() (any, error) {
	base := 0
	if n := len(u.marks); n > 0 {
		base = u.marks[n-1]
	}
	if len(u.stack) <= base {
		return nil, fmt.Errorf("stack underflow")
	}
	return u.stack[len(u.stack)-1], nil
}

// popMark returns the values pushed since the last MARK (a fresh slice) and drops the mark.
func (u *unpickler) popMark() ([]any, error) {
	n := len(u.marks)
	if n == 0 {
		return nil, fmt.Errorf("no MARK to pop to")
	}
	m := u.marks[n-1]
	u.marks = u.marks[:n-1]
	items := append([]any(nil), u.stack[m:]...)
	u.stack = u.stack[:m]
	return items, nil
}

func (u *unpickler) memoPut(idx uint64, v any) error {
	if idx > math.MaxUint32 {
		return fmt.Errorf("memo index %d out of range", idx)
	}
	if _, ok := u.memo[uint32(idx)]; !ok && len(u.memo) >= maxPickleMemo {
		return fmt.Errorf("memo larger than %d entries", maxPickleMemo)
	}
	u.memo[uint32(idx)] = v
	return nil
}

func (u *unpickler) memoGet(idx uint64) error {
	v, ok := u.memo[uint32(idx)]
	if idx > math.MaxUint32 || !ok {
		return fmt.Errorf("memo index %d was never stored", idx)
	}
	return u.push(v)
}

// pushString decodes a str operand. Python writes strict UTF-8 except for lone
// surrogates ("surrogatepass"); those cannot be meaningful in a checkpoint, so invalid
// UTF-8 is refused rather than guessed at.
func (u *unpickler) pushString(n uint64) error {
	b, err := u.take(n)
	if err != nil {
		return err
	}
	if !utf8.Valid(b) {
		return fmt.Errorf("string is not valid UTF-8")
	}
	return u.push(string(b))
}

func (u *unpickler) pushBytes(n uint64) error {
	b, err := u.take(n)
	if err != nil {
		return err
	}
	return u.push(append([]byte(nil), b...))
}

// step executes one opcode; done is true at STOP.
func (u *unpickler) step(op byte) (done bool, err error) {
	switch op {
	case 0x80: // PROTO
		p, err := u.u8()
		if err != nil {
			return false, err
		}
		if p < 2 || p > 5 {
			return false, fmt.Errorf("pickle protocol %d is not supported (torch.save writes 2 by default; 2..5 are read)", p)
		}
	case 0x95: // FRAME: framing is only a buffering hint; its length must still fit.
		n, err := u.u64()
		if err != nil {
			return false, err
		}
		if n > uint64(len(u.data)-u.pos) {
			return false, fmt.Errorf("frame of %d bytes runs past the end of the data", n)
		}
	case '.': // STOP
		return true, nil

	case '(': // MARK
		if len(u.marks) >= maxPickleMarks {
			return false, fmt.Errorf("marks nested deeper than %d", maxPickleMarks)
		}
		u.marks = append(u.marks, len(u.stack))
	case '0': // POP
		if n := len(u.marks); n > 0 && u.marks[n-1] == len(u.stack) {
			// Python pops the mark when the stack top is a mark.
			u.marks = u.marks[:n-1]
			return false, nil
		}
		_, err = u.pop()
	case '1': // POP_MARK
		_, err = u.popMark()
	case '2': // DUP
		v, err := u.top()
		if err != nil {
			return false, err
		}
		err = u.push(v)
		return false, err

	case 'N':
		err = u.push(nil)
	case 0x88:
		err = u.push(true)
	case 0x89:
		err = u.push(false)
	case 'J': // BININT: signed 32-bit
		v, err := u.u32()
		if err != nil {
			return false, err
		}
		return false, u.push(int64(int32(uint32(v))))
	case 'K': // BININT1
		v, err := u.u8()
		if err != nil {
			return false, err
		}
		return false, u.push(int64(v))
	case 'M': // BININT2
		v, err := u.u16()
		if err != nil {
			return false, err
		}
		return false, u.push(int64(v))
	case 0x8a, 0x8b: // LONG1, LONG4: little-endian two's complement of a given length
		var n uint64
		if op == 0x8a {
			n, err = u.u8()
		} else {
			n, err = u.u32()
		}
		if err != nil {
			return false, err
		}
		if n > maxLongBytes {
			return false, fmt.Errorf("integer of %d bytes is larger than any checkpoint needs (max %d)", n, maxLongBytes)
		}
		b, err := u.take(n)
		if err != nil {
			return false, err
		}
		return false, u.push(decodeLong(b))
	case 'G': // BINFLOAT: big-endian float64
		b, err := u.take(8)
		if err != nil {
			return false, err
		}
		return false, u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))

	case 'X': // BINUNICODE
		n, err := u.u32()
		if err != nil {
			return false, err
		}
		return false, u.pushString(n)
	case 0x8c: // SHORT_BINUNICODE
		n, err := u.u8()
		if err != nil {
			return false, err
		}
		return false, u.pushString(n)
	case 0x8d: // BINUNICODE8
		n, err := u.u64()
		if err != nil {
			return false, err
		}
		return false, u.pushString(n)
	case 'T', 'U': // BINSTRING, SHORT_BINSTRING: Python 2 str, read as Latin-1 like torch does
		var n uint64
		if op == 'T' {
			var v uint64
			v, err = u.u32()
			if int32(uint32(v)) < 0 {
				return false, fmt.Errorf("negative string length")
			}
			n = v
		} else {
			n, err = u.u8()
		}
		if err != nil {
			return false, err
		}
		b, err := u.take(n)
		if err != nil {
			return false, err
		}
		return false, u.push(latin1(b))
	case 'B': // BINBYTES
		n, err := u.u32()
		if err != nil {
			return false, err
		}
		return false, u.pushBytes(n)
	case 'C': // SHORT_BINBYTES
		n, err := u.u8()
		if err != nil {
			return false, err
		}
		return false, u.pushBytes(n)
	case 0x8e, 0x96: // BINBYTES8, BYTEARRAY8
		n, err := u.u64()
		if err != nil {
			return false, err
		}
		return false, u.pushBytes(n)

	case ')':
		err = u.push(pyTuple{})
	case 0x85, 0x86, 0x87: // TUPLE1..3
		n := int(op - 0x84)
		items := make(pyTuple, n)
		for i := n - 1; i >= 0; i-- {
			if items[i], err = u.pop(); err != nil {
				return false, err
			}
		}
		err = u.push(items)
	case 't': // TUPLE
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		return false, u.push(pyTuple(items))
	case ']':
		err = u.push(&pyList{})
	case 'l': // LIST
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		return false, u.push(&pyList{items: items})
	case 'a': // APPEND
		v, err := u.pop()
		if err != nil {
			return false, err
		}
		return false, u.appendTo(v)
	case 'e': // APPENDS
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		return false, u.appendTo(items...)
	case 0x8f: // EMPTY_SET
		err = u.push(&pyList{})
	case 0x90: // ADDITEMS
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		return false, u.appendTo(items...)
	case 0x91: // FROZENSET
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		return false, u.push(&pyList{items: items})
	case '}':
		err = u.push(newPyDict())
	case 'd': // DICT
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		if err := u.chargeItems(items); err != nil {
			return false, err
		}
		d := newPyDict()
		if err := setItems(d, items); err != nil {
			return false, err
		}
		return false, u.push(d)
	case 's': // SETITEM
		v, err := u.pop()
		if err != nil {
			return false, err
		}
		k, err := u.pop()
		if err != nil {
			return false, err
		}
		return false, u.setItemsOnTop([]any{k, v})
	case 'u': // SETITEMS
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		return false, u.setItemsOnTop(items)

	case 'q': // BINPUT
		idx, err := u.u8()
		if err != nil {
			return false, err
		}
		return false, u.putTop(idx)
	case 'r': // LONG_BINPUT
		idx, err := u.u32()
		if err != nil {
			return false, err
		}
		return false, u.putTop(idx)
	case 0x94: // MEMOIZE
		return false, u.putTop(uint64(len(u.memo)))
	case 'h': // BINGET
		idx, err := u.u8()
		if err != nil {
			return false, err
		}
		return false, u.memoGet(idx)
	case 'j': // LONG_BINGET
		idx, err := u.u32()
		if err != nil {
			return false, err
		}
		return false, u.memoGet(idx)

	case 'c': // GLOBAL "module\nname\n"
		module, err := u.line()
		if err != nil {
			return false, err
		}
		name, err := u.line()
		if err != nil {
			return false, err
		}
		g, err := lookupGlobal(module, name)
		if err != nil {
			return false, err
		}
		return false, u.push(g)
	case 0x93: // STACK_GLOBAL
		nameV, err := u.pop()
		if err != nil {
			return false, err
		}
		moduleV, err := u.pop()
		if err != nil {
			return false, err
		}
		module, ok1 := moduleV.(string)
		name, ok2 := nameV.(string)
		if !ok1 || !ok2 {
			return false, fmt.Errorf("STACK_GLOBAL needs two strings, got %s and %s", typeName(moduleV), typeName(nameV))
		}
		g, err := lookupGlobal(module, name)
		if err != nil {
			return false, err
		}
		return false, u.push(g)
	case 'R': // REDUCE: callable(*args), interpreted only for allowed globals
		argsV, err := u.pop()
		if err != nil {
			return false, err
		}
		fnV, err := u.pop()
		if err != nil {
			return false, err
		}
		args, ok := argsV.(pyTuple)
		if !ok {
			return false, fmt.Errorf("REDUCE arguments must be a tuple, got %s", typeName(argsV))
		}
		fn, ok := fnV.(pyGlobal)
		if !ok {
			return false, fmt.Errorf("REDUCE on %s, which is not a known global", typeName(fnV))
		}
		if err := u.chargeItems(args); err != nil {
			return false, err
		}
		v, err := reduce(fn, args, true)
		if err != nil {
			return false, err
		}
		return false, u.push(v)
	case 0x81, 0x92: // NEWOBJ, NEWOBJ_EX: cls.__new__(cls, *args[, **kwargs])
		if op == 0x92 {
			kw, err := u.pop()
			if err != nil {
				return false, err
			}
			if d, ok := kw.(*pyDict); !ok || len(d.keys) != 0 {
				return false, fmt.Errorf("NEWOBJ_EX with keyword arguments is not supported")
			}
		}
		argsV, err := u.pop()
		if err != nil {
			return false, err
		}
		clsV, err := u.pop()
		if err != nil {
			return false, err
		}
		args, ok := argsV.(pyTuple)
		if !ok {
			return false, fmt.Errorf("NEWOBJ arguments must be a tuple, got %s", typeName(argsV))
		}
		cls, ok := clsV.(pyGlobal)
		if !ok {
			return false, fmt.Errorf("NEWOBJ on %s, which is not a known class", typeName(clsV))
		}
		if err := u.chargeItems(args); err != nil {
			return false, err
		}
		v, err := newObject(cls, args)
		if err != nil {
			return false, err
		}
		return false, u.push(v)
	case 'b': // BUILD: obj.__setstate__(state)
		state, err := u.pop()
		if err != nil {
			return false, err
		}
		obj, err := u.top()
		if err != nil {
			return false, err
		}
		return false, build(obj, state)
	case 'Q': // BINPERSID
		pid, err := u.pop()
		if err != nil {
			return false, err
		}
		if u.persistentLoad == nil {
			return false, fmt.Errorf("persistent id in a pickle that may not have any")
		}
		v, err := u.persistentLoad(pid)
		if err != nil {
			return false, err
		}
		return false, u.push(v)

	case 'F', 'I', 'L', 'S', 'V', 'P', 'g', 'p', 'i', 'o':
		return false, fmt.Errorf("text (protocol 0) opcode %s is not supported: torch.save writes protocol 2 or later", opName(op))
	case 0x82, 0x83, 0x84:
		return false, fmt.Errorf("extension registry opcodes are not supported")
	case 0x97, 0x98:
		return false, fmt.Errorf("out-of-band buffers are not supported")
	default:
		return false, fmt.Errorf("unknown opcode")
	}
	return false, err
}

func (u *unpickler) putTop(idx uint64) error {
	v, err := u.top()
	if err != nil {
		return err
	}
	return u.memoPut(idx, v)
}

func (u *unpickler) appendTo(items ...any) error {
	t, err := u.top()
	if err != nil {
		return err
	}
	l, ok := t.(*pyList)
	if !ok {
		return fmt.Errorf("APPEND to %s, want a list or set", typeName(t))
	}
	if len(l.items)+len(items) > cap(l.items) {
		// Growing copies the list; normal doubling keeps the total linear, but a list
		// shared with a set (see newObject) would otherwise be copied at every append.
		if err := u.charge(len(l.items)); err != nil {
			return err
		}
	}
	l.items = append(l.items, items...)
	return nil
}

func (u *unpickler) setItemsOnTop(items []any) error {
	if err := u.chargeItems(items); err != nil {
		return err
	}
	t, err := u.top()
	if err != nil {
		return err
	}
	d, ok := t.(*pyDict)
	if !ok {
		return fmt.Errorf("SETITEM on %s, want a dict", typeName(t))
	}
	return setItems(d, items)
}

func setItems(d *pyDict, items []any) error {
	if len(items)%2 != 0 {
		return fmt.Errorf("odd number of items (%d) for a dict", len(items))
	}
	for i := 0; i < len(items); i += 2 {
		if err := d.set(items[i], items[i+1]); err != nil {
			return err
		}
	}
	return nil
}

// decodeLong decodes a little-endian two's-complement integer.
func decodeLong(b []byte) any {
	if len(b) == 0 {
		return int64(0)
	}
	if len(b) <= 8 {
		var v uint64
		for i := len(b) - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[i])
		}
		shift := uint(64 - 8*len(b))
		return int64(v<<shift) >> shift // sign-extend
	}
	be := make([]byte, len(b))
	for i := range b {
		be[len(b)-1-i] = b[i]
	}
	v := new(big.Int).SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		v.Sub(v, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	if v.IsInt64() {
		return v.Int64()
	}
	return v
}

func latin1(b []byte) string {
	var sb strings.Builder
	sb.Grow(len(b))
	for _, c := range b {
		sb.WriteRune(rune(c))
	}
	return sb.String()
}

// ---------------------------------------------------------------------------------------
// Interpreting calls to allowed globals
// ---------------------------------------------------------------------------------------

// reduce interprets fn(*args). nested is false when called from _rebuild_from_type_v2,
// so that a file cannot chain calls into recursion.
func reduce(fn pyGlobal, args pyTuple, nested bool) (any, error) {
	switch fn.kind {
	case gOrderedDict, gSet, gPlainObject:
		return newObject(fn, args)
	case gRebuildTensor, gRebuildTensorV2, gRebuildTensorV3:
		return rebuildTensor(fn, args)
	case gRebuildParameter, gRebuildParameterWithState:
		// (data, requires_grad, backward_hooks[, state]): the parameter is its data.
		if len(args) < 3 {
			return nil, fmt.Errorf("%s: want at least 3 arguments, got %d", fn, len(args))
		}
		t, ok := args[0].(*tensorRef)
		if !ok {
			return nil, fmt.Errorf("%s: data is %s, want a tensor", fn, typeName(args[0]))
		}
		return t, nil
	case gRebuildFromTypeV2:
		// (func, new_type, args, state): a tensor (sub)class with extra attributes.
		if !nested {
			return nil, fmt.Errorf("%s nested inside itself", fn)
		}
		if len(args) != 4 {
			return nil, fmt.Errorf("%s: want 4 arguments, got %d", fn, len(args))
		}
		inner, ok1 := args[0].(pyGlobal)
		typ, ok2 := args[1].(pyGlobal)
		innerArgs, ok3 := args[2].(pyTuple)
		if !ok1 || !ok2 || !ok3 || typ.kind != gTensorType {
			return nil, fmt.Errorf("%s: want (rebuild function, tensor type, args, state)", fn)
		}
		switch inner.kind {
		case gRebuildTensor, gRebuildTensorV2, gRebuildTensorV3, gRebuildParameter, gRebuildParameterWithState:
		default:
			return nil, fmt.Errorf("%s: %s does not rebuild a tensor", fn, inner)
		}
		v, err := reduce(inner, innerArgs, false)
		if err != nil {
			return nil, err
		}
		if _, ok := v.(*tensorRef); !ok {
			return nil, fmt.Errorf("%s: %s did not produce a tensor", fn, inner)
		}
		return v, nil
	case gTorchSize:
		if len(args) != 1 {
			return nil, fmt.Errorf("torch.Size: want 1 argument, got %d", len(args))
		}
		switch s := args[0].(type) {
		case pyTuple:
			return s, nil
		case *pyList:
			return pyTuple(s.items), nil
		}
		return nil, fmt.Errorf("torch.Size of %s", typeName(args[0]))
	case gTorchDevice:
		// Storage locations are ignored; a device is kept only as its name.
		if len(args) > 2 {
			return nil, fmt.Errorf("torch.device: want (type[, index]), got %d arguments", len(args))
		}
		parts := make([]string, 0, 2)
		for _, a := range args {
			parts = append(parts, fmt.Sprint(a))
		}
		return strings.Join(parts, ":"), nil
	case gBytes:
		if len(args) == 0 {
			return []byte{}, nil
		}
		if b, ok := args[0].([]byte); ok && len(args) == 1 {
			return b, nil
		}
		return nil, fmt.Errorf("%s(%s) is not supported", fn, typeName(args[0]))
	case gCodecsEncode:
		// Protocol 2 writes bytes as _codecs.encode(text, "latin1").
		if len(args) != 2 {
			return nil, fmt.Errorf("_codecs.encode: want 2 arguments, got %d", len(args))
		}
		s, ok1 := args[0].(string)
		enc, ok2 := args[1].(string)
		if !ok1 || !ok2 || (enc != "latin1" && enc != "latin-1") {
			return nil, fmt.Errorf("_codecs.encode: only (str, \"latin1\") is supported")
		}
		out := make([]byte, 0, len(s))
		for _, r := range s {
			if r > 0xff {
				return nil, fmt.Errorf("_codecs.encode: character U+%04X is not Latin-1", r)
			}
			out = append(out, byte(r))
		}
		return out, nil
	case gNumpyDtype:
		if len(args) < 1 {
			return nil, fmt.Errorf("numpy.dtype: missing type code")
		}
		code, ok := args[0].(string)
		if !ok {
			return nil, fmt.Errorf("numpy.dtype: type code is %s", typeName(args[0]))
		}
		return &npDtype{code: code, byteOrder: "="}, nil
	case gNumpyScalar:
		return numpyScalar(args)
	}
	return nil, fmt.Errorf("%s cannot be called", fn)
}

// newObject interprets cls.__new__(cls, *args) for the allowed classes.
func newObject(cls pyGlobal, args pyTuple) (any, error) {
	switch cls.kind {
	case gOrderedDict:
		// Python pickles an OrderedDict as OrderedDict() followed by SETITEMS, never
		// with its items as arguments (which would cost a copy per reference).
		if len(args) != 0 {
			return nil, fmt.Errorf("collections.OrderedDict: want no arguments, got %d", len(args))
		}
		return newPyDict(), nil
	case gSet:
		if len(args) == 0 {
			return &pyList{}, nil
		}
		if l, ok := args[0].(*pyList); ok && len(args) == 1 {
			// Shares the list's items: sets are never read, and copying would let a
			// file pay once for a list and make us copy it at every reference.
			return &pyList{items: l.items[:len(l.items):len(l.items)]}, nil
		}
		return nil, fmt.Errorf("%s: only () or (list,) is supported", cls)
	case gPlainObject:
		return &pyObject{class: cls, args: args}, nil
	}
	return nil, fmt.Errorf("%s cannot be instantiated", cls)
}

// build interprets BUILD (setting an object's state) for the objects that torch.save
// output carries state on; the state is kept or ignored, never executed.
func build(obj, state any) error {
	switch o := obj.(type) {
	case *pyDict:
		// An OrderedDict state_dict carries its `_metadata` attribute this way.
		return nil
	case *tensorRef:
		// Tensor attributes (rare); the weights do not depend on them.
		return nil
	case *pyObject:
		o.state = state
		return nil
	case *npDtype:
		t, ok := state.(pyTuple)
		if !ok || len(t) < 2 {
			return fmt.Errorf("numpy.dtype state is %s, want a tuple", typeName(state))
		}
		bo, ok := t[1].(string)
		if !ok {
			return fmt.Errorf("numpy.dtype byte order is %s", typeName(t[1]))
		}
		o.byteOrder = bo
		return nil
	}
	return fmt.Errorf("BUILD on %s is not supported", typeName(obj))
}

// numpyScalar decodes numpy.core.multiarray.scalar(dtype, raw bytes) for the numeric
// dtypes; a loss or step taken from numpy arrives this way.
func numpyScalar(args pyTuple) (any, error) {
	if len(args) != 2 {
		return nil, fmt.Errorf("numpy scalar: want (dtype, bytes), got %d arguments", len(args))
	}
	dt, ok1 := args[0].(*npDtype)
	raw, ok2 := args[1].([]byte)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("numpy scalar: want (dtype, bytes), got (%s, %s)", typeName(args[0]), typeName(args[1]))
	}
	if len(dt.code) < 2 {
		return nil, fmt.Errorf("numpy scalar of dtype %q is not supported", dt.code)
	}
	size, err := strconv.Atoi(dt.code[1:])
	if err != nil || size != len(raw) {
		return nil, fmt.Errorf("numpy scalar: dtype %q does not match %d bytes", dt.code, len(raw))
	}
	var order binary.ByteOrder = binary.LittleEndian
	if dt.byteOrder == ">" {
		order = binary.BigEndian
	}
	var bits uint64
	switch size {
	case 1:
		bits = uint64(raw[0])
	case 2:
		bits = uint64(order.Uint16(raw))
	case 4:
		bits = uint64(order.Uint32(raw))
	case 8:
		bits = order.Uint64(raw)
	default:
		return nil, fmt.Errorf("numpy scalar of dtype %q is not supported", dt.code)
	}
	switch dt.code[0] {
	case 'f':
		switch size {
		case 2:
			return float64(halfToFloat32(uint16(bits))), nil
		case 4:
			return float64(math.Float32frombits(uint32(bits))), nil
		case 8:
			return math.Float64frombits(bits), nil
		}
	case 'i':
		shift := uint(64 - 8*size)
		return int64(bits<<shift) >> shift, nil
	case 'u':
		if bits > math.MaxInt64 {
			return nil, fmt.Errorf("numpy uint64 scalar %d does not fit an int64", bits)
		}
		return int64(bits), nil
	case 'b':
		if size == 1 {
			return bits != 0, nil
		}
	}
	return nil, fmt.Errorf("numpy scalar of dtype %q is not supported", dt.code)
}
