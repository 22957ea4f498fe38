package server

// Limits that must not be bypassed (docs/API.md, "Limits and protections"):
// the per-client rate limit and who the client is, the concurrency cap, CORS.

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"nielsgpt/internal/testkit"
)

func TestRateLimit(t *testing.T) {
	cfg := testConfig()
	cfg.RateLimitBurst = 3
	cfg.RateLimitPerMin = 10
	ts := startServer(t, cfg, newFakeEngine())
	full := `{"messages":[{"role":"user","content":"a"}],"trace_layer":0,"head":0}`
	// Both POST endpoints draw on the same bucket.
	readEvents(t, postJSON(t, ts.URL+"/chat/stream", helloChat))
	readAll(t, postJSON(t, ts.URL+"/inspect/full_attn", full))
	readEvents(t, postJSON(t, ts.URL+"/chat/stream", helloChat))
	for _, path := range []string{"/chat/stream", "/inspect/full_attn"} {
		// An invalid body still gets 429: the limit comes before any work.
		resp := postJSON(t, ts.URL+path, `{not json`)
		if got := resp.Header.Get("Retry-After"); got != "6" {
			t.Errorf("Retry-After %q, want 6 (one token every 6 s)", got)
		}
		wantError(t, resp, 429, "rate_limited", "Rate limit exceeded")
	}
	// GETs are not limited.
	resp, err := http.Get(ts.URL + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("health after the limit: %v %v", err, resp.StatusCode)
	}
	resp.Body.Close()
	if got := ts.Metrics().Rejections("rate_limited"); got != 2 {
		t.Fatalf("rate_limited rejections %v", got)
	}
}

func TestRateLimitRefills(t *testing.T) {
	cfg := testConfig()
	cfg.RateLimitBurst = 1
	cfg.RateLimitPerMin = 600 // a token every 100 ms
	ts := startServer(t, cfg, newFakeEngine())
	readEvents(t, postJSON(t, ts.URL+"/chat/stream", helloChat))
	wantError(t, postJSON(t, ts.URL+"/chat/stream", helloChat), 429, "rate_limited", "")
	time.Sleep(150 * time.Millisecond)
	if events := readEvents(t, postJSON(t, ts.URL+"/chat/stream", helloChat)); events[len(events)-1].Type != "done" {
		t.Fatal("bucket did not refill")
	}
}

// A client that is not a trusted proxy cannot pick its bucket by forging
// X-Forwarded-For or X-Real-IP.
func TestForgedForwardedForIgnored(t *testing.T) {
	cfg := testConfig()
	cfg.RateLimitBurst = 2
	cfg.RateLimitPerMin = 1
	cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} // not us
	ts := startServer(t, cfg, newFakeEngine())
	forged := [][]string{
		{"X-Forwarded-For", "1.1.1.1"},
		{"X-Forwarded-For", "2.2.2.2, 10.0.0.1"},
		{"X-Real-IP", "3.3.3.3"},
	}
	served := 0
	for _, h := range forged {
		resp := postJSON(t, ts.URL+"/chat/stream", helloChat, h...)
		if resp.StatusCode == 200 {
			served++
		}
		readAll(t, resp)
	}
	if served != 2 {
		t.Fatalf("%d of 3 requests with forged headers served, want 2 (one bucket of 2)", served)
	}
}

// Behind a trusted proxy, the client is the right-most address in
// X-Forwarded-For that is not one of our proxies; what the client wrote to
// the left of it changes nothing.
func TestTrustedProxyForwardedFor(t *testing.T) {
	cfg := testConfig()
	cfg.RateLimitBurst = 1
	cfg.RateLimitPerMin = 1
	cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")}
	ts := startServer(t, cfg, newFakeEngine())
	status := func(h ...string) int {
		resp := postJSON(t, ts.URL+"/chat/stream", helloChat, h...)
		readAll(t, resp)
		return resp.StatusCode
	}
	if got := status("X-Forwarded-For", "9.9.9.9, 1.1.1.1, 10.0.0.7"); got != 200 {
		t.Fatalf("first request from 1.1.1.1: %d", got)
	}
	if got := status("X-Forwarded-For", "8.8.8.8, 1.1.1.1"); got != 429 {
		t.Fatalf("1.1.1.1 again with a different forged prefix: %d, want 429", got)
	}
	if got := status("X-Forwarded-For", "2.2.2.2"); got != 200 {
		t.Fatalf("another client behind the proxy: %d", got)
	}
	if got := status("X-Real-IP", "3.3.3.3"); got != 200 {
		t.Fatalf("X-Real-IP from the proxy: %d", got)
	}
	if got := status("X-Real-IP", "3.3.3.3"); got != 429 {
		t.Fatalf("X-Real-IP again: %d, want 429", got)
	}
	// The proxy's own requests (no header) have a bucket of their own.
	if got := status(); got != 200 {
		t.Fatalf("the proxy itself: %d", got)
	}
}

