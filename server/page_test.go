package server

// The inspector page over HTTP, without a browser: where it is served, its
// caching and its Content-Security-Policy. page_browser_test.go drives it in
// a real Chromium.

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

func getPage(t *testing.T, url string, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestPageServedWithPolicyAndCaching(t *testing.T) {
	ts := startServer(t, testConfig(), nil) // the page works while the model loads

	resp := getPage(t, ts.URL+"/")
	page := string(readAll(t, resp))
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "connect-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("page Cache-Control %q, want no-cache (revalidated, since it names its assets' version)", cc)
	}
	// Nothing in the page points at another origin.
	if m := regexp.MustCompile(`(?i)(src|href)="(https?:)?//`).FindString(page); m != "" {
		t.Fatalf("the page refers to another origin: %s", m)
	}

	assets := regexp.MustCompile(`"(/ui/[0-9a-f]{16}/app\.(js|css))"`).FindAllStringSubmatch(page, -1)
	if len(assets) != 2 {
		t.Fatalf("the page names %d versioned assets, want app.js and app.css: %v", len(assets), assets)
	}
	for _, a := range assets {
		resp := getPage(t, ts.URL+a[1])
		body := readAll(t, resp)
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Fatalf("GET %s: %d", a[1], resp.StatusCode)
		}
		if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") || !strings.Contains(cc, "max-age=31536000") {
			t.Errorf("%s Cache-Control %q, want a year, immutable", a[1], cc)
		}
		wantType := map[string]string{"js": "text/javascript", "css": "text/css"}[a[2]]
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, wantType) {
			t.Errorf("%s Content-Type %q, want %s", a[1], ct, wantType)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s without nosniff", a[1])
		}
	}
	// Another version's URL, or a file that is not there, is a 404.
	stale := regexp.MustCompile(`/ui/[0-9a-f]{16}/`).ReplaceAllString(assets[0][1], "/ui/0000000000000000/")
	for _, path := range []string{stale, "/ui/" + assets[0][1][4:20] + "/nope.js", "/ui/x"} {
		wantError(t, getPage(t, ts.URL+path), http.StatusNotFound, "not_found", "")
	}

	// Revalidation: the ETag answers 304.
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("the page has no ETag")
	}
	if r := getPage(t, ts.URL+"/", "If-None-Match", etag); r.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match %s: %d, want 304", etag, r.StatusCode)
	}
	if r := getPage(t, ts.URL+"/", "If-None-Match", `"other"`); r.StatusCode != http.StatusOK {
		t.Fatalf("a different ETag: %d, want 200", r.StatusCode)
	}
}

func TestPageModelShape(t *testing.T) {
	ts := startServer(t, testConfig(), nil)
	resp := getPage(t, ts.URL+"/ui/model")
	if resp.Header.Get("Retry-After") == "" {
		t.Error("503 while loading without Retry-After")
	}
	wantError(t, resp, http.StatusServiceUnavailable, "model_loading", "Model not ready yet, please retry")

	eng := newFakeEngine()
	ts.SetEngine(eng)
	resp = getPage(t, ts.URL+"/ui/model")
	var got struct{ Vocab, Context, Layers, Heads, Generation int }
	if err := json.Unmarshal(readAll(t, resp), &got); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /ui/model: %d %v", resp.StatusCode, err)
	}
	c := eng.Config()
	if got.Vocab != c.Vocab || got.Context != c.Context || got.Layers != c.Layers || got.Heads != c.Heads || got.Generation != 1 {
		t.Fatalf("/ui/model says %+v, the model is %+v", got, c)
	}
}
