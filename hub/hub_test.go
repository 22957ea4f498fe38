// Tests for Download and OptionsFromEnv, against testkit's fake Hub and a few
// one-off servers for what no Hub does.
package hub

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"nielsgpt/internal/testkit"
)

const (
	testRepo  = "nnandal/niels-gpt"
	testFile  = "best.pt"
	testToken = "hf_SeCrEtToKeN0123456789"
)

func TestMain(m *testing.M) {
	// Fast timings so stalls and retries take milliseconds; individual tests shrink further.
	tuning.idleTimeout = 2 * time.Second
	tuning.backoff = 5 * time.Millisecond
	tuning.progressEvery = 0
	os.Exit(m.Run())
}

// withTuning changes the timing knobs for one test.
func withTuning(t *testing.T, idle time.Duration, attempts int) {
	t.Helper()
	old := tuning
	tuning.idleTimeout, tuning.attempts = idle, attempts
	t.Cleanup(func() { tuning = old })
}

func checkpoint(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, uint64(n)))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// fakeHub serves content as testRepo/testFile, with change applied to the
// Hub's switches (nil for an honest Hub).
func fakeHub(t *testing.T, content []byte, change func(c *testkit.HubConfig)) *testkit.FakeHub {
	t.Helper()
	f := testkit.NewFakeHub(t)
	f.Add(testRepo, testFile, content)
	if change != nil {
		f.Set(change)
	}
	return f
}

// mustDownload downloads with o, which must succeed with want, and returns
// the file's path.
func mustDownload(t *testing.T, o Options, want []byte) string {
	t.Helper()
	path, err := download(t, o)
	if err != nil {
		t.Fatal(err)
	}
	mustContent(t, path, want)
	return path
}

// writePart leaves data where an interrupted download keeps its bytes.
func writePart(t *testing.T, dir string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, testFile+".part"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func options(f *testkit.FakeHub, dir string) Options {
	return Options{Endpoint: f.URL, RepoID: testRepo, Filename: testFile, Dir: dir}
}

func download(t *testing.T, o Options) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return Download(ctx, o)
}

func mustContent(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %d bytes (sha %s), want %d (sha %s)", path, len(got), testkit.SHA256Hex(got)[:12], len(want), testkit.SHA256Hex(want)[:12])
	}
}

func mustNotExist(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s should not exist (err=%v)", path, err)
	}
}

// noNetwork is an endpoint that fails the test when contacted.
func noNetwork(t *testing.T) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("unexpected request %s %s", r.Method, r.URL)
		w.WriteHeader(http.StatusTeapot)
	}))
	t.Cleanup(s.Close)
	return s.URL
}

func TestPlainDownload(t *testing.T) {
	content := checkpoint(300_000)
	f := fakeHub(t, content, nil)
	dir := filepath.Join(t.TempDir(), "nested", "checkpoints") // created on demand
	var bar bytes.Buffer
	o := options(f, dir)
	o.Progress = &bar

	path, err := download(t, o)
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(dir, testFile) {
		t.Fatalf("path %q", path)
	}
	mustContent(t, path, content)
	mustNotExist(t, path+".part")
	if out := bar.String(); !strings.Contains(out, testFile) || !strings.Contains(out, "100%") || !strings.Contains(out, "/s") || !strings.HasSuffix(out, "\n") {
		t.Fatalf("progress output %q", out)
	}
	hub, _ := f.Requests()
	if len(hub) != 2 || hub[0].Method != "HEAD" || hub[1].Method != "GET" || hub[1].Range != "" {
		t.Fatalf("hub requests %+v", hub)
	}
}

func TestRedirectToCDNSendsTokenOnlyToHub(t *testing.T) {
	content := checkpoint(100_000)
	f := fakeHub(t, content, func(c *testkit.HubConfig) { c.Redirect, c.Token = true, testToken })
	o := options(f, t.TempDir())
	o.Token = testToken

	mustDownload(t, o, content)
	hub, cdn := f.Requests()
	if len(hub) != 2 {
		t.Fatalf("hub requests %+v", hub)
	}
	for _, r := range hub {
		if r.Auth != "Bearer "+testToken {
			t.Fatalf("the Hub got Authorization %q on %s", r.Auth, r.Method)
		}
	}
	// Both servers are 127.0.0.1, so Go's own policy would forward the header: this checks ours.
	if len(cdn) != 1 || cdn[0].Method != "GET" {
		t.Fatalf("cdn requests %+v", cdn)
	}
	if cdn[0].Auth != "" {
		t.Fatalf("the CDN received the token (Authorization %q)", cdn[0].Auth)
	}
}

