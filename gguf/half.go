package gguf

// The optional F16 file narrows float32 weights with round-to-nearest-even, as
// PyTorch's .half() does.

import (
	"fmt"
	"math"
)

// float32ToHalf narrows with round-to-nearest-even. Values beyond float16's range are
// an error rather than a silent infinity: a weight that large means the F16 file would
// not compute what the checkpoint does.
func float32ToHalf(f float32) (uint16, error) {
	bits := math.Float32bits(f)
	sign := uint16(bits>>16) & 0x8000
	exp := int32(bits>>23) & 0xff
	mant := bits & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00, nil // quiet NaN
		}
		return sign | 0x7c00, nil
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return 0, fmt.Errorf("value %g is outside float16's range", f)
	}
	if e <= 0 {
		// Subnormal (or zero) in float16: shift the full significand into place.
		if e < -10 {
			return sign, nil // rounds to zero
		}
		m := mant | 0x800000
		shift := uint32(14 - e)
		half := uint32(1) << (shift - 1)
		rest := m & (1<<shift - 1)
		out := m >> shift
		if rest > half || (rest == half && out&1 == 1) {
			out++ // may carry into the smallest normal, which is the right encoding
		}
		return sign | uint16(out), nil
	}
	out := uint32(e)<<10 | mant>>13
	rest := mant & 0x1fff
	if rest > 0x1000 || (rest == 0x1000 && out&1 == 1) {
		out++ // a carry into the exponent is correct rounding too
	}
	if out >= 0x7c00 {
		return 0, fmt.Errorf("value %g rounds outside float16's range", f)
	}
	return sign | uint16(out), nil
}
