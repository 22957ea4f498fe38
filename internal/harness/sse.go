package harness

// The client's reader for text/event-stream bodies, shared by `nielsgpt
// bench`, the soak driver and the reliability tests. It is small and
// allocation-light on purpose: the bench driver shares the CPU with the
// server it measures, so every cycle it spends parsing is a cycle the
// server loses.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"iter"
)

// Event is one server-sent event. Data is only valid until the next call to
// Next: the reader reuses its buffer so a long stream does not allocate per event.
type Event struct {
	Name string // "message" when the event had no `event:` field (as browsers do)
	Data []byte
}

// maxSSELine bounds one line of the stream, so a broken or hostile server
// cannot make a reader buffer without limit. A trace event of the deployed
// model is about 12 KiB; a full-window trace for a large context is well
// under this.
const maxSSELine = 4 << 20

var errSSELineTooLong = errors.New("sse: line longer than 4 MiB")

// SSEReader splits a text/event-stream body into events (the WHATWG
// EventSource rules, minus `id:` and `retry:`, which no reader here has a
// use for). Lines may end in LF or CRLF; a lone CR as a line ending is not
// recognised, since no server this project talks to emits one.
type SSEReader struct {
	r    *bufio.Reader
	name string
	data []byte
	long []byte // reassembly buffer for lines longer than r's buffer
	err  error  // what ended Events; nil at a clean end
}

// NewSSEReader reads events from r.
func NewSSEReader(r io.Reader) *SSEReader {
	return &SSEReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// Next returns the next complete event. At the end of the stream it returns
// io.EOF when the stream ended between events, and io.ErrUnexpectedEOF when it
// ended inside one (a server that died mid-event).
func (s *SSEReader) Next() (Event, error) {
	s.name = ""
	s.data = s.data[:0]
	hasData, pending := false, false
	for {
		line, err := s.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) && pending {
				return Event{}, io.ErrUnexpectedEOF
			}
			return Event{}, err
		}
		if len(line) == 0 {
			// A blank line ends the event; one with no data is dropped, per
			// the EventSource rules.
			if hasData {
				name := s.name
				if name == "" {
					name = "message"
				}
				return Event{Name: name, Data: s.data}, nil
			}
			s.name, pending = "", false
			continue
		}
		if line[0] == ':' { // a comment (keep-alive)
			continue
		}
		pending = true
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "event":
			s.name = internEventName(value)
		case "data":
			if hasData {
				s.data = append(s.data, '\n')
			}
			s.data = append(s.data, value...)
			hasData = true
		}
	}
}

// Events yields the stream's events until it ends or the loop stops, as
// bufio.Scanner does lines: afterwards Err says why it ended. Each event's
// Data is valid until the loop asks for the next one.
func (s *SSEReader) Events() iter.Seq[Event] {
	return func(yield func(Event) bool) {
		for {
			ev, err := s.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					s.err = err
				}
				return
			}
			if !yield(ev) {
				return
			}
		}
	}
}

// Err is the error that ended Events: nil when the stream ended cleanly
// between events (or the loop stopped early), io.ErrUnexpectedEOF when it
// was cut inside one, or the read error.
func (s *SSEReader) Err() error { return s.err }

// internEventName avoids a string allocation per event for the names this
// server sends thousands of times a second.
func internEventName(b []byte) string {
	switch string(b) {
	case "token":
		return "token"
	case "trace":
		return "trace"
	case "done":
		return "done"
	case "error":
		return "error"
	}
	return string(b)
}

// readLine returns the next line without its line ending. The slice is only
// valid until the next read.
func (s *SSEReader) readLine() ([]byte, error) {
	line, err := s.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		s.long = append(s.long[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) && len(s.long) <= maxSSELine {
			line, err = s.r.ReadSlice('\n')
			s.long = append(s.long, line...)
		}
		if len(s.long) > maxSSELine {
			return nil, errSSELineTooLong
		}
		line = s.long
	}
	if err != nil {
		// A final line with no line ending never completes an event.
		if errors.Is(err, io.EOF) && len(line) > 0 {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}
