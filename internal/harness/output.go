package harness

// The server's output, as the harness keeps it. A soak or a bench run writes
// one access-log line per request, so keeping everything would grow with the
// length of the run; what callers need is the start (the "listening" line,
// start-up messages, a whole short run for the tests to grep) and the end
// (what the server said last before it failed). outputLog keeps both and
// says how much it dropped in between.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
)

const (
	outputHeadCap = 16 << 20 // the first bytes, kept whole
	outputTailCap = 1 << 20  // the latest bytes once the head is full
)

type outputLog struct {
	mu      sync.Mutex
	head    []byte
	tail    []byte // at most 2*outputTailCap; trimmed to outputTailCap when over
	dropped int64  // bytes between head and tail that were not kept
	addr    string // the listening address, once seen
	notify  chan struct{}
}

func newOutputLog() *outputLog { return &outputLog{notify: make(chan struct{})} }

func (o *outputLog) Write(b []byte) (int, error) {
	n := len(b) // reported in full even when dropped: a short write would fail the child's logging
	o.mu.Lock()
	defer o.mu.Unlock()
	if room := outputHeadCap - len(o.head); room > 0 {
		k := min(room, len(b))
		o.head = append(o.head, b[:k]...)
		b = b[k:]
	}
	if len(b) > 0 {
		o.tail = append(o.tail, b...)
		// Trimming only once the tail has doubled keeps the copying linear
		// in what is written.
		if len(o.tail) > 2*outputTailCap {
			over := len(o.tail) - outputTailCap
			o.dropped += int64(over)
			o.tail = append(o.tail[:0], o.tail[over:]...)
		}
	}
	close(o.notify)
	o.notify = make(chan struct{})
	return n, nil
}

// changed is closed at the next write, so Start wakes when a line arrives.
func (o *outputLog) changed() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.notify
}

func (o *outputLog) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dropped > 0 {
		return fmt.Sprintf("%s\n[testkit: %d bytes of output dropped]\n%s", o.head, o.dropped, o.tail)
	}
	return string(o.head) + string(o.tail)
}

// listeningAddr finds the address in the server's `"msg":"listening"` log
// line, which comes within the first few lines, so only the head is read.
func (o *outputLog) listeningAddr() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.addr != "" {
		return o.addr
	}
	for _, line := range bytes.Split(o.head, []byte("\n")) {
		if !bytes.Contains(line, []byte(`"msg":"listening"`)) {
			continue
		}
		var entry struct {
			Addr string `json:"addr"`
		}
		if json.Unmarshal(line, &entry) == nil && strings.HasPrefix(entry.Addr, "127.0.0.1:") {
			o.addr = entry.Addr
			return o.addr
		}
	}
	return ""
}

// Tail is the last n bytes of s (from the start of a character), after "…"
// when something was cut: the end of a long log, for a failure message.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := len(s) - n
	for i < len(s) && !utf8.RuneStart(s[i]) {
		i++
	}
	return "…" + s[i:]
}
