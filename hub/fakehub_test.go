// A fake Hugging Face Hub (and a fake CDN beside it) on httptest servers, with switches for
// the ways real networks and hostile servers misbehave: private repositories, redirects,
// connections cut mid-body, stalls, ignored Range headers and lying metadata.
package hub

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
)

type recordedRequest struct {
	method, path, auth, rng string
}

type fakeHub struct {
	hub, cdn *httptest.Server

	mu      sync.Mutex
	files   map[string][]byte // "owner/name/file" → content
	renamed map[string]string // old "owner/name" → new "owner/name" (answered with a relative 307)

	token    string // when set, requests to the Hub must carry it
	echoAuth bool   // hostile: put the received Authorization header into X-Error-Message
	redirect bool   // serve file bodies from the CDN behind a 302, as the Hub does for LFS files
	noHead   bool   // the Hub answers HEAD with 405

	ignoreRange bool   // answer Range requests with the whole file (200)
	cutAt       int64  // with cuts > 0: abort the connection once this absolute offset is reached
	cuts        int    // how many GETs are still to be cut
	stallAt     int64  // with stall: stop sending at this offset and hang until the client leaves
	stall       bool   //
	failures    int    // answer this many requests with 503 first
	lieSize     string // X-Linked-Size to announce instead of the real one
	lieSHA      string // sha256 to announce instead of the real one

	hubReqs, cdnReqs []recordedRequest
}

func newFakeHub(t *testing.T) *fakeHub {
	t.Helper()
	f := &fakeHub{files: map[string][]byte{}, renamed: map[string]string{}}
	f.hub = httptest.NewServer(http.HandlerFunc(f.serveHub))
	f.cdn = httptest.NewServer(http.HandlerFunc(f.serveCDN))
	t.Cleanup(func() {
		f.hub.Close()
		f.cdn.Close()
	})
	return f
}

func (f *fakeHub) add(repo, name string, content []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files[repo+"/"+name] = content
}

func (f *fakeHub) set(change func(f *fakeHub)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

func (f *fakeHub) requests() (hub, cdn []recordedRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recordedRequest(nil), f.hubReqs...), append([]recordedRequest(nil), f.cdnReqs...)
}

func record(r *http.Request) recordedRequest {
	return recordedRequest{r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Range")}
}

func shaHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// serveHub answers /{owner}/{name}/resolve/main/{file} like huggingface.co does.
func (f *fakeHub) serveHub(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.hubReqs = append(f.hubReqs, record(r))
	if f.failures > 0 {
		f.failures--
		f.mu.Unlock()
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	}
	f.mu.Unlock()

	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 5)
	if len(parts) != 5 || parts[2] != "resolve" || parts[3] != "main" {
		http.NotFound(w, r)
		return
	}
	repo, name := parts[0]+"/"+parts[1], parts[4]

	f.mu.Lock()
	token, echo, redirect, noHead := f.token, f.echoAuth, f.redirect, f.noHead
	content, ok := f.files[repo+"/"+name]
	newRepo, moved := f.renamed[repo]
	lieSize, lieSHA := f.lieSize, f.lieSHA
	f.mu.Unlock()

	if token != "" && r.Header.Get("Authorization") != "Bearer "+token {
		// Like the real Hub: unauthenticated requests to private repos look like missing repos.
		msg := "Invalid credentials in Authorization header"
		if echo {
			msg = "you sent " + r.Header.Get("Authorization")
		}
		w.Header().Set("X-Error-Code", "RepoNotFound")
		w.Header().Set("X-Error-Message", msg)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if moved {
		w.Header().Set("Location", "/"+newRepo+"/resolve/main/"+name)
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	}
	if !ok {
		w.Header().Set("X-Error-Code", "EntryNotFound")
		w.Header().Set("X-Error-Message", "Entry not found")
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if r.Method == http.MethodHead && noHead {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	size, sha := strconv.Itoa(len(content)), shaHex(content)
	if lieSize != "" {
		size = lieSize
	}
	if lieSHA != "" {
		sha = lieSHA
	}
	if redirect {
		w.Header().Set("X-Linked-Size", size)
		w.Header().Set("X-Linked-Etag", `"`+sha+`"`)
		w.Header().Set("ETag", `W/"not-the-file-hash"`)
		w.Header().Set("Location", f.cdn.URL+"/lfs/"+repo+"/"+name)
		w.WriteHeader(http.StatusFound)
		return
	}
	w.Header().Set("ETag", `"`+sha+`"`)
	f.serveBody(w, r, content)
}

func (f *fakeHub) serveCDN(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.cdnReqs = append(f.cdnReqs, record(r))
	content, ok := f.files[strings.TrimPrefix(r.URL.Path, "/lfs/")]
	f.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("ETag", `"cdn-etag"`)
	f.serveBody(w, r, content)
}

// serveBody sends content (or the requested tail of it), applying the misbehaviour switches.
func (f *fakeHub) serveBody(w http.ResponseWriter, r *http.Request, content []byte) {
	f.mu.Lock()
	ignoreRange, cutAt, stallAt, stall := f.ignoreRange, f.cutAt, f.stallAt, f.stall
	cut := f.cuts > 0 && r.Method == http.MethodGet
	if cut {
		f.cuts--
	}
	f.mu.Unlock()

	start := int64(0)
	status := http.StatusOK
	if rng := r.Header.Get("Range"); rng != "" && !ignoreRange {
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(rng, "bytes="), "-"), 10, 64)
		if err != nil {
			http.Error(w, "bad range", http.StatusBadRequest)
			return
		}
		if n >= int64(len(content)) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(content)))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start, status = n, http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", n, len(content)-1, len(content)))
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(content)-int(start)))
	w.Header().Set("Accept-Ranges", "bytes")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	end := int64(len(content))
	if cut && cutAt > start && cutAt < end {
		w.Write(content[start:cutAt])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drops the connection mid-body
	}
	if stall && stallAt > start && stallAt < end {
		w.Write(content[start:stallAt])
		w.(http.Flusher).Flush()
		<-r.Context().Done() // hang until the client gives up
		return
	}
	w.Write(content[start:])
}
