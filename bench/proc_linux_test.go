package bench

// The /proc parsing behind peak RSS (Linux only).

import (
	"os"
	"testing"
)

func TestParseKB(t *testing.T) {
	if n, ok := parseKB("   123456 kB"); !ok || n != 123456*1024 {
		t.Errorf("got %d %v", n, ok)
	}
	for _, bad := range []string{"", "12", "12 MB", "x kB", "-1 kB"} {
		if _, ok := parseKB(bad); ok {
			t.Errorf("parseKB(%q) accepted", bad)
		}
	}
}

func TestPeakRSSOfSelf(t *testing.T) {
	rss, ok := peakRSS(os.Getpid())
	if !ok || rss < 1<<20 {
		t.Fatalf("peak RSS of the test process: %d %v", rss, ok)
	}
}
