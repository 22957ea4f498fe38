package convert

// The Go values the unpickler builds: tuples, lists, insertion-ordered dicts with
// scalar keys, references to allowed globals, inert plain-data objects and numpy
// dtypes, and typeName, which names a value's Python type in error messages.

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
)

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
