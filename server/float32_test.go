package server

import (
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
)

func checkFloat32(t *testing.T, x float32) {
	want := strconv.AppendFloat(nil, float64(x), 'g', -1, 32)
	if got := appendFloat32(nil, x); string(got) != string(want) {
		t.Fatalf("%v (bits %#08x): %s, strconv %s", x, math.Float32bits(x), got, want)
	}
}

// appendFloat32 must print exactly what strconv prints: clients parse these
// bytes today. A sample runs always; NIELSGPT_FLOAT32_EXHAUSTIVE=1 checks
// every float32 in [0, 1] (about a billion; minutes).
func TestAppendFloat32MatchesStrconv(t *testing.T) {
	for _, x := range []float32{0, float32(math.Copysign(0, -1)), 1, 0.5, 0.1, 0.25, 1e-4, 9.9999e-5, 1e-5, 1e-13, 9.99e-14,
		1.4e-45, math.MaxFloat32, -0.5, 2, 5.5451775, 0.099999994, 0.099999996, 0.9999999, 0.00010000001,
		float32(math.Inf(1)), float32(math.NaN())} {
		checkFloat32(t, x)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	for range 2_000_000 {
		checkFloat32(t, math.Float32frombits(rng.Uint32()&0x3fffffff)) // below 2
		checkFloat32(t, rng.Float32())
	}
	// Every float32 around the powers of ten, where the decade changes.
	for e := -14; e <= 0; e++ {
		p := math.Float32bits(float32(math.Pow10(e)))
		for b := p - 2000; b <= p+2000; b++ {
			checkFloat32(t, math.Float32frombits(b))
		}
	}
	if os.Getenv("NIELSGPT_FLOAT32_EXHAUSTIVE") != "1" {
		return
	}
	for b := uint32(0); b <= math.Float32bits(1); b++ {
		checkFloat32(t, math.Float32frombits(b))
	}
}

func BenchmarkAppendFloat32(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	xs := make([]float32, 1024)
	for i := range xs {
		xs[i] = rng.Float32() / 64
	}
	buf := make([]byte, 0, 16<<10)
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			buf = buf[:0]
			for _, x := range xs {
				buf = appendFloat32(buf, x)
			}
		}
	})
	b.Run("strconv", func(b *testing.B) {
		for b.Loop() {
			buf = buf[:0]
			for _, x := range xs {
				buf = strconv.AppendFloat(buf, float64(x), 'g', -1, 32)
			}
		}
	})
}
