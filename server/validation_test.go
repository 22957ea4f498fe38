package server

// Hostile and malformed bodies (docs/RELIABILITY.md, "The bad-input table"):
// each gets the right 4xx with a message naming the problem, and the server
// serves the next request.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"nielsgpt/engine"
)

func TestBadInputTable(t *testing.T) {
	fake := newFakeEngine()
	ts := startServer(t, testConfig(), fake)
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	deep := strings.Repeat("[", 5000) + strings.Repeat("]", 5000)
	cases := []struct {
		name, path, body, detail string
	}{
		{"empty body", "/chat/stream", ``, "request body is empty"},
		{"malformed", "/chat/stream", `{"messages":`, "not valid JSON"},
		{"truncated", "/chat/stream", `{"messages":[{"role":"user","content":"hi"}],"trace_layer":1`, "not valid JSON"},
		{"trailing garbage", "/chat/stream", `{` + msgs + `,"trace_layer":1} x`, "not valid JSON"},
		{"not an object", "/chat/stream", `[1,2]`, "request body must be a JSON object"},
		{"null body", "/chat/stream", `null`, "request body must be a JSON object"},
		{"string body", "/chat/stream", `"hi"`, "request body must be a JSON object"},
		{"missing messages", "/chat/stream", `{"trace_layer":1}`, "messages is required"},
		{"messages not a list", "/chat/stream", `{"messages":"hi","trace_layer":1}`, "messages must be a list"},
		{"messages null", "/chat/stream", `{"messages":null,"trace_layer":1}`, "messages must be a list"},
		{"empty messages", "/chat/stream", `{"messages":[],"trace_layer":1}`, "messages must not be empty"},
		{"message not object", "/chat/stream", `{"messages":["hi"],"trace_layer":1}`, "messages[0] must be a JSON object"},
		{"unknown role", "/chat/stream", `{"messages":[{"role":"root","content":"hi"}],"trace_layer":1}`, "messages[0].role must be one of system, user, assistant"},
		{"role wrong type", "/chat/stream", `{"messages":[{"role":1,"content":"hi"}],"trace_layer":1}`, "messages[0].role must be one of"},
		{"role missing", "/chat/stream", `{"messages":[{"content":"hi"}],"trace_layer":1}`, "messages[0].role is required"},
		{"content wrong type", "/chat/stream", `{"messages":[{"role":"user","content":"a"},{"role":"user","content":5}],"trace_layer":1}`, "messages[1].content must be a string"},
		{"content null", "/chat/stream", `{"messages":[{"role":"user","content":null}],"trace_layer":1}`, "messages[0].content must be a string"},
		{"content missing", "/chat/stream", `{"messages":[{"role":"user"}],"trace_layer":1}`, "messages[0].content is required"},
		{"missing trace_layer", "/chat/stream", `{` + msgs + `}`, "trace_layer is required"},
		{"trace_layer too big", "/chat/stream", `{` + msgs + `,"trace_layer":4}`, "trace_layer must be in [0, 3]"},
		{"trace_layer negative", "/chat/stream", `{` + msgs + `,"trace_layer":-1}`, "trace_layer must be in [0, 3]"},
		{"trace_layer string", "/chat/stream", `{` + msgs + `,"trace_layer":"1"}`, "trace_layer must be an integer in [0, 3]"},
		{"trace_layer fraction", "/chat/stream", `{` + msgs + `,"trace_layer":1.5}`, "trace_layer must be an integer in [0, 3]"},
		{"trace_layer bool", "/chat/stream", `{` + msgs + `,"trace_layer":true}`, "trace_layer must be an integer"},
		{"trace_layer null", "/chat/stream", `{` + msgs + `,"trace_layer":null}`, "trace_layer must be an integer"},
		{"huge max_new_tokens", "/chat/stream", `{` + msgs + `,"trace_layer":1,"max_new_tokens":1000000000000}`, "max_new_tokens must be in [0, 1024]"},
		{"max_new_tokens over cap", "/chat/stream", `{` + msgs + `,"trace_layer":1,"max_new_tokens":1025}`, "max_new_tokens must be in [0, 1024]"},
		{"negative max_new_tokens", "/chat/stream", `{` + msgs + `,"trace_layer":1,"max_new_tokens":-1}`, "max_new_tokens must be in [0, 1024]"},
		{"overflowing number", "/chat/stream", `{` + msgs + `,"trace_layer":1,"max_new_tokens":1e400}`, "max_new_tokens must be an integer in [0, 1024]"},
		{"NaN", "/chat/stream", `{` + msgs + `,"trace_layer":1,"temperature":NaN}`, "not valid JSON"},
		{"Infinity", "/chat/stream", `{` + msgs + `,"trace_layer":1,"temperature":Infinity}`, "not valid JSON"},
		{"temperature overflow", "/chat/stream", `{` + msgs + `,"trace_layer":1,"temperature":1e999}`, "temperature must be a finite number >= 0"},
		{"negative temperature", "/chat/stream", `{` + msgs + `,"trace_layer":1,"temperature":-0.1}`, "temperature must be a finite number >= 0"},
		{"temperature string", "/chat/stream", `{` + msgs + `,"trace_layer":1,"temperature":"hot"}`, "temperature must be a finite number >= 0"},
		{"temperature null", "/chat/stream", `{` + msgs + `,"trace_layer":1,"temperature":null}`, "temperature must be a finite number >= 0"},
		{"top_k zero", "/chat/stream", `{` + msgs + `,"trace_layer":1,"top_k":0}`, "top_k must be null or an integer >= 1"},
		{"top_k negative", "/chat/stream", `{` + msgs + `,"trace_layer":1,"top_k":-5}`, "top_k must be null or an integer >= 1"},
		{"top_k fraction", "/chat/stream", `{` + msgs + `,"trace_layer":1,"top_k":2.5}`, "top_k must be null or an integer >= 1"},
		{"seed fraction", "/chat/stream", `{` + msgs + `,"trace_layer":1,"seed":0.5}`, "seed must be an integer"},
		{"seed too big", "/chat/stream", `{` + msgs + `,"trace_layer":1,"seed":18446744073709551616}`, "seed must be an integer"},
		{"seed string", "/chat/stream", `{` + msgs + `,"trace_layer":1,"seed":"42"}`, "seed must be an integer"},
		{"deep nesting", "/chat/stream", deep, "nested too deeply"},
		{"deep nesting in a field", "/chat/stream", `{"messages":` + deep + `}`, "nested too deeply"},
		{"invalid UTF-8", "/chat/stream", "{\"messages\":[{\"role\":\"user\",\"content\":\"a\xff\"}],\"trace_layer\":1}", "not valid UTF-8"},
		{"overlong UTF-8", "/chat/stream", "{\"messages\":[{\"role\":\"user\",\"content\":\"\xc0\xaf\"}],\"trace_layer\":1}", "not valid UTF-8"},
		{"lone surrogate escape", "/chat/stream", `{"messages":[{"role":"user","content":"a\ud800b"}],"trace_layer":1}`, "unpaired UTF-16 surrogate"},
		{"lone low surrogate", "/chat/stream", `{"messages":[{"role":"user","content":"\udc00"}],"trace_layer":1}`, "unpaired UTF-16 surrogate"},
		{"reversed surrogates", "/chat/stream", `{"messages":[{"role":"user","content":"\udc00\ud800"}],"trace_layer":1}`, "unpaired UTF-16 surrogate"},
		{"full_attn missing head", "/inspect/full_attn", `{` + msgs + `,"trace_layer":1}`, "head is required"},
		{"full_attn head range", "/inspect/full_attn", `{` + msgs + `,"trace_layer":1,"head":2}`, "head must be in [0, 1]"},
		{"full_attn layer range", "/inspect/full_attn", `{` + msgs + `,"trace_layer":9,"head":0}`, "trace_layer must be in [0, 3]"},
		{"full_attn max_new_tokens", "/inspect/full_attn", `{` + msgs + `,"trace_layer":1,"head":0,"max_new_tokens":5000}`, "max_new_tokens must be in [0, 1024]"},
		{"full_attn empty messages", "/inspect/full_attn", `{"messages":[],"trace_layer":1,"head":0}`, "messages must not be empty"},
		// fakeConfig has T = 64.
		{"window_hop zero", "/chat/stream", `{` + msgs + `,"trace_layer":1,"window_hop":0}`, "window_hop must be in [1, 63]"},
		{"window_hop T", "/chat/stream", `{` + msgs + `,"trace_layer":1,"window_hop":64}`, "window_hop must be in [1, 63]"},
		{"window_hop fraction", "/chat/stream", `{` + msgs + `,"trace_layer":1,"window_hop":2.5}`, "window_hop must be an integer in [1, 63]"},
		{"window_hop null", "/chat/stream", `{` + msgs + `,"trace_layer":1,"window_hop":null}`, "window_hop must be an integer in [1, 63]"},
		{"full_attn window_hop", "/inspect/full_attn", `{` + msgs + `,"trace_layer":1,"head":0,"window_hop":-3}`, "window_hop must be in [1, 63]"},
		// The extensions (fakeConfig: L = 4, H = 2).
		{"trace_layers string", "/chat/stream", `{` + msgs + `,"trace_layer":1,"trace_layers":"some"}`, `trace_layers must be "all" or a list of distinct layer indices in [0, 3], not the string "some"`},
		{"trace_layers object", "/chat/stream", `{` + msgs + `,"trace_layer":1,"trace_layers":{"0":1}}`, `trace_layers must be "all" or a list of distinct layer indices in [0, 3]`},
		{"trace_layers null", "/chat/stream", `{` + msgs + `,"trace_layer":1,"trace_layers":null}`, `trace_layers must be "all" or a list`},
		{"trace_layers out of range", "/chat/stream", `{` + msgs + `,"trace_layer":1,"trace_layers":[0,4]}`, "trace_layers[1] must be in [0, 3]"},
		{"trace_layers negative", "/chat/stream", `{` + msgs + `,"trace_layer":1,"trace_layers":[-1]}`, "trace_layers[0] must be in [0, 3]"},
		{"trace_layers wrong type", "/chat/stream", `{` + msgs + `,"trace_layer":1,"trace_layers":[1,"2"]}`, "trace_layers[1] must be an integer in [0, 3]"},
		{"trace_layers fraction", "/chat/stream", `{` + msgs + `,"trace_layer":1,"trace_layers":[0.5]}`, "trace_layers[0] must be an integer in [0, 3]"},
		{"trace_layers duplicate", "/chat/stream", `{` + msgs + `,"trace_layer":1,"trace_layers":[2,0,2]}`, "trace_layers lists layer 2 twice (trace_layers[0] and trace_layers[2])"},
		{"trace_layers too many", "/chat/stream", `{` + msgs + `,"trace_layer":1,"trace_layers":[0,1,2,3,0]}`, "(at most 4 of them)"},
		{"trace_layers huge", "/chat/stream", `{` + msgs + `,"trace_layer":1,"trace_layers":[` + strings.Repeat("0,", 100000) + `0]}`, "(at most 4 of them)"},
		{"logit_lens string", "/chat/stream", `{` + msgs + `,"trace_layer":1,"logit_lens":"yes"}`, "logit_lens must be a boolean (true or false)"},
		{"logit_lens number", "/chat/stream", `{` + msgs + `,"trace_layer":1,"logit_lens":1}`, "logit_lens must be a boolean"},
		{"logit_lens null", "/chat/stream", `{` + msgs + `,"trace_layer":1,"logit_lens":null}`, "logit_lens must be a boolean"},
		{"ablate not a list", "/chat/stream", `{` + msgs + `,"trace_layer":1,"ablate":{"layer":0,"head":0}}`, `ablate must be a list of distinct {"layer": l, "head": h} objects`},
		{"ablate item not object", "/chat/stream", `{` + msgs + `,"trace_layer":1,"ablate":[[0,0]]}`, "ablate[0] must be a JSON object"},
		{"ablate missing head", "/chat/stream", `{` + msgs + `,"trace_layer":1,"ablate":[{"layer":0}]}`, "ablate[0].head is required"},
		{"ablate missing layer", "/chat/stream", `{` + msgs + `,"trace_layer":1,"ablate":[{"head":0}]}`, "ablate[0].layer is required"},
		{"ablate layer range", "/chat/stream", `{` + msgs + `,"trace_layer":1,"ablate":[{"layer":0,"head":0},{"layer":4,"head":0}]}`, "ablate[1].layer must be in [0, 3]"},
		{"ablate head range", "/chat/stream", `{` + msgs + `,"trace_layer":1,"ablate":[{"layer":0,"head":2}]}`, "ablate[0].head must be in [0, 1]"},
		{"ablate head type", "/chat/stream", `{` + msgs + `,"trace_layer":1,"ablate":[{"layer":0,"head":"0"}]}`, "ablate[0].head must be an integer in [0, 1]"},
		{"ablate duplicate", "/chat/stream", `{` + msgs + `,"trace_layer":1,"ablate":[{"layer":1,"head":0},{"head":0,"layer":1}]}`, "ablate lists layer 1 head 0 twice (ablate[0] and ablate[1])"},
		{"ablate too many", "/chat/stream", `{` + msgs + `,"trace_layer":1,"ablate":[` + strings.Repeat(`{"layer":0,"head":0},`, 8) + `{"layer":0,"head":0}]}`, "ablate has more than 8 entries (the model has 4 layers × 2 heads)"},
		{"score neither", "/inspect/score", `{"top_k":3}`, "text or messages is required (exactly one of them)"},
		{"score both", "/inspect/score", `{"text":"a",` + msgs + `}`, "give exactly one of text and messages, not both"},
		{"score empty text", "/inspect/score", `{"text":""}`, "text must not be empty"},
		{"score text type", "/inspect/score", `{"text":["a"]}`, "text must be a string"},
		{"score text null", "/inspect/score", `{"text":null}`, "text must be a string"},
		{"score empty messages", "/inspect/score", `{"messages":[]}`, "messages must not be empty"},
		{"score top_k range", "/inspect/score", `{"text":"ab","top_k":21}`, "top_k must be in [0, 20]"},
		{"score top_k negative", "/inspect/score", `{"text":"ab","top_k":-1}`, "top_k must be in [0, 20]"},
		{"score top_k null", "/inspect/score", `{"text":"ab","top_k":null}`, "top_k must be an integer in [0, 20]"},
		{"score ablate", "/inspect/score", `{"text":"ab","ablate":[{"layer":9,"head":0}]}`, "ablate[0].layer must be in [0, 3]"},
		{"score not JSON", "/inspect/score", `{"text":`, "not valid JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Log(wantDetail(t, postJSON(t, ts.URL+tc.path, tc.body), tc.detail))
			// The server is still serving.
			if events := readEvents(t, postJSON(t, ts.URL+"/chat/stream", helloChat)); events[len(events)-1].Type != "done" {
				t.Fatal("next request not served")
			}
		})
	}
	if n := engine.FormatTranscript(fake.lastGenerate().Messages); string(n) != "user: hello\nassistant: " {
		t.Fatalf("a refused request reached the engine: %q", n)
	}
	if got := ts.Metrics().Rejections("invalid"); got != float64(len(cases)) {
		t.Fatalf("invalid rejections %v, want %d", got, len(cases))
	}
}

