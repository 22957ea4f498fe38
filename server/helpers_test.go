package server

// Shared test plumbing: a server over real HTTP (httptest), request helpers
// and an SSE reader built on a real SSE client library (go-sse), so the
// framing is checked by a parser we did not write.

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sse "github.com/tmaxmax/go-sse"

	"nielsgpt/metrics"
)

// testConfig is the default configuration with limits loose enough that a
// test only meets the one it is about.
func testConfig() Config {
	c := DefaultConfig()
	c.RateLimitPerMin = 600000
	c.RateLimitBurst = 100000
	c.WriteTimeout = 5 * time.Second
	c.ReadTimeout = 5 * time.Second
	c.ShutdownTimeout = 5 * time.Second
	return c
}

type testServer struct {
	*Server
	URL string
}

// startServer runs a Server with the given config over httptest; eng may be
// nil to leave the model "loading".
func startServer(t *testing.T, cfg Config, eng Engine) *testServer {
	t.Helper()
	s := newServer(t, cfg, eng)
	return &testServer{Server: s, URL: startWith(t, s)}
}

// newServer builds a server from cfg over eng (nil: still loading).
func newServer(t testing.TB, cfg Config, eng Engine) *Server {
	t.Helper()
	s, err := New(cfg, metrics.New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if eng != nil {
		s.SetEngine(eng)
	}
	return s
}

// startRecorded serves a server from cfg over eng like startServer, with a
// recorder of every exchange between the client and it.
func startRecorded(t *testing.T, cfg Config, eng Engine) (*httptest.Server, *recorder) {
	t.Helper()
	rec := &recorder{}
	ts := httptest.NewServer(rec.wrap(newServer(t, cfg, eng).Handler()))
	t.Cleanup(ts.Close)
	return ts, rec
}

// startWith serves s over httptest and returns its base URL.
func startWith(t *testing.T, s *Server) string {
	t.Helper()
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts.URL
}

func postJSON(t *testing.T, url, body string, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantError checks an error response: the status, and a body of exactly
// {"error", "code"} with the code and (when given) the message wanted.
func wantError(t *testing.T, resp *http.Response, status int, code, message string) {
	t.Helper()
	body := readAll(t, resp)
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, status, body)
	}
	var e struct{ Error, Code string }
	var raw map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("error body is not JSON: %s", body)
	}
	if len(raw) != 2 {
		t.Fatalf("error body %s should have exactly error and code", body)
	}
	_ = json.Unmarshal(body, &e)
	if e.Code != code || (message != "" && e.Error != message) {
		t.Fatalf("error body %s, want code %q message %q", body, code, message)
	}
}

// wantDetail checks a 422 whose detail contains fragment.
func wantDetail(t *testing.T, resp *http.Response, fragment string) string {
	t.Helper()
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("status %d, want 422; body %s", resp.StatusCode, body)
	}
	var v struct {
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Detail == "" {
		t.Fatalf("422 body %s should be {\"detail\": \"...\"}", body)
	}
	if !strings.Contains(v.Detail, fragment) {
		t.Fatalf("detail %q does not mention %q", v.Detail, fragment)
	}
	return v.Detail
}

type sseEvent struct {
	Type string
	Data string
}

// readEvents parses a whole SSE response with go-sse.
func readEvents(t *testing.T, resp *http.Response) []sseEvent {
	t.Helper()
	defer resp.Body.Close()
	var events []sseEvent
	for ev, err := range sse.Read(resp.Body, &sse.ReadConfig{MaxEventSize: 1 << 20}) {
		if err != nil {
			t.Fatalf("reading SSE: %v", err)
		}
		events = append(events, sseEvent{ev.Type, ev.Data})
	}
	return events
}

// decodeStrict unmarshals data into v, refusing unknown fields, so a test
// notices a field that should not be there.
func decodeStrict(t *testing.T, data string, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding %s: %v", data, err)
	}
}

// wantCausalRows checks a full attention matrix: row i attends to positions
// 0..i only and sums to 1 within tol.
func wantCausalRows(t *testing.T, attn [][]float64, tol float64) {
	t.Helper()
	for i, row := range attn {
		sum := 0.0
		for j, p := range row {
			if j > i && p != 0 {
				t.Fatalf("attn[%d][%d] = %v above the diagonal", i, j, p)
			}
			sum += p
		}
		if math.Abs(sum-1) > tol {
			t.Fatalf("row %d sums to %v", i, sum)
		}
	}
}

// waitLimit bounds every wait for the server's goroutines: generous for a
// loaded machine, short enough that a missed condition fails promptly.
const waitLimit = 5 * time.Second

const helloChat = `{"messages":[{"role":"user","content":"hello"}],"trace_layer":1}`
