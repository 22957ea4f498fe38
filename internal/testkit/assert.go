package testkit

// Checks and stand-ins that many tests need the same way.

import (
	"compress/gzip"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// ContainsAll checks that got contains every one of wants, and reports the
// missing ones in a single error that quotes got once, under the name what
// ("usage", "the text report"). It returns whether nothing was missing.
func ContainsAll(t testing.TB, what, got string, wants ...string) bool {
	t.Helper()
	var missing []string
	for _, want := range wants {
		if !strings.Contains(got, want) {
			missing = append(missing, want)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%s lacks %q:\n%s", what, missing, got)
	}
	return len(missing) == 0
}

// EnvLookup is an environment made of vars, in the shape of os.LookupEnv,
// for code that reads its settings through a lookup function.
func EnvLookup(vars map[string]string) func(string) (string, bool) {
	return func(key string) (string, bool) {
		v, ok := vars[key]
		return v, ok
	}
}

// ReadGzipJSON decodes the gzipped JSON file at path (a golden too large to
// keep uncompressed) into v.
func ReadGzipJSON(t testing.TB, path string, v any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if err := json.NewDecoder(zr).Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
