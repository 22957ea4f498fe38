package harness

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func readAll(t *testing.T, stream string) ([]Event, error) {
	t.Helper()
	r := NewSSEReader(strings.NewReader(stream))
	var evs []Event
	for {
		ev, err := r.Next()
		if err != nil {
			return evs, err
		}
		// Data is only valid until the next call: keep a copy.
		evs = append(evs, Event{Name: ev.Name, Data: bytes.Clone(ev.Data)})
	}
}

func TestSSEReader(t *testing.T) {
	long := strings.Repeat("0.123456,", 20000) // a 180 KB line: longer than the reader's buffer
	stream := ": keep-alive comment\n\n" +
		"event: token\ndata: {\"step\":0}\n\n" +
		"event: trace\r\ndata: {\"attn\":[" + long + "]}\r\n\r\n" + // CRLF line endings
		"data: first\ndata:second\n\n" + // no event name; two data lines; no space after the colon
		"event: ignored-without-data\n\n" +
		"id: 7\nevent: done\nretry: 10\ndata: {\"reply\":\"hi\"}\n\n"
	evs, err := readAll(t, stream)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: got %v, want io.EOF", err)
	}
	want := []Event{
		{"token", []byte(`{"step":0}`)},
		{"trace", []byte(`{"attn":[` + long + `]}`)},
		{"message", []byte("first\nsecond")},
		{"done", []byte(`{"reply":"hi"}`)},
	}
	if len(evs) != len(want) {
		t.Fatalf("got %d events, want %d: %q", len(evs), len(want), evs)
	}
	for i := range want {
		if evs[i].Name != want[i].Name || !bytes.Equal(evs[i].Data, want[i].Data) {
			t.Errorf("event %d: got %s %.60q, want %s %.60q", i, evs[i].Name, evs[i].Data, want[i].Name, want[i].Data)
		}
	}
}

func TestSSEReaderTruncated(t *testing.T) {
	for name, stream := range map[string]string{
		"inside an event":      "event: token\ndata: {\"step\":0}\n\nevent: trace\ndata: {}\n",
		"inside a line":        "event: token\ndata: {\"step\":0}\n\nevent: tra",
		"after the event name": "event: done\n",
	} {
		evs, err := readAll(t, stream)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: got %v after %d events, want io.ErrUnexpectedEOF", name, err, len(evs))
		}
	}
}

func TestSSEReaderBoundsLines(t *testing.T) {
	_, err := readAll(t, "data: "+strings.Repeat("x", maxSSELine+100)+"\n\n")
	if !errors.Is(err, errSSELineTooLong) {
		t.Fatalf("got %v, want errSSELineTooLong", err)
	}
}

// Events ends at a clean end with no error, and reports a cut.
func TestSSEReaderEvents(t *testing.T) {
	for stream, want := range map[string]error{
		"event: token\ndata: 1\n\nevent: done\ndata: {}\n\n": nil,
		"event: token\ndata: 1\n\nevent: do":                 io.ErrUnexpectedEOF,
	} {
		r := NewSSEReader(strings.NewReader(stream))
		var names []string
		for ev := range r.Events() {
			names = append(names, ev.Name)
		}
		if !errors.Is(r.Err(), want) || (r.Err() == nil) != (want == nil) || names[0] != "token" {
			t.Errorf("%q: events %q, error %v, want %v", stream, names, r.Err(), want)
		}
	}
}
