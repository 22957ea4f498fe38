//go:build linux

package reliability

// Limits that must not be bypassed, end to end against the binary
// (docs/RELIABILITY.md, "Limits that cannot be bypassed"): the per-client rate
// limit against forged proxy headers, and CORS against origins that are not
// listed. The server package tests the same rules on its handler; these check
// the process users run, over real connections from distinct loopback
// addresses.

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"nielsgpt/internal/harness"
	"nielsgpt/internal/testkit"
)

// A client that is not a trusted proxy cannot escape its bucket by forging
// X-Forwarded-For or X-Real-IP: after RATE_LIMIT_BURST requests it gets 429
// whatever it claims to be, while other clients are unaffected and a real
// trusted proxy's header is still honoured.
func TestForgedForwardedHeadersStillLimited(t *testing.T) {
	const burst = 3
	// One token a minute: nothing refills during the test, so counts are exact.
	// 127.0.0.1 is a trusted proxy; the attacker connects from elsewhere.
	s := startServer(t, harness.Spec{Env: []string{
		fmt.Sprintf("RATE_LIMIT_BURST=%d", burst), "RATE_LIMIT_PER_MIN=1", "TRUSTED_PROXIES=127.0.0.1",
	}})
	attackerIP, bystanderIP := LoopbackIP(50), LoopbackIP(51)
	attacker := ClientFrom(attackerIP)
	chat := s.URL + "/chat/stream"
	full := s.URL + "/inspect/full_attn"
	fullBody := `{"messages":[{"role":"user","content":"hi"}],"trace_layer":0,"head":0}`

	forged := []http.Header{
		{"X-Forwarded-For": {"203.0.113.1"}},
		{"X-Real-Ip": {"203.0.113.2"}},
		{"X-Forwarded-For": {"203.0.113.3, 198.51.100.3"}, "X-Real-Ip": {"203.0.113.4"}},
		{"X-Forwarded-For": {"127.0.0.1"}}, // claiming to be the trusted proxy itself
		{"X-Forwarded-For": {"203.0.113.5", "203.0.113.6"}},
		{"X-Real-Ip": {bystanderIP}}, // someone else's address
		{"X-Forwarded-For": {"::1"}},
		{"Forwarded": {"for=203.0.113.7"}},
	}
	for i, h := range forged {
		url, body := chat, ChatBody("hi", 1, 0, int64(i))
		if i%2 == 1 { // both endpoints draw on the same bucket
			url, body = full, fullBody
		}
		status, code, header, err := Post(t.Context(), attacker, url, body, h)
		if err != nil {
			t.Fatal(err)
		}
		if i < burst {
			if status != http.StatusOK {
				t.Fatalf("request %d within the burst: %d %s", i, status, code)
			}
			continue
		}
		if status != http.StatusTooManyRequests || code != "rate_limited" || header.Get("Retry-After") == "" {
			t.Errorf("request %d with forged %v: %d %q (Retry-After %q), want 429 rate_limited", i, h, status, code, header.Get("Retry-After"))
		}
	}

	// The bystander whose address was forged still has its whole burst.
	for i := range burst {
		if status, code, _, err := Post(t.Context(), ClientFrom(bystanderIP), full, fullBody, nil); err != nil || status != http.StatusOK {
			t.Errorf("bystander request %d: %d %s %v", i, status, code, err)
		}
	}
	// Through the trusted proxy the attacker is still the attacker...
	proxy := ClientFrom("127.0.0.1")
	if status, _, _, _ := Post(t.Context(), proxy, full, fullBody, http.Header{"X-Forwarded-For": {"203.0.113.9, " + attackerIP}}); status != http.StatusTooManyRequests {
		t.Errorf("attacker via the trusted proxy: %d, want 429", status)
	}
	// ...and the proxy's header is believed for a fresh client, so the
	// refusals above are not because the headers are never read.
	if status, code, _, _ := Post(t.Context(), proxy, full, fullBody, http.Header{"X-Forwarded-For": {attackerIP + ", 198.51.100.20"}}); status != http.StatusOK {
		t.Errorf("fresh client via the trusted proxy: %d %s, want 200", status, code)
	}
	// The access log names the real peer, never a forged address. A line
	// is written once its response is sent, so the last may still be on
	// its way through the pipe.
	testkit.Eventually(t, 5*time.Second, "the access line of the proxied request", func() bool {
		return strings.Contains(s.Output(), `"client_ip":"198.51.100.20"`)
	})
	out := s.Output()
	for _, fake := range []string{"203.0.113.1", "203.0.113.2", "203.0.113.4"} {
		if strings.Contains(out, `"client_ip":"`+fake+`"`) {
			t.Errorf("the access log believed the forged address %s", fake)
		}
	}
	if n := scrape(t, s).Get(`nielsgpt_rejections_total{reason="rate_limited"}`); n != float64(len(forged)-burst+1) {
		t.Errorf("rate_limited rejections %v, want %d", n, len(forged)-burst+1)
	}
}

