package convert

// Interpreting calls to allowed globals: REDUCE, NEWOBJ and BUILD on the known names
// produce plain data (tensor references, dicts, sets, bytes, torch sizes and devices,
// numpy scalars) and never run anything the file names.

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// reduce interprets fn(*args). nested is false when called from _rebuild_from_type_v2,
// so that a file cannot chain calls into recursion.
func reduce(fn pyGlobal, args pyTuple, nested bool) (any, error) {
	switch fn.kind {
	case gOrderedDict, gSet, gPlainObject:
		return newObject(fn, args)
	case gRebuildTensor, gRebuildTensorV2, gRebuildTensorV3:
		return rebuildTensor(fn, args)
	case gRebuildParameter, gRebuildParameterWithState:
		return rebuildParameter(fn, args)
	case gRebuildFromTypeV2:
		if !nested {
			return nil, fmt.Errorf("%s nested inside itself", fn)
		}
		return rebuildFromTypeV2(fn, args)
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
		return codecsEncode(args)
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

// rebuildParameter interprets torch._utils._rebuild_parameter(data, requires_grad,
// backward_hooks[, state]): the parameter is its data.
func rebuildParameter(fn pyGlobal, args pyTuple) (any, error) {
	if len(args) < 3 {
		return nil, fmt.Errorf("%s: want at least 3 arguments, got %d", fn, len(args))
	}
	t, ok := args[0].(*tensorRef)
	if !ok {
		return nil, fmt.Errorf("%s: data is %s, want a tensor", fn, typeName(args[0]))
	}
	return t, nil
}

// rebuildFromTypeV2 interprets torch._tensor._rebuild_from_type_v2(func, new_type,
// args, state): a tensor (sub)class with extra attributes, rebuilt by one of the
// tensor rebuild functions and kept as the plain tensor it produces.
func rebuildFromTypeV2(fn pyGlobal, args pyTuple) (any, error) {
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
}

// codecsEncode interprets _codecs.encode(text, "latin1"), the way protocol 2 writes
// bytes.
func codecsEncode(args pyTuple) (any, error) {
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
