// Tests for nielsgpt chat --trace: the attention ranking on its own, the trace
// lines against a scripted model, and their shape against a real tiny model.
package main

import (
	"context"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"nielsgpt/internal/testkit"
)

func TestTopAttended(t *testing.T) {
	tokens := bytesToIDs("xxhello") // window of the last 5: h e l l o
	attn := [][]float32{
		{0.1, 0.2, 0.3, 0.0, 0.4},
		{0.3, 0.2, 0.1, 0.0, 0.4},
	}
	top, err := topAttended(attn, tokens, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []attended{{1, 'o', 0.4}, {5, 'h', 0.2}, {3, 'l', 0.2}}
	// Equal weights: the nearer position first.
	want[1], want[2] = want[2], want[1]
	if len(top) != 3 {
		t.Fatalf("got %v", top)
	}
	for i := range want {
		if top[i].distance != want[i].distance || top[i].token != want[i].token || math.Abs(top[i].weight-want[i].weight) > 1e-6 {
			t.Fatalf("top %d: got %+v, want %+v (all %+v)", i, top[i], want[i], top)
		}
	}
	if top, _ := topAttended([][]float32{{1}}, bytesToIDs("a"), 3); len(top) != 1 || top[0].token != 'a' {
		t.Fatalf("one-position window: %+v", top)
	}
	for _, bad := range [][][]float32{nil, {{}}, {{0.5, 0.5}, {1}}, {make([]float32, 9)}} {
		if _, err := topAttended(bad, tokens, 3); err == nil {
			t.Errorf("attention %v over %d tokens: no error", bad, len(tokens))
		}
	}
}

func TestChatLoopTraceScripted(t *testing.T) {
	m := &scriptedModel{cfg: scriptedConfig, replies: []string{"hé"}}
	rec := &utf8Recorder{t: t}
	opts := defaultTestOptions()
	opts.Trace = true
	opts.System = ""
	if err := chatLoop(context.Background(), strings.NewReader("yo\n"), rec, m, opts); err != nil {
		t.Fatal(err)
	}
	out := rec.String()
	// Every step attended only to the newest byte: ' ' (of "assistant: "), then 'h', then 0xc3.
	testkit.ContainsAll(t, "trace output", out,
		"     0  'h'       H=0.50  ← ' '@-1(1.00)\n",
		"     1  '\\xc3'    H=0.50  ← 'h'@-1(1.00)\n",
		"     2  '\\xa9'    H=0.50  ← '\\xc3'@-1(1.00)\n",
		"bot> hé\n",
	)
}

var traceLine = regexp.MustCompile(`^\s+(\d+)\s+'(\\x[0-9a-f]{2}|.)'\s+H=(\d+\.\d\d)\s+← (.*)$`)
var attendedItem = regexp.MustCompile(`'(\\x[0-9a-f]{2}|.)'@-(\d+)\((\d\.\d\d)\)`)

func TestChatLoopTinyModelTrace(t *testing.T) {
	model := tinyModel(t)
	cfg := model.Config()
	rec := &utf8Recorder{t: t}
	opts := defaultTestOptions()
	opts.Trace = true
	opts.TraceLayer = cfg.Layers - 1
	opts.MaxNewTokens = 30
	if err := chatLoop(context.Background(), strings.NewReader("hi\nwhat?\n"), rec, model, opts); err != nil {
		t.Fatal(err)
	}
	out := rec.String()
	steps, expectNext := 0, 0
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "bot> ") {
			expectNext = 0
			continue
		}
		if strings.HasPrefix(line, "you> ") || strings.HasPrefix(line, "  step") || line == "" {
			continue
		}
		m := traceLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("not a trace line: %q\n%s", line, out)
		}
		if idx, _ := strconv.Atoi(m[1]); idx != expectNext {
			t.Fatalf("step %d, want %d: %q", idx, expectNext, line)
		}
		expectNext++
		steps++
		h, _ := strconv.ParseFloat(m[3], 64)
		if h < 0 || h > math.Log(256)+0.01 {
			t.Errorf("entropy %v out of [0, ln 256]: %q", h, line)
		}
		items := attendedItem.FindAllStringSubmatch(m[4], -1)
		if len(items) == 0 || len(items) > 3 {
			t.Fatalf("want 1..3 attended bytes: %q", line)
		}
		sum, prev := 0.0, 2.0
		for _, it := range items {
			w, _ := strconv.ParseFloat(it[3], 64)
			d, _ := strconv.Atoi(it[2])
			if w < 0 || w > 1 || w > prev+1e-9 || d < 1 || d > cfg.Context {
				t.Errorf("attended %q: weight %v (previous %v), distance %d: %q", it[0], w, prev, d, line)
			}
			sum += w
			prev = w
		}
		if sum > 1.02 {
			t.Errorf("top attention weights sum to %v: %q", sum, line)
		}
	}
	if steps < 2 || strings.Count(out, "bot> ") != 2 {
		t.Fatalf("want trace lines and 2 replies:\n%s", out)
	}
}

func bytesToIDs(s string) []int32 {
	ids := make([]int32, len(s))
	for i := range len(s) {
		ids[i] = int32(s[i])
	}
	return ids
}
