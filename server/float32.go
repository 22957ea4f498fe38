package server

// Shortest float32 text for probabilities, faster than strconv.
//
// A trace event carries H × t attention probabilities (1,024 at the deployed
// size), and printing them was most of the cost of encoding an event:
// strconv.AppendFloat(b, x, 'g', -1, 32) spends as much time choosing and
// laying out its format as finding the digits. appendFloat32 prints exactly
// the same bytes (TestAppendFloat32MatchesStrconv checks a sample on every
// run and every float32 in [0, 1] when asked) but, for values in [1e-13, 1),
// finds the digits with float64 arithmetic on the interval of reals that
// read back as x: the shortest decimal is the nearest to x among the
// multiples of 10^-k inside that interval, for the least k that has one.
// Every case the float64 arithmetic could get wrong (a scaled bound or value
// within rounding error of an integer or a half) is detected and left to
// strconv.

import (
	"math"
	"slices"
	"strconv"
)

// pow10 holds the powers of ten that float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// negPow10[i] is the float64 nearest to 10^-i. None of them is a float32 or a
// power of two, so comparing a float32 (or a power of two) with one orders it
// exactly as against 10^-i itself.
var negPow10 = [...]float64{1e0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9,
	1e-10, 1e-11, 1e-12, 1e-13, 1e-14, 1e-15, 1e-16, 1e-17, 1e-18, 1e-19, 1e-20, 1e-21, 1e-22}

// finerThanUlp[-e] is the least k with 10^-k narrower than 2^(e-23), the
// gap between float32s in the binade [2^e, 2^(e+1)); finerThanUlp3q the same
// for three quarters of it, the interval of a power of two.
var finerThanUlp, finerThanUlp3q = func() (a, b [64]int) {
	for e := range 64 {
		ulp := math.Ldexp(1, -e-23)
		for k := range negPow10 {
			if a[e] == 0 && negPow10[k] < ulp {
				a[e] = k
			}
			if b[e] == 0 && negPow10[k] < 0.75*ulp {
				b[e] = k
			}
		}
	}
	return a, b
}()

// fastMin is the smallest value the fast path takes: at most 9 digits after
// its first, the scale 10^k stays within the exact powers.
const fastMin = 1e-13

const log10of2 = 0.301029995663981195213738894724493026768189881462108541310

// slack is how close a scaled float64 may come to an integer or a half before
// the fast path gives up: scaled values stay below 10^10 with a relative
// error of 2^-53, so they are good to about 1e-6.
const slack = 1e-5

// appendFloat32 appends x as strconv.AppendFloat(b, float64(x), 'g', -1, 32)
// would.
func appendFloat32(b []byte, x float32) []byte {
	if x == 1 {
		return append(b, '1')
	}
	if x >= fastMin && x < 1 {
		if digits, n, exp, ok := shortestDigits(x); ok {
			return appendDigits(b, digits, n, exp)
		}
	}
	return strconv.AppendFloat(b, float64(x), 'g', -1, 32)
}