// Valid escapes, including surrogate pairs and escaped backslashes before a
// "u", are accepted and decoded exactly.
func TestValidUnicodeIsKept(t *testing.T) {
	fake := newFakeEngine()
	ts := startServer(t, testConfig(), fake)
	body := `{"messages":[{"role":"user","content":"\ud83d\ude00 é \\ud800 \" \u0000"}],"trace_layer":0,"max_new_tokens":0}`
	readEvents(t, postJSON(t, ts.URL+"/chat/stream", body))
	want := "user: \U0001F600 é \\ud800 \" \x00\nassistant: "
	if got := string(engine.FormatTranscript(fake.lastGenerate().Messages)); got != want {
		t.Fatalf("prompt %q, want %q", got, want)
	}
}

func TestContentType(t *testing.T) {
	ts := startServer(t, testConfig(), newFakeEngine())
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/chat/stream", strings.NewReader(helloChat))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	wantDetail(t, resp, "Content-Type must be application/json")
	// No Content-Type at all is read as JSON (as curl users expect).
	req, _ = http.NewRequest(http.MethodPost, ts.URL+"/chat/stream", strings.NewReader(helloChat))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if events := readEvents(t, resp); events[len(events)-1].Type != "done" {
		t.Fatal("no Content-Type: not served")
	}
}

