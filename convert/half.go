// 16-bit float conversions: float16/bfloat16 checkpoints are widened to float32 exactly
// (every 16-bit value has an exact float32), and the optional F16 GGUF narrows float32
// with round-to-nearest-even, as PyTorch's .half() does.
package convert

import (
	"fmt"
	"math"
)

// halfToFloat32 widens an IEEE 754 binary16 value, subnormals, infinities and NaN
// payloads included.
func halfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf or NaN: keep the payload in the top mantissa bits
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: mant × 2^-24, exact in float32
		f := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// bfloat16ToFloat32 widens bfloat16, which is the top half of a float32.
func bfloat16ToFloat32(b uint16) float32 {
	return math.Float32frombits(uint32(b) << 16)
}

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
