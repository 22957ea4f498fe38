package server

// The engine's KV pool is bounded (KV_CACHE_MB, docs/API.md §10.4): when it
// has no room for a request's window even after a short wait, the engine
// says engine.ErrKVFull before generating anything, and the client gets the
// same 503 busy with Retry-After as when every slot is taken, not a stream.

import (
	"fmt"
	"testing"

	"nielsgpt/engine"
)

func TestKVFullIsBusy(t *testing.T) {
	eng := newFakeEngine()
	eng.refuse = fmt.Errorf("generating: %w", engine.ErrKVFull)
	ts := startServer(t, testConfig(), eng)
	for path, body := range map[string]string{
		"/chat/stream":       helloChat,
		"/inspect/full_attn": `{"messages":[{"role":"user","content":"a"}],"trace_layer":0,"head":0}`,
	} {
		resp := postJSON(t, ts.URL+path, body)
		if got := resp.Header.Get("Retry-After"); got != "1" {
			t.Errorf("%s: Retry-After %q, want 1", path, got)
		}
		if ct := resp.Header.Get("Content-Type"); ct == "text/event-stream" {
			t.Errorf("%s: a refused request started a stream", path)
		}
		wantError(t, resp, 503, "busy", "Server busy, please retry")
	}
	// An OpenAI answer in one body is refused the same way, in OpenAI's shape.
	resp := postJSON(t, ts.URL+"/v1/chat/completions", chatHi+`}`)
	if got := resp.Header.Get("Retry-After"); got != "1" {
		t.Errorf("/v1/chat/completions: Retry-After %q, want 1", got)
	}
	if e := decodeBody(t, resp, 503)["error"].(map[string]any); e["code"] != "busy" {
		t.Errorf("/v1/chat/completions: error %v, want code busy", e)
	}
	if got := ts.Metrics().Rejections("busy"); got != 3 {
		t.Fatalf("busy rejections %v, want 3", got)
	}

	// Any other failure before the first token is still an error event in a
	// stream, as before.
	eng.refuse = errFakeEngine
	events := readEvents(t, postJSON(t, ts.URL+"/chat/stream", helloChat))
	if len(events) != 1 || events[0].Type != "error" {
		t.Fatalf("engine failure before the first token: events %v", events)
	}
}
