//go:build linux

package reliability

// HF_TOKEN end to end: `nielsgpt serve` downloading its checkpoint from a
// fake Hub that misbehaves in every way a real one can (401, 404, 500, a
// connection cut mid-body) and that echoes the token back in its error
// messages, as a hostile or merely careless server might. The token must
// never show in the server's output or on disk, and must never be sent to
// the CDN the Hub redirects to, while the Hub itself does receive it.

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"nielsgpt/internal/harness"
	"nielsgpt/internal/testkit"
)

const (
	hfToken  = "secret-token-xyz"
	hubRepo  = "someone/niels-gpt"
	hubFile  = "best.pt"
	hubTries = 1000 // a failure "for good": more than the server ever retries
)

// hubModes are the Hub's behaviours, by name: each one adds the checkpoint
// (or not) and sets the switches. Every error answer quotes the
// Authorization header it received.
var hubModes = map[string]func(f *testkit.FakeHub, checkpoint []byte){
	"401": func(f *testkit.FakeHub, checkpoint []byte) {
		f.Add(hubRepo, hubFile, checkpoint)
		f.Set(func(c *testkit.HubConfig) { c.Token, c.EchoAuth = "hf_someone_else", true })
	},
	"404": func(f *testkit.FakeHub, checkpoint []byte) {
		f.Set(func(c *testkit.HubConfig) { c.EchoAuth = true })
	},
	"500": func(f *testkit.FakeHub, checkpoint []byte) {
		f.Add(hubRepo, hubFile, checkpoint)
		f.Set(func(c *testkit.HubConfig) { c.Failures, c.FailStatus, c.EchoAuth = hubTries, 500, true })
	},
	// The Hub's 302 to the CDN, which promises the whole file, sends half
	// and drops the connection, every time (resuming from the half too).
	"cut": func(f *testkit.FakeHub, checkpoint []byte) {
		f.Add(hubRepo, hubFile, checkpoint)
		f.Set(func(c *testkit.HubConfig) {
			c.Redirect, c.IgnoreRange, c.Cuts, c.CutAt = true, true, hubTries, int64(len(checkpoint)/2)
		})
	},
	"ok": func(f *testkit.FakeHub, checkpoint []byte) {
		f.Add(hubRepo, hubFile, checkpoint)
		f.Set(func(c *testkit.HubConfig) { c.Redirect = true })
	},
}

func TestHFTokenNeverLeaks(t *testing.T) {
	checkpoint, err := os.ReadFile(filepath.Join("..", "testdata", "models", "tiny_b.pt"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		mode    string
		problem string // in the one-line failure; "" for the download that works
	}{
		{"401", "401 Unauthorized: HF_TOKEN was rejected"},
		{"404", "404 Not Found: the repository"},
		{"500", "500 Internal Server Error from the Hub"},
		{"cut", "gave up after 3 attempts"},
		{"ok", ""},
	}
	for _, tc := range cases {
		t.Run(tc.mode, func(t *testing.T) {
			t.Parallel()
			hub := testkit.NewFakeHub(t)
			hubModes[tc.mode](hub, checkpoint)
			ckptDir := t.TempDir()
			spec := harness.Spec{Exe: testkit.Binary(t), Env: []string{
				"HF_TOKEN=" + hfToken, "HF_ENDPOINT=" + hub.URL, "CKPT_REPO_ID=" + hubRepo, "CKPT_FILENAME=" + hubFile,
				"CKPT_DIR=" + ckptDir, "XDG_CACHE_HOME=" + t.TempDir(),
			}}
			var out string
			if tc.problem != "" {
				out = startFailsWith(t, spec, tc.problem)
				if _, err := os.Stat(filepath.Join(ckptDir, hubFile)); err == nil {
					t.Error("a failed download left the checkpoint in place")
				}
			} else {
				out = serveDownloaded(t, spec)
				got, err := os.ReadFile(filepath.Join(ckptDir, hubFile))
				if err != nil || string(got) != string(checkpoint) {
					t.Errorf("the downloaded checkpoint is not the Hub's file (%v)", err)
				}
			}
			checkTokenOnlyAtTheHub(t, hub, tc.mode == "cut" || tc.mode == "ok")
			checkTokenNotIn(t, out, ckptDir)
		})
	}
}

// startFailsWith runs a server whose start must fail, checks that its last
// line names the problem and the offline alternative, and returns its
// output. Transient failures (500, cut) are retried with back-off (2 s,
// 4 s) before the start gives up.
func startFailsWith(t *testing.T, spec harness.Spec, problem string) string {
	t.Helper()
	code, out, elapsed, err := harness.RunToExit(spec, 60*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	last := lines[len(lines)-1]
	if code == 0 || !strings.HasPrefix(last, "nielsgpt serve: ") || !strings.Contains(last, problem) || !strings.Contains(last, "--model demo") {
		t.Errorf("exit %d after %s; last line %q, want %q and the offline alternative", code, elapsed.Round(time.Millisecond), last, problem)
	}
	return out
}

// serveDownloaded starts a server that downloads its model, checks that it
// serves it and drains on SIGTERM, and returns its output.
func serveDownloaded(t *testing.T, spec harness.Spec) string {
	t.Helper()
	s := testkit.Serve(t, spec)
	if status, code, _, err := Post(t.Context(), ClientFrom("127.0.0.1"), s.URL+"/chat/stream", ChatBody("hi", 2, 0, 1), nil); err != nil || status != http.StatusOK {
		t.Errorf("serving the downloaded model: %d %s %v", status, code, err)
	}
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := s.WaitExit(30 * time.Second); err != nil || code != 0 {
		t.Errorf("exit %d, %v", code, err)
	}
	return s.Output()
}

// checkTokenOnlyAtTheHub checks that every request to the Hub carried the
// token (so the checks that it went nowhere else are not vacuous) and that
// the CDN never received it, in any header or in the URL.
func checkTokenOnlyAtTheHub(t *testing.T, hub *testkit.FakeHub, cdnAsked bool) {
	t.Helper()
	hubSeen, cdnSeen := hub.Requests()
	if len(hubSeen) == 0 {
		t.Fatal("the Hub was never asked")
	}
	for _, r := range hubSeen {
		if r.Auth != "Bearer "+hfToken {
			t.Errorf("Hub %s %s: Authorization %q, want the bearer token", r.Method, r.URL, r.Auth)
		}
	}
	if cdnAsked && len(cdnSeen) == 0 {
		t.Error("the CDN was never asked")
	}
	for _, r := range cdnSeen {
		if r.Auth != "" {
			t.Errorf("CDN %s %s received Authorization", r.Method, r.URL)
		}
		if strings.Contains(fmt.Sprint(r.Header), hfToken) || strings.Contains(r.URL, hfToken) {
			t.Errorf("CDN %s %s received the token", r.Method, r.URL)
		}
	}
	t.Logf("Hub asked %d times, CDN %d times", len(hubSeen), len(cdnSeen))
}

// checkTokenNotIn checks that the token is nowhere in what the server
// printed or wrote, not even cut short.
func checkTokenNotIn(t *testing.T, out, dir string) {
	t.Helper()
	for _, leak := range []string{hfToken, "secret-token"} {
		if strings.Contains(out, leak) {
			t.Errorf("the server's output contains %q:\n%s", leak, out)
		}
	}
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, err := os.ReadFile(path); err == nil && strings.Contains(string(b), "secret-token") {
				t.Errorf("%s contains the token", path)
			}
		}
		return nil
	})
	t.Logf("output ends: %s", harness.Tail(strings.TrimSpace(out), 300))
}