func TestRenamedRepoRedirectOnHub(t *testing.T) {
	f := testkit.NewFakeHub(t)
	content := checkpoint(5000)
	f.Add("nnandal/new-name", testFile, content)
	f.Set(func(c *testkit.HubConfig) {
		c.Redirect, c.Token = true, testToken
		c.Renamed[testRepo] = "nnandal/new-name"
	})
	o := options(f, t.TempDir())
	o.Token = testToken
	mustDownload(t, o, content)
	hub, cdn := f.Requests()
	for _, r := range hub {
		if r.Auth == "" {
			t.Fatalf("same-host redirect lost the token: %+v", hub)
		}
	}
	if len(cdn) != 1 || cdn[0].Auth != "" {
		t.Fatalf("cdn requests %+v", cdn)
	}
}

func TestPrivateRepo(t *testing.T) {
	content := checkpoint(2000)
	f := fakeHub(t, content, func(c *testkit.HubConfig) { c.Token, c.Redirect = testToken, true })
	dir := t.TempDir()

	_, err := download(t, options(f, dir))
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "HF_TOKEN") || !strings.Contains(err.Error(), "401") {
		t.Fatalf("without token: %v", err)
	}
	mustNotExist(t, filepath.Join(dir, testFile))

	o := options(f, dir)
	o.Token = "hf_wrong"
	if _, err := download(t, o); !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "HF_TOKEN was rejected") {
		t.Fatalf("wrong token: %v", err)
	}

	o.Token = testToken
	mustDownload(t, o, content)
}

func TestNotFound(t *testing.T) {
	f := testkit.NewFakeHub(t)
	f.Add(testRepo, "README.md", []byte("the repository exists; the checkpoint does not"))
	dir := t.TempDir()
	_, err := download(t, options(f, dir))
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "CKPT_FILENAME") || !strings.Contains(err.Error(), testRepo) {
		t.Fatalf("got %v", err)
	}
	mustNotExist(t, filepath.Join(dir, testFile))
	mustNotExist(t, filepath.Join(dir, testFile+".part"))
}

func TestIntegrityFailuresRemoveTheFile(t *testing.T) {
	content := checkpoint(50_000)
	for _, tc := range []struct {
		name   string
		change func(c *testkit.HubConfig)
		want   string
	}{
		{"sha mismatch", func(c *testkit.HubConfig) { c.LieSHA = testkit.SHA256Hex([]byte("something else")) }, "sha256 mismatch"},
		{"announced larger", func(c *testkit.HubConfig) { c.LieSize = "60000" }, "size mismatch"},
		{"announced smaller", func(c *testkit.HubConfig) { c.LieSize = "40000" }, "size mismatch"},
		{"unreadable size", func(c *testkit.HubConfig) { c.LieSize = "lots" }, "X-Linked-Size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := fakeHub(t, content, func(c *testkit.HubConfig) { c.Redirect = true })
			f.Set(tc.change)
			dir := t.TempDir()
			_, err := download(t, options(f, dir))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			mustNotExist(t, filepath.Join(dir, testFile))
			mustNotExist(t, filepath.Join(dir, testFile+".part"))
		})
	}
}

func TestSHAMismatchIsErrIntegrity(t *testing.T) {
	f := testkit.NewFakeHub(t)
	f.Add(testRepo, testFile, checkpoint(1000))
	f.Set(func(c *testkit.HubConfig) { c.LieSHA = strings.Repeat("ab", 32) }) // direct (non-redirect) path: ETag fallback
	if _, err := download(t, options(f, t.TempDir())); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("got %v", err)
	}
}

