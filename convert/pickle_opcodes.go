package convert

// The unpickler's opcodes: step executes one (protocols 2 to 5, the binary ones
// torch.save writes; text, extension and out-of-band opcodes are refused), and the
// helpers beside it mutate lists, sets and dicts on the stack, put values in the memo
// and decode LONG and Latin-1 operands.

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"strings"
)

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
		fn, args, err := u.popCall("REDUCE", "global")
		if err != nil {
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
		cls, args, err := u.popCall("NEWOBJ", "class")
		if err != nil {
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

// popCall pops what REDUCE and NEWOBJ apply, a callable and its argument tuple,
// checks that the callable is an allowed global and charges for scanning the
// arguments. opcode and callee ("global", "class") name them in errors.
func (u *unpickler) popCall(opcode, callee string) (pyGlobal, pyTuple, error) {
	argsV, err := u.pop()
	if err != nil {
		return pyGlobal{}, nil, err
	}
	fnV, err := u.pop()
	if err != nil {
		return pyGlobal{}, nil, err
	}
	args, ok := argsV.(pyTuple)
	if !ok {
		return pyGlobal{}, nil, fmt.Errorf("%s arguments must be a tuple, got %s", opcode, typeName(argsV))
	}
	fn, ok := fnV.(pyGlobal)
	if !ok {
		return pyGlobal{}, nil, fmt.Errorf("%s on %s, which is not a known %s", opcode, typeName(fnV), callee)
	}
	if err := u.chargeItems(args); err != nil {
		return pyGlobal{}, nil, err
	}
	return fn, args, nil
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
