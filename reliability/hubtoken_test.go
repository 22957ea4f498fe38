//go:build linux

package reliability

// HF_TOKEN end to end (issue 6 item 4): `nielsgpt serve` downloading its
// checkpoint from a fake Hub that misbehaves in every way a real one can
// (401, 404, 500, a connection cut mid-body) and that echoes the token back
// in its error messages, as a hostile or merely careless server might. The
// token must never show in the server's output or on disk, and must never
// be sent to the CDN the Hub redirects to (a second server on another
// loopback address), while the Hub itself does receive it.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"nielsgpt/internal/testkit"
)

const hfToken = "secret-token-xyz"

// recordedRequest is what a fake server saw.
type recordedRequest struct {
	Method, URL string
	Header      http.Header
}

// fakeHub is a Hub and its CDN. mode picks the misbehaviour.
type fakeHub struct {
	hub, cdn *httptest.Server
	mode     string
	file     []byte
	sha      string

	mu      sync.Mutex
	hubSeen []recordedRequest
	cdnSeen []recordedRequest
}

func newFakeHub(t *testing.T, mode string, file []byte) *fakeHub {
	sum := sha256.Sum256(file)
	f := &fakeHub{mode: mode, file: file, sha: hex.EncodeToString(sum[:])}
	f.hub = httptest.NewServer(http.HandlerFunc(f.serveHub))
	t.Cleanup(f.hub.Close)
	// The CDN is another host as far as the client can tell: another
	// address, not merely another port.
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	f.cdn = httptest.NewUnstartedServer(http.HandlerFunc(f.serveCDN))
	f.cdn.Listener.Close()
	f.cdn.Listener = ln
	f.cdn.Start()
	t.Cleanup(f.cdn.Close)
	return f
}

func record(r *http.Request) recordedRequest {
	return recordedRequest{Method: r.Method, URL: r.URL.String(), Header: r.Header.Clone()}
}

func (f *fakeHub) serveHub(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.hubSeen = append(f.hubSeen, record(r))
	f.mu.Unlock()
	if !strings.HasSuffix(r.URL.Path, "/resolve/main/best.pt") {
		http.NotFound(w, r)
		return
	}
	// Careless error messages quote the credentials they refused.
	echo := "you sent " + r.Header.Get("Authorization")
	switch f.mode {
	case "401":
		w.Header().Set("X-Error-Message", "Invalid credentials: "+echo)
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"error":"Invalid credentials in Authorization header (%s)"}`, echo)
	case "404":
		w.Header().Set("X-Error-Code", "RepoNotFound")
		w.Header().Set("X-Error-Message", "Repository not found: "+echo)
		w.WriteHeader(http.StatusNotFound)
	case "500":
		w.Header().Set("X-Error-Message", "Internal error while checking "+echo)
		w.WriteHeader(http.StatusInternalServerError)
	default: // "cut", "ok": the Hub's 302 to the CDN, with the file's size and hash
		w.Header().Set("X-Linked-Size", strconv.Itoa(len(f.file)))
		w.Header().Set("X-Linked-Etag", `"`+f.sha+`"`)
		w.Header().Set("Location", f.cdn.URL+"/lfs/"+f.sha+"?X-Amz-Signature=abc123&Expires=9999999999")
		w.WriteHeader(http.StatusFound)
	}
}

func (f *fakeHub) serveCDN(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.cdnSeen = append(f.cdnSeen, record(r))
	f.mu.Unlock()
	if f.mode == "cut" {
		// Promise the whole file, send half, drop the connection.
		w.Header().Set("Content-Length", strconv.Itoa(len(f.file)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(f.file[:len(f.file)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	http.ServeContent(w, r, "best.pt", time.Time{}, strings.NewReader(string(f.file)))
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
			hub := newFakeHub(t, tc.mode, checkpoint)
			ckptDir := t.TempDir()
			spec := testkit.Spec{Exe: testkit.Binary(t), Env: []string{
				"HF_TOKEN=" + hfToken, "HF_ENDPOINT=" + hub.hub.URL, "CKPT_DIR=" + ckptDir,
				"XDG_CACHE_HOME=" + t.TempDir(),
			}}
			var out string
			if tc.problem != "" {
				// Transient failures (500, cut) are retried with back-off
				// (2 s, 4 s) before the start gives up.
				code, output, elapsed, err := testkit.RunToExit(spec, 60*time.Second)
				out = output
				if err != nil {
					t.Fatalf("%v\n%s", err, out)
				}
				lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
				last := lines[len(lines)-1]
				if code == 0 || !strings.HasPrefix(last, "nielsgpt serve: ") || !strings.Contains(last, tc.problem) || !strings.Contains(last, "--model demo") {
					t.Errorf("exit %d after %s; last line %q, want %q and the offline alternative", code, elapsed.Round(time.Millisecond), last, tc.problem)
				}
				if _, err := os.Stat(filepath.Join(ckptDir, "best.pt")); err == nil {
					t.Error("a failed download left best.pt in place")
				}
			} else {
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
				out = s.Output()
				got, err := os.ReadFile(filepath.Join(ckptDir, "best.pt"))
				if err != nil || string(got) != string(checkpoint) {
					t.Errorf("the downloaded checkpoint is not the Hub's file (%v)", err)
				}
			}

			// The token reached the Hub, so the checks below are not vacuous...
			hub.mu.Lock()
			defer hub.mu.Unlock()
			if len(hub.hubSeen) == 0 {
				t.Fatal("the Hub was never asked")
			}
			for _, r := range hub.hubSeen {
				if got := r.Header.Get("Authorization"); got != "Bearer "+hfToken {
					t.Errorf("Hub %s %s: Authorization %q, want the bearer token", r.Method, r.URL, got)
				}
			}
			// ...but never the CDN, in any header or in the URL.
			if (tc.mode == "cut" || tc.mode == "ok") && len(hub.cdnSeen) == 0 {
				t.Error("the CDN was never asked")
			}
			for _, r := range hub.cdnSeen {
				if r.Header.Get("Authorization") != "" {
					t.Errorf("CDN %s %s received Authorization", r.Method, r.URL)
				}
				if strings.Contains(fmt.Sprint(r.Header), hfToken) || strings.Contains(r.URL, hfToken) {
					t.Errorf("CDN %s %s received the token", r.Method, r.URL)
				}
			}
			// And nowhere in what the server printed or wrote, not even cut short.
			for _, leak := range []string{hfToken, "secret-token"} {
				if strings.Contains(out, leak) {
					t.Errorf("the server's output contains %q:\n%s", leak, out)
				}
			}
			_ = filepath.WalkDir(ckptDir, func(path string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					if b, err := os.ReadFile(path); err == nil && strings.Contains(string(b), "secret-token") {
						t.Errorf("%s contains the token", path)
					}
				}
				return nil
			})
			t.Logf("Hub asked %d times, CDN %d times; output ends: %s", len(hub.hubSeen), len(hub.cdnSeen), testkit.Tail(strings.TrimSpace(out), 300))
		})
	}
}
