package testkit

import "testing"

func TestContainsAllNamesWhatIsMissing(t *testing.T) {
	r := &errorRecorder{}
	if !ContainsAll(r, "usage", "-model -port", "-model", "-port") || len(r.errs) != 0 {
		t.Fatalf("complete text reported: %q", r.errs)
	}
	if ContainsAll(r, "usage", "-model -port", "-model", "-offline", "env CKPT_DIR") {
		t.Fatal("missing fragments not noticed")
	}
	if want := "usage lacks [\"-offline\" \"env CKPT_DIR\"]:\n-model -port"; len(r.errs) != 1 || r.errs[0] != want {
		t.Fatalf("errors %q, want one: %q", r.errs, want)
	}
}
