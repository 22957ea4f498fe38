// Tests for sanitising in nielsgpt chat: hostile input is echoed safely.
package main

import (
	"context"
	"strings"
	"testing"
)

// Whatever a user pipes in is echoed as valid UTF-8 with controls made
// visible, and reaches the model as it was typed.
func TestChatLoopEchoesHostileInputSafely(t *testing.T) {
	m := &scriptedModel{cfg: scriptedConfig, replies: []string{"k"}}
	rec := &utf8Recorder{t: t}
	if err := chatLoop(context.Background(), strings.NewReader("bad\xff \x1b[31mred\n"), rec, m, defaultTestOptions()); err != nil {
		t.Fatal(err)
	}
	if got, want := rec.String(), "you> bad\ufffd \\x1b[31mred\nbot> k\n"; got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
	if p := m.prompt(0); !strings.Contains(p, "user: bad\xff \x1b[31mred\n") {
		t.Fatalf("prompt %q", p)
	}
}