func TestCutDownloadResumesWithRange(t *testing.T) {
	withTuning(t, 2*time.Second, 1) // no automatic retry: the second Download does the resume
	content := checkpoint(400_000)
	f := fakeHub(t, content, func(c *testkit.HubConfig) { c.Redirect, c.CutAt, c.Cuts = true, 200_000, 1 })
	dir := t.TempDir()
	final := filepath.Join(dir, testFile)

	_, err := download(t, options(f, dir))
	if err == nil || errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), "resum") {
		t.Fatalf("first attempt: %v", err)
	}
	mustNotExist(t, final)
	part, err := os.ReadFile(final + ".part")
	if err != nil || len(part) != 200_000 || !bytes.Equal(part, content[:200_000]) {
		t.Fatalf("part file: %d bytes, err %v", len(part), err)
	}

	mustDownload(t, options(f, dir), content)
	mustNotExist(t, final+".part")
	_, cdn := f.Requests()
	if len(cdn) != 2 || cdn[1].Range != "bytes=200000-" {
		t.Fatalf("cdn requests %+v", cdn)
	}
}

func TestRetryResumesWithinOneCall(t *testing.T) {
	content := checkpoint(300_000)
	f := fakeHub(t, content, func(c *testkit.HubConfig) { c.CutAt, c.Cuts, c.Failures = 100_000, 1, 1 })
	mustDownload(t, options(f, t.TempDir()), content)
	hub, _ := f.Requests()
	// 503, then HEAD + GET cut at 100000, then HEAD + ranged GET.
	if len(hub) != 5 || hub[4].Range != "bytes=100000-" {
		t.Fatalf("hub requests %+v", hub)
	}
}

func TestServerIgnoringRangeRestartsCleanly(t *testing.T) {
	content := checkpoint(100_000)
	f := fakeHub(t, content, func(c *testkit.HubConfig) { c.Redirect, c.IgnoreRange = true, true })
	dir := t.TempDir()
	// A stale part with wrong bytes: if they were kept, the hash check would fail.
	writePart(t, dir, bytes.Repeat([]byte{0xEE}, 30_000))
	mustDownload(t, options(f, dir), content)
	_, cdn := f.Requests()
	if len(cdn) != 1 || cdn[0].Range != "bytes=30000-" {
		t.Fatalf("cdn requests %+v", cdn)
	}
}

func TestCorruptPartIsRedownloaded(t *testing.T) {
	// The server honours Range, but the old part holds wrong bytes: the resumed file fails
	// the hash, and one clean download from zero fixes it.
	content := checkpoint(100_000)
	f := fakeHub(t, content, func(c *testkit.HubConfig) { c.Redirect = true })
	dir := t.TempDir()
	writePart(t, dir, bytes.Repeat([]byte{1}, 10_000))
	mustDownload(t, options(f, dir), content)
	_, cdn := f.Requests()
	if len(cdn) != 2 || cdn[0].Range != "bytes=10000-" || cdn[1].Range != "" {
		t.Fatalf("cdn requests %+v", cdn)
	}
}

func TestCompletePartIsVerifiedWithoutBody(t *testing.T) {
	content := checkpoint(20_000)

	t.Run("size known from HEAD: no GET", func(t *testing.T) {
		f := fakeHub(t, content, func(c *testkit.HubConfig) { c.Redirect = true })
		dir := t.TempDir()
		writePart(t, dir, content)
		mustDownload(t, options(f, dir), content)
		if hub, cdn := f.Requests(); len(hub) != 1 || len(cdn) != 0 {
			t.Fatalf("requests hub %+v cdn %+v", hub, cdn)
		}
	})

	t.Run("no HEAD: 416 means complete", func(t *testing.T) {
		f := fakeHub(t, content, func(c *testkit.HubConfig) { c.NoHead = true })
		dir := t.TempDir()
		writePart(t, dir, content)
		mustDownload(t, options(f, dir), content)
	})

	t.Run("no HEAD: part longer than the file restarts", func(t *testing.T) {
		f := fakeHub(t, content, func(c *testkit.HubConfig) { c.NoHead = true })
		dir := t.TempDir()
		writePart(t, dir, checkpoint(25_000))
		mustDownload(t, options(f, dir), content)
	})
}