// shortestDigits finds the shortest decimal that reads back as x, for x in
// [fastMin, 1): n digits, as an integer, with exp the power of ten of the
// first. ok is false when float64 rounding could make the answer wrong.
func shortestDigits(x float32) (digits uint64, n, exp int, ok bool) {
	bits := math.Float32bits(x)
	e2 := int(bits>>23) - 127 // x = mant · 2^(e2-23), mant in [2^23, 2^24)
	mant := bits&(1<<23-1) | 1<<23
	v := float64(x)
	ulp := math.Float64frombits(uint64(e2-23+1023) << 52) // 2^(e2-23)
	// The reals that read back as x: halfway to each neighbour; the one below
	// a power of two is closer. All three are exact in float64.
	lo, hi := v-ulp/2, v+ulp/2
	if mant == 1<<23 {
		lo = v - ulp/4
	}
	// exp: 10^exp <= x < 10^(exp+1), from the binary exponent.
	exp = int(math.Floor(float64(e2) * log10of2))
	if exp+1 <= 0 && v >= negPow10[-(exp+1)] {
		exp++
	}
	// With 10^-k spacing narrower than the interval some multiple lies
	// inside, so n digits always do for the n where that first happens.
	k := finerThanUlp[-e2]
	if mant == 1<<23 {
		k = finerThanUlp3q[-e2]
	}
	n = min(max(k+1+exp, 1), 9)
	for n > 1 {
		has, fine := hasMultiple(lo, hi, n-2-exp)
		if !fine {
			return 0, 0, 0, false
		}
		if !has {
			break
		}
		n--
	}
	digits, ok = nearestInside(v, lo, hi, n-1-exp)
	if !ok {
		return 0, 0, 0, false
	}
	if digits == uint64(pow10[n]) { // rounded up to 10^n: one digit, a decade up
		digits, n, exp = 1, 1, exp+1
	}
	return digits, n, exp, true
}

// hasMultiple reports whether [lo, hi] holds an integer multiple of 10^-k.
// fine is false when a scaled bound is too close to an integer to tell.
func hasMultiple(lo, hi float64, k int) (has, fine bool) {
	l, u := lo*pow10[k], hi*pow10[k]
	cl, fu := math.Ceil(l), math.Floor(u)
	if cl-l < slack || u-fu < slack {
		return false, false
	}
	return cl <= fu, true
}

// nearestInside returns the multiple of 10^-k inside [lo, hi] nearest to v,
// scaled by 10^k.
func nearestInside(v, lo, hi float64, k int) (m uint64, ok bool) {
	l, u, s := lo*pow10[k], hi*pow10[k], v*pow10[k]
	cl, fu := math.Ceil(l), math.Floor(u)
	r := math.Floor(s + 0.5)
	if cl-l < slack || u-fu < slack || math.Abs(s-math.Floor(s)-0.5) < slack || cl > fu {
		return 0, false
	}
	return uint64(min(max(r, cl), fu)), true
}

// digitPairs holds "00" to "99": two digits per division by 100.
const digitPairs = "00010203040506070809101112131415161718192021222324252627282930313233343536373839" +
	"40414243444546474849505152535455565758596061626364656667686970717273747576777879" +
	"8081828384858687888990919293949596979899"

// putDigits writes the n decimal digits of d (zero-padded) into out[:n].
func putDigits(out []byte, d uint64, n int) {
	i := n
	for i >= 2 {
		q := d / 100
		r := (d - q*100) * 2
		out[i-2], out[i-1] = digitPairs[r], digitPairs[r+1]
		d = q
		i -= 2
	}
	if i == 1 {
		out[0] = byte('0' + d)
	}
}

// appendDigits lays out n digits with exponent exp (of the first digit) as
// the 'g' format does for the shortest form: %e below 1e-4, otherwise %f.
func appendDigits(b []byte, digits uint64, n, exp int) []byte {
	b = slices.Grow(b, 24) // "0.000" and 9 digits, or "d.dddddddde-13"
	out := b[len(b) : len(b)+24]
	if exp < -4 {
		e := -exp
		if n == 1 {
			out[0] = byte('0' + digits)
			out[1], out[2], out[3], out[4] = 'e', '-', byte('0'+e/10), byte('0'+e%10)
			return b[:len(b)+5]
		}
		putDigits(out[1:], digits, n) // then move the first digit before the point
		out[0], out[1] = out[1], '.'
		out[n+1], out[n+2], out[n+3], out[n+4] = 'e', '-', byte('0'+e/10), byte('0'+e%10)
		return b[:len(b)+n+5]
	}
	zeros := -exp - 1
	out[0], out[1] = '0', '.'
	for i := range zeros {
		out[2+i] = '0'
	}
	putDigits(out[2+zeros:], digits, n)
	return b[:len(b)+2+zeros+n]
}
