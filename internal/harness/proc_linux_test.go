package harness

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

func TestMemoryOfSelf(t *testing.T) {
	rss, peak, err := Memory(os.Getpid())
	if err != nil || rss < 1<<20 || peak < rss {
		t.Fatalf("memory of the test process: RSS %d, peak %d, %v", rss, peak, err)
	}
	if _, _, err := Memory(-1); err == nil {
		t.Fatal("read the memory of pid -1")
	}
}

func TestLoadAverage(t *testing.T) {
	if l, ok := LoadAverage(); !ok || l < 0 {
		t.Fatalf("load average %v %v", l, ok)
	}
}