func TestOffline(t *testing.T) {
	dir := t.TempDir()
	o := Options{Endpoint: noNetwork(t), RepoID: testRepo, Filename: testFile, Dir: dir, Offline: true}

	_, err := Download(context.Background(), o)
	if !errors.Is(err, ErrOffline) {
		t.Fatalf("got %v", err)
	}
	testkit.ContainsAll(t, "offline error", err.Error(), "HF_HUB_OFFLINE=0", "--model demo", "--model PATH")

	content := []byte("cached checkpoint")
	os.WriteFile(filepath.Join(dir, testFile), content, 0o644)
	path, err := Download(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	mustContent(t, path, content)
}

func TestAlreadyPresentMakesNoRequest(t *testing.T) {
	dir := t.TempDir()
	content := []byte("already here")
	os.WriteFile(filepath.Join(dir, testFile), content, 0o644)
	o := Options{Endpoint: noNetwork(t), RepoID: testRepo, Filename: testFile, Dir: dir, Token: testToken}
	path, err := Download(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	mustContent(t, path, content)

	// A directory squatting on the name is reported, not replaced.
	os.Remove(path)
	os.Mkdir(path, 0o755)
	if _, err := Download(context.Background(), o); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("got %v", err)
	}
}

func TestHostileNames(t *testing.T) {
	endpoint := noNetwork(t)
	root := t.TempDir()
	dir := filepath.Join(root, "ckpt")
	for _, tc := range []struct{ endpoint, repo, file string }{
		{endpoint, "../../etc", testFile},
		{endpoint, "owner/..", testFile},
		{endpoint, "../x", testFile},
		{endpoint, "a/b/c", testFile},
		{endpoint, "justname", testFile},
		{endpoint, "/abs/path", testFile},
		{endpoint, "owner/name?x=1", testFile},
		{endpoint, "owner/name#frag", testFile},
		{endpoint, "own er/name", testFile},
		{endpoint, "owner/.hidden", testFile},
		{endpoint, "", testFile},
		{endpoint, testRepo, "../../../etc/passwd"},
		{endpoint, testRepo, "../best.pt"},
		{endpoint, testRepo, "sub/best.pt"},
		{endpoint, testRepo, `sub\best.pt`},
		{endpoint, testRepo, ".."},
		{endpoint, testRepo, "."},
		{endpoint, testRepo, ""},
		{endpoint, testRepo, "/etc/passwd"},
		{endpoint, testRepo, "best.pt\x00"},
		{endpoint, testRepo, "%2e%2e"},
		{endpoint, testRepo, "best.pt\n"},
		{endpoint, testRepo, strings.Repeat("a", 300)},
		{"ftp://example.com", testRepo, testFile},
		{"file:///etc", testRepo, testFile},
		{"http://", testRepo, testFile},
		{"not a url", testRepo, testFile},
		{endpoint + "?x=1", testRepo, testFile},
	} {
		o := Options{Endpoint: tc.endpoint, RepoID: tc.repo, Filename: tc.file, Dir: dir}
		_, err := Download(context.Background(), o)
		if !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%q %q %q: got %v", tc.endpoint, tc.repo, tc.file, err)
		}
	}
	entries, _ := os.ReadDir(root)
	if len(entries) != 0 {
		t.Fatalf("hostile names created files: %v", entries)
	}
}