// An origin that is not listed gets no Access-Control-Allow-Origin on any
// route or method, a listed one gets exactly itself with credentials, and
// no response ever pairs credentials with "*".
func TestCORSUnlistedOriginsGetNothing(t *testing.T) {
	const listed = "https://good.example"
	s := startServer(t, harness.Spec{Env: []string{
		"ALLOWED_ORIGINS=" + listed + ",http://localhost:3000", "RATE_LIMIT_BURST=1000",
	}})
	client := ClientFrom(LoopbackIP(60))
	unlisted := []string{
		"https://evil.example", "null", "https://good.example.evil.example", "http://good.example",
		"https://good.example:8443", "HTTPS://GOOD.EXAMPLE", "https://good.example/", "https://evil.example, " + listed,
		"*",
	}
	type probe struct{ method, path, body string }
	probes := []probe{
		{"GET", "/health", ""},
		{"HEAD", "/health", ""},
		{"GET", "/metrics", ""},
		{"POST", "/chat/stream", ChatBody("hi", 1, 0, 1)},
		{"POST", "/inspect/full_attn", `{"messages":[{"role":"user","content":"hi"}],"trace_layer":0,"head":0}`},
		{"POST", "/chat/stream", `{"not":"valid"}`},
		{"OPTIONS", "/chat/stream", ""},
		{"OPTIONS", "/inspect/full_attn", ""},
		{"GET", "/no/such/route", ""},
	}
	do := func(origin string, p probe) *http.Response {
		req, err := http.NewRequestWithContext(t.Context(), p.method, s.URL+p.path, strings.NewReader(p.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", origin)
		if p.method == "OPTIONS" {
			req.Header.Set("Access-Control-Request-Method", "POST")
			req.Header.Set("Access-Control-Request-Headers", "content-type, authorization")
		} else if p.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, origin := range unlisted {
		for _, p := range probes {
			resp := do(origin, p)
			for _, h := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers"} {
				if v := resp.Header.Values(h); len(v) > 0 {
					t.Errorf("%s %s from %q: %s: %q", p.method, p.path, origin, h, v)
				}
			}
			if p.method == "OPTIONS" && resp.StatusCode < 400 {
				t.Errorf("preflight from %q answered %d", origin, resp.StatusCode)
			}
		}
	}
	for _, p := range probes[:len(probes)-1] { // the unknown route is not about CORS
		resp := do(listed, p)
		if got := resp.Header.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != listed {
			t.Errorf("%s %s from the listed origin: Access-Control-Allow-Origin %q", p.method, p.path, got)
		}
		if resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
			t.Errorf("%s %s from the listed origin: no credentials", p.method, p.path)
		}
		for h, vs := range resp.Header {
			if strings.HasPrefix(h, "Access-Control-") && strings.Contains(strings.Join(vs, ","), "*") {
				t.Errorf("%s %s: %s %q pairs a wildcard with credentials", p.method, p.path, h, vs)
			}
		}
	}
}

// A wildcard in ALLOWED_ORIGINS is refused at start-up: with credentials
// on, it would hand every site the user's session.
func TestCORSWildcardRefusedAtStart(t *testing.T) {
	for _, origins := range []string{"*", "https://*.example.com", "https://good.example,*"} {
		code, out, _, err := harness.RunToExit(harness.Spec{Exe: testkit.Binary(t), Model: deployedModel(t), Env: []string{"ALLOWED_ORIGINS=" + origins}}, 20*time.Second)
		if err != nil {
			t.Fatalf("ALLOWED_ORIGINS=%s: %v\n%s", origins, err, out)
		}
		if code == 0 || !strings.Contains(out, "ALLOWED_ORIGINS") || !strings.Contains(out, "wildcards are not allowed") {
			t.Errorf("ALLOWED_ORIGINS=%s: exit %d, output:\n%s", origins, code, out)
		}
		if strings.Contains(out, `"msg":"listening"`) {
			t.Errorf("ALLOWED_ORIGINS=%s: the server listened", origins)
		}
	}
}
