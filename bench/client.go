package bench

// One SSE stream, as a client sees it: send POST /chat/stream, time the first
// `token` event, count tokens until `done` (or until the caller's deadline).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"nielsgpt/internal/harness"
)

// chatRequest is the body of POST /chat/stream (docs/API.md).
type chatRequest struct {
	Messages     []message `json:"messages"`
	MaxNewTokens int       `json:"max_new_tokens"`
	Temperature  float64   `json:"temperature"`
	TopK         int       `json:"top_k"`
	Seed         int64     `json:"seed"`
	TraceLayer   int       `json:"trace_layer"`
	WindowHop    int       `json:"window_hop,omitempty"` // 0: the server's WINDOW_HOP
	// Every layer's attention and the logit lens in each trace event: the
	// deepest trace the server streams.
	TraceLayers string `json:"trace_layers,omitempty"` // "all" or empty
	LogitLens   bool   `json:"logit_lens,omitempty"`
}

// streamResult is what one stream delivered.
type streamResult struct {
	Tokens  int           // `token` events received
	Traces  int           // `trace` events received
	TTFT    time.Duration // request start to the first `token` event; 0 if none came
	Elapsed time.Duration // request start to the end of the response (or the cut)
	Done    bool          // the `done` event arrived and the body ended cleanly
	Cut     bool          // the caller's context ended the stream early
	Busy    int           // 503 busy answers retried before the stream started
	Err     error         // why the stream failed, when it did (nil when Cut)
}

// client posts streams to one server.
type client struct {
	http    *http.Client
	baseURL string
}

func newClient(baseURL string, maxConns int) *client {
	tr := &http.Transport{
		// Keep one idle connection per concurrent stream so back-to-back
		// streams reuse connections instead of measuring TCP set-up.
		MaxIdleConns:        maxConns,
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true, // SSE is never compressed by this server; don't ask
		Proxy:               nil,  // loopback only: never through an HTTP(S)_PROXY
	}
	return &client{http: &http.Client{Transport: tr}, baseURL: baseURL}
}

func (c *client) close() { c.http.CloseIdleConnections() }

// maxBusyRetries bounds how often a stream start is retried after 503 busy
// (a slot not yet given back by the previous stream on that worker).
const maxBusyRetries = 50

// stream runs one generation. The time limit is ctx's: when it ends, the
// stream is cut, and what arrived until then is still reported.
func (c *client) stream(ctx context.Context, req chatRequest) streamResult {
	body, err := json.Marshal(req)
	if err != nil {
		return streamResult{Err: err}
	}
	var res streamResult
	start := time.Now()
	var resp *http.Response
	for {
		hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.baseURL+"/chat/stream", bytes.NewReader(body))
		if err != nil {
			return streamResult{Err: err}
		}
		hreq.Header.Set("Content-Type", "application/json")
		hreq.Header.Set("Accept", "text/event-stream")
		resp, err = c.http.Do(hreq)
		if err != nil {
			return c.ended(res, start, ctx, err)
		}
		if resp.StatusCode == http.StatusServiceUnavailable && res.Busy < maxBusyRetries {
			// Busy (or still loading): the slot frees within a step. Retry
			// rather than fail, and keep the wait inside the measurement.
			drainClose(resp)
			res.Busy++
			select {
			case <-ctx.Done():
				return c.ended(res, start, ctx, ctx.Err())
			case <-time.After(5 * time.Millisecond):
			}
			continue
		}
		break
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		res.Err = fmt.Errorf("POST /chat/stream: %s: %s", resp.Status, bytes.TrimSpace(snippet))
		res.Elapsed = time.Since(start)
		return res
	}

	sse := harness.NewSSEReader(resp.Body)
	for ev := range sse.Events() {
		switch ev.Name {
		case "token":
			if err := checkTokenEvent(ev.Data, res.Tokens); err != nil {
				return c.ended(res, start, ctx, err)
			}
			if res.Tokens == 0 {
				res.TTFT = time.Since(start)
			}
			res.Tokens++
		case "trace":
			// Not decoded: at thousands of events a second, parsing ~12 KiB
			// of attention rows would cost the server CPU it is being timed
			// on. Counting them checks that tracing really ran; a deep
			// stream's events must also carry what it asked for.
			if req.LogitLens && !(bytes.Contains(ev.Data, []byte(`"layers":[`)) && bytes.Contains(ev.Data, []byte(`"lens":[`))) {
				return c.ended(res, start, ctx, fmt.Errorf("trace event %d without the layers and lens asked for", res.Traces))
			}
			res.Traces++
		case "done":
			res.Done = true
		case "error":
			return c.ended(res, start, ctx, fmt.Errorf("error event: %s", ev.Data))
		}
	}
	err = sse.Err()
	if err == nil && !res.Done {
		err = errors.New("stream ended without a done event")
	}
	return c.ended(res, start, ctx, err)
}

// ended finishes a result: an error caused by the caller's deadline is a cut,
// not a failure. A done stream is read to EOF first (by the loop above) so
// the server has given its slot back before this worker starts the next one.
func (c *client) ended(res streamResult, start time.Time, ctx context.Context, err error) streamResult {
	res.Elapsed = time.Since(start)
	if err != nil && ctx.Err() != nil {
		res.Cut, err = true, nil
	}
	res.Err = err
	return res
}

// checkTokenEvent checks that a `token` event is the next step, so a
// benchmark cannot count a stream that skips or repeats steps.
func checkTokenEvent(data []byte, want int) error {
	var tok struct {
		Step    *int `json:"step"`
		TokenID *int `json:"token_id"`
	}
	if err := json.Unmarshal(data, &tok); err != nil {
		return fmt.Errorf("token event: %w", err)
	}
	if tok.Step == nil || tok.TokenID == nil {
		return fmt.Errorf("token event without step or token_id: %s", data)
	}
	if *tok.Step != want {
		return fmt.Errorf("token event for step %d, expected step %d", *tok.Step, want)
	}
	return nil
}

func drainClose(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