func TestStallMidBodyTimesOut(t *testing.T) {
	withTuning(t, 200*time.Millisecond, 1)
	content := checkpoint(100_000)
	f := fakeHub(t, content, func(c *testkit.HubConfig) { c.Redirect, c.Stall, c.StallAt = true, true, 40_000 })
	dir := t.TempDir()
	start := time.Now()
	_, err := download(t, options(f, dir))
	if err == nil || !strings.Contains(err.Error(), "stalled") {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
	if fi, err := os.Stat(filepath.Join(dir, testFile+".part")); err != nil || fi.Size() != 40_000 {
		t.Fatalf("part kept for resume: %v %v", fi, err)
	}
	mustNotExist(t, filepath.Join(dir, testFile))
}

func TestStallBeforeHeadersTimesOut(t *testing.T) {
	withTuning(t, 200*time.Millisecond, 2)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer s.Close()
	start := time.Now()
	_, err := download(t, Options{Endpoint: s.URL, RepoID: testRepo, Filename: testFile, Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "stalled") {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestCancelStopsPromptlyAndKeepsPart(t *testing.T) {
	content := checkpoint(100_000)
	f := fakeHub(t, content, func(c *testkit.HubConfig) { c.Stall, c.StallAt = true, 30_000 })
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(150*time.Millisecond, cancel)
	start := time.Now()
	_, err := Download(ctx, options(f, dir))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("took %v", d)
	}
	if fi, err := os.Stat(filepath.Join(dir, testFile+".part")); err != nil || fi.Size() != 30_000 {
		t.Fatalf("part: %v %v", fi, err)
	}
}

func TestTooLarge(t *testing.T) {
	f := fakeHub(t, checkpoint(10_000), func(c *testkit.HubConfig) { c.Redirect = true })
	dir := t.TempDir()
	o := options(f, dir)
	o.MaxSize = 5000
	if _, err := download(t, o); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v", err)
	}
	if _, cdn := f.Requests(); len(cdn) != 0 {
		t.Fatalf("downloaded anyway: %+v", cdn)
	}

	// Without metadata the limit still holds while streaming.
	f.Set(func(c *testkit.HubConfig) { c.Redirect, c.NoHead = false, true })
	if _, err := download(t, o); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("no HEAD: got %v", err)
	}
	mustNotExist(t, filepath.Join(dir, testFile+".part"))
}

func TestRefusesHTTPSDowngrade(t *testing.T) {
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("plain-http CDN was contacted")
	}))
	defer cdn.Close()
	hub := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Linked-Size", "10")
		w.Header().Set("Location", cdn.URL+"/x")
		w.WriteHeader(http.StatusFound)
	}))
	defer hub.Close()
	o := Options{Endpoint: hub.URL, RepoID: testRepo, Filename: testFile, Dir: t.TempDir(), Client: hub.Client()}
	if _, err := download(t, o); err == nil || !strings.Contains(err.Error(), "https to insecure") {
		t.Fatalf("got %v", err)
	}
}