// MAX_PROMPT_BYTES applies to the formatted transcript: exactly the limit is
// served, one byte more is 413 with the documented message.
func TestPromptSizeBoundary(t *testing.T) {
	cfg := testConfig()
	cfg.MaxPromptBytes = 100
	ts := startServer(t, cfg, newFakeEngine())
	overhead := len("user: \nassistant: ")
	body := func(n int) string {
		return fmt.Sprintf(`{"messages":[{"role":"user","content":%q}],"trace_layer":0,"max_new_tokens":1}`, strings.Repeat("a", n-overhead))
	}
	if events := readEvents(t, postJSON(t, ts.URL+"/chat/stream", body(100))); events[len(events)-1].Type != "done" {
		t.Fatal("a prompt of exactly MAX_PROMPT_BYTES was not served")
	}
	wantError(t, postJSON(t, ts.URL+"/chat/stream", body(101)), 413, "prompt_too_large", "Prompt too large: 101 bytes (max 100)")
	full := `{"messages":[{"role":"user","content":"` + strings.Repeat("é", 60) + `"}],"trace_layer":0,"head":0}`
	wantError(t, postJSON(t, ts.URL+"/inspect/full_attn", full), 413, "prompt_too_large", fmt.Sprintf("Prompt too large: %d bytes (max 100)", overhead+120))
	if got := ts.Metrics().Rejections("prompt_too_large"); got != 2 {
		t.Fatalf("prompt_too_large rejections %v", got)
	}
}

