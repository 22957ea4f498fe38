package harness

import (
	"math"
	"testing"
)

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	for _, c := range []struct{ p, want float64 }{
		{0, 1}, {50, 3}, {95, 4.8}, {100, 5}, {25, 2},
	} {
		if got := Percentile(xs, c.p); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("p%g of %v = %g, want %g", c.p, xs, got, c.want)
		}
	}
	if xs[0] != 5 {
		t.Errorf("Percentile sorted its input: %v", xs)
	}
	if got := Percentile([]float64{1, 2, 3, 4}, 50); got != 2.5 {
		t.Errorf("p50 of an even sample = %g, want 2.5", got)
	}
	if got := Percentile([]float64{7}, 95); got != 7 {
		t.Errorf("p95 of one sample = %g, want 7", got)
	}
	if got := Percentile(nil, 50); !math.IsNaN(got) {
		t.Errorf("p50 of nothing = %g, want NaN", got)
	}
}