func TestConcurrentDownloadsShareOneFile(t *testing.T) {
	content := checkpoint(200_000)
	f := fakeHub(t, content, nil)
	dir := t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { _, errs[i] = download(t, options(f, dir)) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	mustContent(t, filepath.Join(dir, testFile), content)
	if hub, _ := f.Requests(); len(hub) != 2 {
		t.Fatalf("downloaded more than once: %+v", hub)
	}
}

func TestTokenNeverInErrors(t *testing.T) {
	withTuning(t, 200*time.Millisecond, 1)
	content := checkpoint(50_000)
	scenarios := map[string]func(c *testkit.HubConfig){
		"echoed in 401":  func(c *testkit.HubConfig) { c.Token, c.EchoAuth = "hf_other", true },
		"not found":      func(c *testkit.HubConfig) { c.Files = map[string][]byte{} },
		"sha mismatch":   func(c *testkit.HubConfig) { c.Redirect, c.LieSHA = true, strings.Repeat("0", 64) },
		"size mismatch":  func(c *testkit.HubConfig) { c.Redirect, c.LieSize = true, "7" },
		"stall":          func(c *testkit.HubConfig) { c.Redirect, c.Stall, c.StallAt = true, true, 10 },
		"connection cut": func(c *testkit.HubConfig) { c.Cuts, c.CutAt = 1, 100 },
		"server error":   func(c *testkit.HubConfig) { c.Failures = 5 },
	}
	for name, change := range scenarios {
		t.Run(name, func(t *testing.T) {
			f := fakeHub(t, content, change)
			o := options(f, t.TempDir())
			o.Token = testToken
			_, err := download(t, o)
			if err == nil {
				t.Fatal("expected an error")
			}
			if strings.Contains(err.Error(), testToken) {
				t.Fatalf("token leaked: %v", err)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		s := httptest.NewServer(http.NotFoundHandler())
		url := s.URL
		s.Close() // nothing listens there any more
		_, err := download(t, Options{Endpoint: url, RepoID: testRepo, Filename: testFile, Dir: t.TempDir(), Token: testToken})
		if err == nil || !strings.Contains(err.Error(), "network error") || strings.Contains(err.Error(), testToken) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestOptionsFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string {
		return func(k string) string { return m[k] }
	}
	got := OptionsFromEnv(env(nil))
	want := Options{Endpoint: "https://huggingface.co", RepoID: "nnandal/niels-gpt", Filename: "best.pt", Dir: "./checkpoints"}
	if got != want {
		t.Fatalf("defaults: %+v", got)
	}
	got = OptionsFromEnv(env(map[string]string{
		"HF_ENDPOINT": "https://mirror.example/hf/", "CKPT_REPO_ID": "me/model", "CKPT_FILENAME": "last.pt",
		"CKPT_DIR": "/data", "HF_TOKEN": " hf_x\n", "HF_HUB_OFFLINE": "1",
	}))
	want = Options{Endpoint: "https://mirror.example/hf", RepoID: "me/model", Filename: "last.pt", Dir: "/data", Token: "hf_x", Offline: true}
	if got != want {
		t.Fatalf("overrides: %+v", got)
	}
	for v, offline := range map[string]bool{"true": true, "YES": true, "on": true, "0": false, "false": false, "": false, "nope": false} {
		if got := OptionsFromEnv(env(map[string]string{"HF_HUB_OFFLINE": v})).Offline; got != offline {
			t.Errorf("HF_HUB_OFFLINE=%q: %v", v, got)
		}
	}
	if got := OptionsFromEnv(env(map[string]string{"CKPT_DIR": "  "})).Dir; got != DefaultDir {
		t.Errorf("blank CKPT_DIR: %q", got)
	}
}

func TestEndpointWithPathPrefix(t *testing.T) {
	content := checkpoint(1000)
	f := fakeHub(t, content, nil)
	mirror := httptest.NewServer(http.StripPrefix("/mirror", f.Handler()))
	defer mirror.Close()
	mustDownload(t, Options{Endpoint: mirror.URL + "/mirror/", RepoID: testRepo, Filename: testFile, Dir: t.TempDir()}, content)
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in               string
		start, end, size int64
		ok               bool
	}{
		{"bytes 0-9/10", 0, 9, 10, true},
		{"bytes 5-9/*", 5, 9, -1, true},
		{"bytes */10", -1, -1, 10, false},
		{"bytes 5-4/10", -1, -1, 10, false},
		{"bytes 5-10/10", -1, -1, 10, false},
		{"bytes -1-5/10", -1, -1, 10, false},
		{"items 0-9/10", -1, -1, -1, false},
		{"bytes 0-9", -1, -1, -1, false},
		{"", -1, -1, -1, false},
		{"bytes 0-99999999999999999999/10", -1, -1, 10, false},
	} {
		s, e, n, ok := parseContentRange(tc.in)
		if s != tc.start || e != tc.end || n != tc.size || ok != tc.ok {
			t.Errorf("%q: got %d %d %d %v", tc.in, s, e, n, ok)
		}
	}
}

func TestSHA256FromETag(t *testing.T) {
	h := strings.Repeat("a1", 32)
	for in, want := range map[string]string{
		`"` + h + `"`:                       h,
		`W/"` + strings.ToUpper(h) + `"`:    h,
		h:                                   h,
		`"` + strings.Repeat("a", 40) + `"`: "", // a git blob id
		`"` + strings.Repeat("z", 64) + `"`: "",
		"":                                  "",
	} {
		if got := sha256FromETag(in); got != want {
			t.Errorf("%q: got %q", in, got)
		}
	}
}

func TestClipKeepsMessagesShortAndValid(t *testing.T) {
	got := clip(strings.Repeat("é", 100) + "\x1b[2J")
	if !utf8.ValidString(got) || len(got) > 130 || strings.ContainsRune(got, 0x1b) {
		t.Fatalf("clip: %q", got)
	}
	if got := clip("a\nb\x7f"); got != "a?b?" {
		t.Fatalf("control characters: %q", got)
	}
}
