package convert

// A strict, bounded unpickler for the pickles that torch.save writes.
//
// Python's own unpickler imports and calls whatever the file names, which is why a
// checkpoint from an untrusted source must never be loaded with it. This one
// builds inert Go values: a GLOBAL is looked up in a small table of names torch.save is
// known to emit (allowedGlobals) and anything else is refused, naming the global.
// Nothing the file says is ever executed; "calls" (REDUCE, NEWOBJ, BUILD) are
// interpreted only for the handful of known names, producing plain data.
//
// Every length read from the file is checked against the bytes actually left before
// anything is allocated, and the stack, mark stack and memo have fixed caps, so a
// hostile pickle fails fast instead of exhausting memory. No function of the
// unpickler recurses over the values the file builds, so deeply nested or cyclic
// structures cannot overflow the Go stack.
//
// This file holds the machine: its caps, its state (stack, marks, memo, work budget),
// the reading of operands and the errors it reports. The opcodes are in
// pickle_opcodes.go, the values they build in pickle_values.go, the table of allowed
// globals in pickle_globals.go and the interpretation of calls to them in
// pickle_calls.go.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
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
	v, err := u.top()
	if err != nil {
		return nil, err
	}
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

// top returns the value on top of the stack; values below the last MARK are out of
// reach until the mark is popped.
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