// The body limit holds before parsing: a declared length over it is refused
// without reading, and a body that turns out longer (chunked, no length) is
// cut off at the limit.
func TestBodyTooLarge(t *testing.T) {
	cfg := testConfig()
	cfg.MaxBodyBytes = 4096
	ts := startServer(t, cfg, newFakeEngine())
	msg := "Request body too large (max 4096 bytes)"

	// 100 MB, generated as it is sent rather than held in memory.
	prefix, suffix := `{"messages":[{"role":"user","content":"`, `"}],"trace_layer":0}`
	size := int64(len(prefix)+len(suffix)) + 100<<20
	hugeBody := func() io.Reader {
		return io.MultiReader(strings.NewReader(prefix), io.LimitReader(repeatByte('a'), 100<<20), strings.NewReader(suffix))
	}
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/chat/stream", hugeBody())
	req.ContentLength = size
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, resp, 413, "body_too_large", msg)

	// Chunked: no Content-Length, so the limit must be met while reading.
	req, _ = http.NewRequest(http.MethodPost, ts.URL+"/inspect/full_attn", hugeBody())
	req.ContentLength = -1
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, resp, 413, "body_too_large", msg)
	if got := ts.Metrics().Rejections("body_too_large"); got != 2 {
		t.Fatalf("body_too_large rejections %v", got)
	}
	if events := readEvents(t, postJSON(t, ts.URL+"/chat/stream", helloChat)); events[len(events)-1].Type != "done" {
		t.Fatal("next request not served")
	}
}

