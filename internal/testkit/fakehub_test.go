package testkit

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// noRedirects sees the fake Hub's answers as they are, redirects included.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func hubGet(t *testing.T, url string, header ...string) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

const fileURL = "/me/model/resolve/main/best.pt"

// Ranges: "bytes=N-" gets the tail with 206 and Content-Range; past the
// end is 416; IgnoreRange answers 200 with the whole file.
func TestFakeHubRanges(t *testing.T) {
	f := NewFakeHub(t)
	f.Add("me/model", "best.pt", []byte("0123456789"))
	resp, body, err := hubGet(t, f.URL+fileURL, "Range", "bytes=4-")
	if err != nil || resp.StatusCode != http.StatusPartialContent || body != "456789" || resp.Header.Get("Content-Range") != "bytes 4-9/10" {
		t.Fatalf("range: %d %q %q %v", resp.StatusCode, body, resp.Header.Get("Content-Range"), err)
	}
	if resp, _, _ := hubGet(t, f.URL+fileURL, "Range", "bytes=10-"); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("range past the end: %d", resp.StatusCode)
	}
	f.Set(func(c *HubConfig) { c.IgnoreRange = true })
	if resp, body, _ := hubGet(t, f.URL+fileURL, "Range", "bytes=4-"); resp.StatusCode != http.StatusOK || body != "0123456789" {
		t.Fatalf("ignored range: %d %q", resp.StatusCode, body)
	}
	hub, _ := f.Requests()
	if len(hub) != 3 || hub[0].Range != "bytes=4-" || hub[0].Method != http.MethodGet || hub[0].URL != fileURL {
		t.Fatalf("requests %+v", hub)
	}
}

// A private repository answers 401 to a missing or wrong token, and a
// careless Hub quotes what it was sent.
func TestFakeHubAuth(t *testing.T) {
	f := NewFakeHub(t)
	f.Add("me/model", "best.pt", []byte("weights"))
	f.Set(func(c *HubConfig) { c.Token, c.EchoAuth = "hf_right", true })
	resp, body, _ := hubGet(t, f.URL+fileURL, "Authorization", "Bearer hf_wrong")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("X-Error-Message"), "Bearer hf_wrong") || !strings.Contains(body, "hf_wrong") {
		t.Fatalf("wrong token: %d %q %q", resp.StatusCode, resp.Header.Get("X-Error-Message"), body)
	}
	if resp, body, _ := hubGet(t, f.URL+fileURL, "Authorization", "Bearer hf_right"); resp.StatusCode != http.StatusOK || body != "weights" {
		t.Fatalf("right token: %d %q", resp.StatusCode, body)
	}
}

// With Redirect the Hub announces size and hash and sends the client to
// the CDN, which serves the body.
func TestFakeHubRedirectsToTheCDN(t *testing.T) {
	f := NewFakeHub(t)
	f.Add("me/model", "best.pt", []byte("weights"))
	f.Set(func(c *HubConfig) { c.Redirect = true })
	resp, _, _ := hubGet(t, f.URL+fileURL)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("X-Linked-Size") != "7" ||
		resp.Header.Get("X-Linked-Etag") != `"`+SHA256Hex([]byte("weights"))+`"` || !strings.HasPrefix(loc, f.CDNURL+"/lfs/me/model/best.pt?") {
		t.Fatalf("redirect: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, body, _ := hubGet(t, loc); resp.StatusCode != http.StatusOK || body != "weights" {
		t.Fatalf("CDN: %d %q", resp.StatusCode, body)
	}
	if _, cdn := f.Requests(); len(cdn) != 1 {
		t.Fatalf("CDN requests %+v", cdn)
	}
}

// A missing file of an existing repository is EntryNotFound, a missing
// repository RepoNotFound (what the client's message names), a renamed one
// a relative 307, and failures come first, then stop.
func TestFakeHubNotFoundRenamedAndFailures(t *testing.T) {
	f := NewFakeHub(t)
	f.Add("me/model", "README.md", []byte("hi"))
	f.Add("me/new-name", "best.pt", []byte("weights"))
	for url, code := range map[string]string{fileURL: "EntryNotFound", "/nobody/model/resolve/main/best.pt": "RepoNotFound"} {
		if resp, _, _ := hubGet(t, f.URL+url); resp.StatusCode != http.StatusNotFound || resp.Header.Get("X-Error-Code") != code {
			t.Errorf("%s: %d %q, want 404 %s", url, resp.StatusCode, resp.Header.Get("X-Error-Code"), code)
		}
	}
	f.Set(func(c *HubConfig) { c.Renamed["me/model"] = "me/new-name" })
	if resp, _, _ := hubGet(t, f.URL+fileURL); resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != "/me/new-name/resolve/main/best.pt" {
		t.Fatalf("renamed: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	f.Set(func(c *HubConfig) { c.Failures, c.FailStatus = 2, http.StatusInternalServerError })
	for i, want := range []int{500, 500, 200} {
		if resp, _, _ := hubGet(t, f.URL+"/me/new-name/resolve/main/best.pt"); resp.StatusCode != want {
			t.Errorf("request %d: %d, want %d", i, resp.StatusCode, want)
		}
	}
}

// A cut promises the whole body, sends up to CutAt and drops the
// connection, for as many GETs as Cuts says.
func TestFakeHubCuts(t *testing.T) {
	f := NewFakeHub(t)
	f.Add("me/model", "best.pt", []byte("0123456789"))
	f.Set(func(c *HubConfig) { c.Cuts, c.CutAt = 1, 6 })
	resp, body, err := hubGet(t, f.URL+fileURL)
	if resp.ContentLength != 10 || body != "012345" || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut: length %d, %q, %v", resp.ContentLength, body, err)
	}
	if _, body, err := hubGet(t, f.URL+fileURL); err != nil || body != "0123456789" {
		t.Fatalf("after the cut: %q %v", body, err)
	}
}
