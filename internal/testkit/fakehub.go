package testkit

// A fake Hugging Face Hub, and the CDN it redirects large files to, on
// httptest servers: the resolve endpoint (/{owner}/{name}/resolve/main/{file})
// as huggingface.co answers it, with switches for the ways real networks and
// hostile servers misbehave: private repositories, renamed ones, redirects,
// connections cut mid-body, stalls, ignored Range headers, failures, lying
// metadata and error messages that quote the credentials they refused.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// HubConfig is what the fake Hub serves and how it misbehaves. The zero
// value (plus Files) is an honest public Hub serving file bodies itself.
type HubConfig struct {
	Files   map[string][]byte // "owner/name/file" → content
	Renamed map[string]string // old "owner/name" → new "owner/name", answered with a relative 307

	Token    string // when set, Hub requests must carry "Bearer "+Token; others get 401
	EchoAuth bool   // careless: every error answer quotes the Authorization header it received
	Redirect bool   // serve bodies from the CDN behind a 302 with X-Linked-Size/-Etag, as the Hub does for LFS files
	NoHead   bool   // answer HEAD with 405

	IgnoreRange bool   // answer Range requests with the whole file (200)
	CutAt       int64  // with Cuts > 0: drop the connection once this absolute offset is reached
	Cuts        int    // how many GETs of a body are still to be cut
	StallAt     int64  // with Stall: stop sending at this offset and hang until the client leaves
	Stall       bool   //
	Failures    int    // answer this many Hub requests with FailStatus first
	FailStatus  int    // the status of those failures; 503 when 0
	LieSize     string // X-Linked-Size to announce instead of the real one
	LieSHA      string // sha256 to announce instead of the real one
}

// HubRequest is a request the Hub or the CDN received.
type HubRequest struct {
	Method, URL string // URL is the path and query as sent
	Auth, Range string // the Authorization and Range headers
	Header      http.Header
}

// FakeHub is a running fake Hub and its CDN.
type FakeHub struct {
	URL    string // the Hub's endpoint, for HF_ENDPOINT
	CDNURL string

	mu               sync.Mutex
	cfg              HubConfig
	hubReqs, cdnReqs []HubRequest
}

// NewFakeHub starts a Hub and its CDN, closed when the test ends. Both
// listen on 127.0.0.1, on two ports: Go's HTTP client would forward an
// Authorization header on a redirect between them (same host name), so only
// the Hub client's own policy keeps the token from the CDN, which is what
// the tests check.
func NewFakeHub(t testing.TB) *FakeHub {
	t.Helper()
	f := &FakeHub{cfg: HubConfig{Files: map[string][]byte{}, Renamed: map[string]string{}}}
	hub := httptest.NewServer(f.Handler())
	t.Cleanup(hub.Close)
	cdn := httptest.NewServer(http.HandlerFunc(f.serveCDN))
	t.Cleanup(cdn.Close)
	f.URL, f.CDNURL = hub.URL, cdn.URL
	return f
}

// Add puts a file into a repository.
func (f *FakeHub) Add(repo, name string, content []byte) {
	f.Set(func(c *HubConfig) { c.Files[repo+"/"+name] = content })
}

// Set changes the configuration, while no request is being answered.
func (f *FakeHub) Set(change func(c *HubConfig)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(&f.cfg)
}

// Requests returns what the Hub and the CDN have received so far, in order.
func (f *FakeHub) Requests() (hub, cdn []HubRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]HubRequest(nil), f.hubReqs...), append([]HubRequest(nil), f.cdnReqs...)
}

// Handler is the Hub's handler, for serving it under a path prefix as a
// mirror would.
func (f *FakeHub) Handler() http.Handler { return http.HandlerFunc(f.serveHub) }

func record(r *http.Request) HubRequest {
	return HubRequest{Method: r.Method, URL: r.URL.String(), Auth: r.Header.Get("Authorization"),
		Range: r.Header.Get("Range"), Header: r.Header.Clone()}
}