func TestClientAddr(t *testing.T) {
	trust := proxyTrust{prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}}
	cases := []struct {
		peer, xff, real, want string
	}{
		{"1.2.3.4:5", "", "", "1.2.3.4"},
		{"1.2.3.4:5", "5.5.5.5", "6.6.6.6", "1.2.3.4"},               // untrusted peer: headers ignored
		{"10.1.1.1:5", "5.5.5.5", "6.6.6.6", "5.5.5.5"},              // XFF before X-Real-IP
		{"10.1.1.1:5", "", "6.6.6.6", "6.6.6.6"},                     // X-Real-IP from a proxy
		{"10.1.1.1:5", "7.7.7.7, 5.5.5.5, 10.2.2.2", "", "5.5.5.5"},  // right-most untrusted
		{"10.1.1.1:5", "10.3.3.3, 10.2.2.2", "", "10.3.3.3"},         // all ours: the origin hop
		{"10.1.1.1:5", "7.7.7.7, garbage, 10.2.2.2", "", "10.2.2.2"}, // unreadable chain: nearest trusted hop
		{"10.1.1.1:5", "[2001:db8::1]:443", "", "2001:db8::1"},
		{"[fd00::1]:5", "1.2.3.4:99", "", "1.2.3.4"},
		{"[::ffff:1.2.3.4]:5", "", "", "1.2.3.4"}, // IPv4-mapped is the same client
		{"not-an-address", "5.5.5.5", "", "invalid IP"},
	}
	for _, tc := range cases {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.RemoteAddr = tc.peer
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		if tc.real != "" {
			r.Header.Set("X-Real-IP", tc.real)
		}
		if got := trust.clientAddr(r).String(); got != tc.want {
			t.Errorf("peer %s xff %q real %q: client %s, want %s", tc.peer, tc.xff, tc.real, got, tc.want)
		}
	}
	// IPv6 clients share a bucket per /64.
	a, b := netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2:ffff::9")
	if rateKey(a) != rateKey(b) || rateKey(a) == rateKey(netip.MustParseAddr("2001:db8:1:3::1")) {
		t.Fatalf("rate keys %s %s", rateKey(a), rateKey(b))
	}
}

func TestConcurrencyCap(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConcurrent = 2
	fake := newFakeEngine()
	fake.delay = 20 * time.Millisecond
	ts := startServer(t, cfg, fake)
	var open []*http.Response
	for range 2 {
		resp := postJSON(t, ts.URL+"/chat/stream", helloChat)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		open = append(open, resp)
	}
	if got := ts.Metrics().ActiveGenerations(); got != 2 {
		t.Fatalf("active generations %v", got)
	}
	for path, body := range map[string]string{
		"/chat/stream":       helloChat,
		"/inspect/full_attn": `{"messages":[{"role":"user","content":"a"}],"trace_layer":0,"head":0}`,
	} {
		resp := postJSON(t, ts.URL+path, body)
		if got := resp.Header.Get("Retry-After"); got != "1" {
			t.Errorf("%s: 503 busy with Retry-After %q, want 1", path, got)
		}
		wantError(t, resp, 503, "busy", "Server busy, please retry")
	}
	for _, resp := range open {
		if events := readEvents(t, resp); events[len(events)-1].Type != "done" {
			t.Fatal("stream did not finish")
		}
	}
	testkit.Eventually(t, waitLimit, "slots released", func() bool { return ts.Metrics().ActiveGenerations() == 0 })
	if events := readEvents(t, postJSON(t, ts.URL+"/chat/stream", helloChat)); events[len(events)-1].Type != "done" {
		t.Fatal("not served once slots were free")
	}
	if got := ts.Metrics().Rejections("busy"); got != 2 {
		t.Fatalf("busy rejections %v", got)
	}
}

func TestCORS(t *testing.T) {
	ts := startServer(t, testConfig(), newFakeEngine())
	allowed := "http://localhost:5173"
	do := func(method, path, origin string, h ...string) *http.Response {
		req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(helloChat))
		req.Header.Set("Origin", origin)
		for i := 0; i+1 < len(h); i += 2 {
			req.Header.Set(h[i], h[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		return resp
	}

	// Preflight from a listed origin: answered, credentials, the method and
	// the requested headers allowed, never a wildcard.
	resp := do(http.MethodOptions, "/chat/stream", allowed,
		"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type,x-trace-id")
	h := resp.Header
	if resp.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != allowed ||
		h.Get("Access-Control-Allow-Credentials") != "true" ||
		!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") ||
		h.Get("Access-Control-Allow-Headers") != "content-type,x-trace-id" {
		t.Fatalf("allowed preflight: %d %v", resp.StatusCode, h)
	}

	// Preflight from an unlisted origin: no CORS headers at all.
	resp = do(http.MethodOptions, "/chat/stream", "https://evil.example", "Access-Control-Request-Method", "POST")
	for key := range resp.Header {
		if strings.HasPrefix(key, "Access-Control-") {
			t.Fatalf("unlisted preflight got %s: %v", key, resp.Header)
		}
	}
	if resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusOK {
		t.Fatalf("unlisted preflight answered %d", resp.StatusCode)
	}

	// Actual requests: the listed origin is echoed with credentials; an
	// unlisted one is served without CORS headers, so a browser hides it.
	resp = do(http.MethodPost, "/chat/stream", allowed)
	if resp.Header.Get("Access-Control-Allow-Origin") != allowed || resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("allowed POST headers %v", resp.Header)
	}
	resp = do(http.MethodPost, "/chat/stream", "http://localhost:5173.evil.example")
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("unlisted POST: %d %v", resp.StatusCode, resp.Header)
	}
	resp = do(http.MethodGet, "/health", "null")
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("origin null allowed: %v", resp.Header)
	}

	// Preflights are counted under their own route label, not as unmatched.
	metricsResp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readAll(t, metricsResp))
	if !strings.Contains(text, `nielsgpt_http_requests_total{route="preflight",status="204"} 1`) ||
		!strings.Contains(text, `nielsgpt_http_requests_total{route="preflight",status="403"} 1`) {
		t.Fatalf("preflights not labelled preflight:\n%s", text)
	}
}