// repeatByte is an endless reader of one byte.
type repeatByte byte

func (r repeatByte) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// A client that writes its whole body before reading anything (Python's
// http.client and requests do) still gets the 413, not a reset: the server
// refuses on Content-Length (or at the limit of a chunked body), answers,
// then reads and discards the rest so the client can finish writing and
// read the answer.
func TestBodyTooLargeReadableByWriteFirstClient(t *testing.T) {
	ts := startServer(t, testConfig(), newFakeEngine()) // MAX_BODY_BYTES 1 MiB, the default
	const size = 40 << 20
	for _, c := range []struct{ path, framing string }{
		{"/chat/stream", fmt.Sprintf("Content-Length: %d", size)},
		{"/inspect/full_attn", fmt.Sprintf("Content-Length: %d", size)},
		{"/chat/stream", "Transfer-Encoding: chunked"},
	} {
		resp := writeWholeBodyThenRead(t, ts.URL, c.path, c.framing, size)
		if !resp.Close {
			t.Errorf("%s %s: no Connection: close", c.path, c.framing)
		}
		wantError(t, resp, 413, "body_too_large", "Request body too large (max 1048576 bytes)")
	}
	if events := readEvents(t, postJSON(t, ts.URL+"/chat/stream", helloChat)); events[len(events)-1].Type != "done" {
		t.Fatal("next request not served")
	}
}