// SHA256Hex is the lowercase hex SHA-256 of b, as the Hub announces files.
func SHA256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// hubError answers an error the way the Hub does: X-Error-Code and
// X-Error-Message headers and a JSON body. A careless Hub (EchoAuth) quotes
// the credentials it received in both.
func hubError(w http.ResponseWriter, r *http.Request, cfg *HubConfig, status int, code, msg string) {
	if cfg.EchoAuth {
		msg += " (you sent " + r.Header.Get("Authorization") + ")"
	}
	if code != "" {
		w.Header().Set("X-Error-Code", code)
	}
	w.Header().Set("X-Error-Message", msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// serveHub answers /{owner}/{name}/resolve/main/{file} like huggingface.co.
func (f *FakeHub) serveHub(w http.ResponseWriter, r *http.Request) {
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 5)
	resolvable := len(parts) == 5 && parts[2] == "resolve" && parts[3] == "main"
	f.mu.Lock()
	f.hubReqs = append(f.hubReqs, record(r))
	cfg := f.cfg
	failing := f.cfg.Failures > 0
	if failing {
		f.cfg.Failures--
	}
	var file hubFile
	if resolvable {
		file = f.lookup(parts[0]+"/"+parts[1], parts[4])
	}
	f.mu.Unlock()

	switch {
	case failing:
		status := cfg.FailStatus
		if status == 0 {
			status = http.StatusServiceUnavailable
		}
		hubError(w, r, &cfg, status, "", "try again later")
	case !resolvable:
		http.NotFound(w, r)
	case cfg.Token != "" && r.Header.Get("Authorization") != "Bearer "+cfg.Token:
		// Like the real Hub: a private repository looks like a missing one.
		hubError(w, r, &cfg, http.StatusUnauthorized, "RepoNotFound", "Invalid credentials in Authorization header")
	default:
		f.resolve(w, r, &cfg, file)
	}
}

// hubFile is what the Hub knows of one path, looked up under the lock.
type hubFile struct {
	repo, name string
	content    []byte
	found      bool
	repoFound  bool   // some file of the repository exists
	renamedTo  string // the repository's new name, if it was renamed
}

func (f *FakeHub) lookup(repo, name string) hubFile {
	file := hubFile{repo: repo, name: name, renamedTo: f.cfg.Renamed[repo]}
	file.content, file.found = f.cfg.Files[repo+"/"+name]
	for key := range f.cfg.Files {
		file.repoFound = file.repoFound || strings.HasPrefix(key, repo+"/")
	}
	return file
}

// resolve answers for one file of a repository the caller may read.
func (f *FakeHub) resolve(w http.ResponseWriter, r *http.Request, cfg *HubConfig, file hubFile) {
	switch {
	case file.renamedTo != "":
		w.Header().Set("Location", "/"+file.renamedTo+"/resolve/main/"+file.name)
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	case !file.found && file.repoFound:
		hubError(w, r, cfg, http.StatusNotFound, "EntryNotFound", "Entry not found")
		return
	case !file.found:
		hubError(w, r, cfg, http.StatusNotFound, "RepoNotFound", "Repository not found")
		return
	case r.Method == http.MethodHead && cfg.NoHead:
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	size, sha := strconv.Itoa(len(file.content)), SHA256Hex(file.content)
	if cfg.LieSize != "" {
		size = cfg.LieSize
	}
	if cfg.LieSHA != "" {
		sha = cfg.LieSHA
	}
	if cfg.Redirect {
		w.Header().Set("X-Linked-Size", size)
		w.Header().Set("X-Linked-Etag", `"`+sha+`"`)
		w.Header().Set("ETag", `W/"not-the-file-hash"`)
		// A signed URL, as the Hub hands out: the query is the CDN's
		// credential, and never the user's token.
		w.Header().Set("Location", f.CDNURL+"/lfs/"+file.repo+"/"+file.name+"?X-Amz-Signature=abc123&Expires=9999999999")
		w.WriteHeader(http.StatusFound)
		return
	}
	w.Header().Set("ETag", `"`+sha+`"`)
	f.serveBody(w, r, file.content)
}

func (f *FakeHub) serveCDN(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.cdnReqs = append(f.cdnReqs, record(r))
	content, ok := f.cfg.Files[strings.TrimPrefix(r.URL.Path, "/lfs/")]
	f.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("ETag", `"cdn-etag"`)
	f.serveBody(w, r, content)
}

// serveBody sends content, or the tail a "bytes=N-" Range asks for,
// applying the misbehaviour switches.
func (f *FakeHub) serveBody(w http.ResponseWriter, r *http.Request, content []byte) {
	f.mu.Lock()
	cfg := f.cfg
	cut := f.cfg.Cuts > 0 && r.Method == http.MethodGet
	if cut {
		f.cfg.Cuts--
	}
	f.mu.Unlock()

	start, end := int64(0), int64(len(content))
	status := http.StatusOK
	if rng := r.Header.Get("Range"); rng != "" && !cfg.IgnoreRange {
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(rng, "bytes="), "-"), 10, 64)
		if err != nil {
			http.Error(w, "bad range", http.StatusBadRequest)
			return
		}
		if n >= end {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", end))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start, status = n, http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", n, end-1, end))
	}
	w.Header().Set("Content-Length", strconv.FormatInt(end-start, 10))
	w.Header().Set("Accept-Ranges", "bytes")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	switch {
	case cut && cfg.CutAt > start && cfg.CutAt < end:
		_, _ = w.Write(content[start:cfg.CutAt])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drops the connection mid-body
	case cfg.Stall && cfg.StallAt > start && cfg.StallAt < end:
		_, _ = w.Write(content[start:cfg.StallAt])
		w.(http.Flusher).Flush()
		<-r.Context().Done() // hang until the client gives up
	default:
		_, _ = w.Write(content[start:])
	}
}
