//go:build linux

package reliability

// The client side: HTTP clients that connect from a chosen loopback address
// (so one test process can be many clients, each with its own rate-limit
// bucket, without trusting any proxy header), a reader for SSE streams that
// records how each one ended, and scrapes of /metrics.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"nielsgpt/internal/harness"
)

// ClientFrom returns an HTTP client whose connections come from the loopback
// address ip (any of 127.0.0.0/8 on Linux). Keep-alives are off: every
// request is a fresh connection, so a finished request leaves no idle
// connection (and no goroutine) behind on the server to blur the counts.
func ClientFrom(ip string) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{
		DialContext:       dialer.DialContext,
		DisableKeepAlives: true,
		// Responses are read as they come; nothing may be decompressed or
		// buffered on the way.
		DisableCompression: true,
	}}
}

// LoopbackIP names the n-th distinct client address, avoiding 127.0.0.1
// (the scrapes' and the default client's) and .0/.255 host bytes.
func LoopbackIP(n int) string {
	return fmt.Sprintf("127.%d.%d.%d", 10+(n/(254*256))%240, (n/254)%256, 1+n%254)
}

// Metrics is one scrape of /metrics: each sample's value by its name with
// labels exactly as exposed (`name` or `name{label="v"}`).
type Metrics map[string]float64

// Get returns an unlabelled sample, NaN when absent.
func (m Metrics) Get(name string) float64 {
	if v, ok := m[name]; ok {
		return v
	}
	return math.NaN()
}

// Sum adds every sample of name, whatever its labels.
func (m Metrics) Sum(name string) float64 {
	total := 0.0
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			total += v
		}
	}
	return total
}

var scrapeClient = ClientFrom("127.0.0.1")

// Scrape reads the server's /metrics (the text exposition format: one
// `name{labels} value` per line, no timestamps from this server).
func Scrape(baseURL string) (Metrics, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := scrapeClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	m := Metrics{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i <= 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

// StreamEnd is how one SSE stream ended, as the client saw it.
type StreamEnd struct {
	Status int    // HTTP status
	Code   string // the error body's "code" for non-200 answers
	Tokens int    // token events received
	Final  string // "done", "error:<code>", or "" when the stream stopped without either
	// Clean is true when the body ended where an HTTP response may end (the
	// last chunk arrived): not a connection cut mid-response.
	Clean bool
	Err   error // the read error that ended it, if any (nil after a clean end)
	// LastEvent is when the last event arrived.
	LastEvent time.Time
}

// StreamOptions shape how a client reads a stream.
type StreamOptions struct {
	// CancelAfter hangs up (closes the connection) after this many token
	// events; 0 reads to the end.
	CancelAfter int
	// EventDelay is slept after each event: a client that reads slowly.
	EventDelay time.Duration
	// OnEvent, when set, sees each event's name as it arrives.
	OnEvent func(name string)
	// OnResponse, when set, is called once the response headers are in (or
	// the request failed): the moment the server has decided on a slot.
	OnResponse func()
}

// PostStream sends body to path and reads the answer: a whole SSE stream,
// or the JSON error of a refusal.
func PostStream(ctx context.Context, client *http.Client, url, body string, opts StreamOptions) StreamEnd {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return StreamEnd{Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if opts.OnResponse != nil {
		opts.OnResponse()
	}
	if err != nil {
		return StreamEnd{Err: err}
	}
	defer resp.Body.Close()
	end := StreamEnd{Status: resp.StatusCode}
	if resp.StatusCode != http.StatusOK {
		end.Code, end.Err = errorCode(resp.Body)
		end.Clean = end.Err == nil
		return end
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		end.Err = fmt.Errorf("200 with Content-Type %q", ct)
		return end
	}
	sse := harness.NewSSEReader(resp.Body)
	for ev := range sse.Events() {
		end.LastEvent = time.Now()
		if opts.OnEvent != nil {
			opts.OnEvent(ev.Name)
		}
		switch ev.Name {
		case "token":
			end.Tokens++
		case "done":
			end.Final = "done"
		case "error":
			var e struct {
				Code string `json:"code"`
			}
			_ = json.Unmarshal(ev.Data, &e)
			end.Final = "error:" + e.Code
		}
		if opts.CancelAfter > 0 && end.Tokens >= opts.CancelAfter {
			return end // the deferred cancel closes the connection mid-stream
		}
		if opts.EventDelay > 0 {
			time.Sleep(opts.EventDelay)
		}
	}
	end.Err = sse.Err()
	end.Clean = end.Err == nil
	return end
}

// errorCode reads the {"error", "code"} error shape (or a 422's {"detail"}, for
// which it returns "invalid").
func errorCode(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return "", err
	}
	var e struct {
		Code   string          `json:"code"`
		Detail json.RawMessage `json:"detail"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return "", fmt.Errorf("error body %q: %w", clipText(b), err)
	}
	if e.Code == "" && e.Detail != nil {
		return "invalid", nil
	}
	return e.Code, nil
}

// Post sends body and returns the status, the error code (if any) and the
// response headers; the body is read and dropped.
func Post(ctx context.Context, client *http.Client, url, body string, header http.Header) (int, string, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<20))
		return resp.StatusCode, "", resp.Header, err
	}
	code, err := errorCode(resp.Body)
	return resp.StatusCode, code, resp.Header, err
}

func clipText(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return string(bytes.ToValidUTF8(b, []byte("?")))
}

// ChatBody is a /chat/stream request for one user message.
func ChatBody(content string, maxNewTokens, traceLayer int, seed int64) string {
	c, _ := json.Marshal(content)
	return fmt.Sprintf(`{"messages":[{"role":"user","content":%s}],"max_new_tokens":%d,"trace_layer":%d,"seed":%d}`,
		c, maxNewTokens, traceLayer, seed)
}
