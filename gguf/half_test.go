package gguf

import (
	"math"
	"testing"
)

// halfValue is an independent widening for the tests: sign × mantissa × 2^exponent,
// computed in float64.
func halfValue(h uint16) float64 {
	exp := int(h>>10) & 0x1f
	mant := float64(h & 0x3ff)
	v := math.Ldexp(mant, -24) // subnormal
	if exp != 0 {
		v = math.Ldexp(1024+mant, exp-25)
	}
	if h&0x8000 != 0 {
		v = -v
	}
	return v
}

func TestFloat32ToHalf(t *testing.T) {
	// Every finite half, widened, narrows back to itself.
	for h := 0; h < 1<<16; h++ {
		if h&0x7c00 == 0x7c00 {
			continue
		}
		f := float32(halfValue(uint16(h)))
		back, err := float32ToHalf(f)
		if err != nil || back != uint16(h) {
			t.Fatalf("half %#04x -> %v -> %#04x (%v)", h, f, back, err)
		}
	}
	// Rounding: ties go to even, in the normal and the subnormal range.
	rounding := []struct {
		in   float32
		want uint16
	}{
		{1 + 1.0/2048, 0x3c00},             // tie, even is down
		{1 + 3.0/2048, 0x3c02},             // tie, even is up
		{1 + 1.0/2048 + 1.0/65536, 0x3c01}, // just above the tie
		{2.9802322387695312e-08, 0x0000},   // half the smallest subnormal: tie to 0
		{4.470348358154297e-08, 0x0001},    // 0.75 of it
		{65519, 0x7bff},                    // rounds down to the largest half
		{float32(math.Inf(1)), 0x7c00},
		{float32(math.Inf(-1)), 0xfc00},
	}
	for _, r := range rounding {
		if got, err := float32ToHalf(r.in); err != nil || got != r.want {
			t.Errorf("float32ToHalf(%v) = %#04x, %v; want %#04x", r.in, got, err, r.want)
		}
	}
	if got, _ := float32ToHalf(float32(math.NaN())); got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
		t.Errorf("NaN narrowed to %#04x", got)
	}
	for _, f := range []float32{65520, 1e6, -70000} {
		if _, err := float32ToHalf(f); err == nil {
			t.Errorf("float32ToHalf(%v) did not refuse an out-of-range value", f)
		}
	}
}
