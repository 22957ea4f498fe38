package harness

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// A long run keeps the start and the end of the output, and says how much
// of the middle it dropped.
func TestOutputLogKeepsHeadAndTail(t *testing.T) {
	o := newOutputLog()
	chunk := strings.Repeat("x", 64<<10-1) + "\n"
	fmt.Fprintf(o, "{\"msg\":\"listening\",\"addr\":\"127.0.0.1:4242\"}\n")
	written := 0
	for written < outputHeadCap+3*outputTailCap {
		n, err := o.Write([]byte(chunk))
		if err != nil || n != len(chunk) {
			t.Fatalf("write: %d %v", n, err)
		}
		written += n
	}
	fmt.Fprint(o, "the last line\n")
	out := o.String()
	if !strings.HasPrefix(out, `{"msg":"listening"`) || !strings.HasSuffix(out, "the last line\n") {
		t.Fatal("lost the start or the end")
	}
	if len(out) > outputHeadCap+2*outputTailCap+100 || !strings.Contains(out, "bytes of output dropped]") {
		t.Fatalf("%d bytes kept of %d, no drop noted", len(out), written)
	}
	if addr := o.listeningAddr(); addr != "127.0.0.1:4242" {
		t.Fatalf("listening address %q", addr)
	}
}

func TestTail(t *testing.T) {
	if got := Tail("short", 10); got != "short" {
		t.Errorf("got %q", got)
	}
	// Cut inside "é": the tail starts at the next whole character.
	if got := Tail("abcé€", 4); got != "…€" || !utf8.ValidString(got) {
		t.Errorf("got %q", got)
	}
}