// writeWholeBodyThenRead is such a client on a raw socket: the request
// head, size bytes of body (in 1 MiB chunks when framing says chunked),
// and only then a read of the response.
func writeWholeBodyThenRead(t *testing.T, baseURL, path, framing string, size int) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(baseURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	w := bufio.NewWriterSize(conn, 64<<10)
	fmt.Fprintf(w, "POST %s HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n%s\r\n\r\n", path, framing)
	chunked := strings.Contains(framing, "chunked")
	for sent := 0; sent < size; sent += 1 << 20 {
		if chunked {
			fmt.Fprintf(w, "%x\r\n", 1<<20)
		}
		_, _ = io.Copy(w, io.LimitReader(repeatByte('a'), 1<<20))
		if chunked {
			_, _ = io.WriteString(w, "\r\n")
		}
	}
	if chunked {
		_, _ = io.WriteString(w, "0\r\n\r\n")
	}
	if err := w.Flush(); err != nil {
		t.Fatalf("%s (%s): writing the %d-byte body: %v (the server closed before the client could read its answer)", path, framing, size, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s (%s): reading the answer after the body: %v", path, framing, err)
	}
	return resp
}

// Draining a refused body is bounded: a client that stops sending is cut
// after READ_TIMEOUT (when shorter than the drain's own bound), one that
// waits for "100 Continue" is answered and closed at once, and in both
// cases the 413 is already there to read.
func TestRefusedBodyDrainIsBounded(t *testing.T) {
	cfg := testConfig()
	cfg.ReadTimeout = 500 * time.Millisecond
	ts := startServer(t, cfg, newFakeEngine())
	for _, extra := range []string{"", "Expect: 100-continue\r\n"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_ = conn.SetDeadline(start.Add(10 * time.Second))
		fmt.Fprintf(conn, "POST /chat/stream HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n%s\r\n", 40<<20, extra)
		if extra == "" {
			_, _ = io.Copy(conn, io.LimitReader(repeatByte('a'), 2<<20)) // then nothing more
		}
		reader := bufio.NewReader(conn)
		resp, err := http.ReadResponse(reader, nil)
		if err != nil {
			t.Fatalf("%q: reading the 413: %v", extra, err)
		}
		wantError(t, resp, 413, "body_too_large", "")
		if _, err := reader.ReadByte(); err == nil {
			t.Fatalf("%q: more bytes after the 413", extra)
		}
		elapsed := time.Since(start)
		if limit := cfg.ReadTimeout + time.Second; elapsed > limit {
			t.Errorf("%q: the connection closed after %v, want within %v", extra, elapsed, limit)
		}
		if extra != "" && elapsed > cfg.ReadTimeout {
			t.Errorf("a client waiting for 100 Continue was held %v", elapsed)
		}
		conn.Close()
	}
}
