package hub

// This file holds one download attempt: read the Hub's metadata (size, sha256), then GET
// the bytes into the .part file (resuming it when possible), verify, and rename.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// transientError marks a failure worth another try (network trouble, 5xx, 429, a stall):
// the .part file is kept, so the next try resumes.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

func transient(err error) error { return &transientError{err} }

// errStalled is the cancellation cause when the idle deadline fires.
var errStalled = errors.New("stalled")

// meta is what the Hub publishes about the file before the redirect to the CDN.
type meta struct {
	size   int64  // -1 when unknown
	sha256 string // lowercase hex; "" when the Hub gave none (non-LFS files carry a git sha1)
}

type fetcher struct {
	o      Options
	url    *url.URL
	client *http.Client
	final  string
	part   string
}

// defaultClient bounds every phase that can hang except the body itself (a checkpoint may
// legitimately take many minutes); the body is bounded by the idle deadline in copyBody.
func defaultClient() (*http.Client, func()) {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   2,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{Transport: tr}, tr.CloseIdleConnections
}

// fetch is one attempt. On a transient failure the .part file stays for the next attempt;
// on a verification failure it is removed.
func (f *fetcher) fetch(ctx context.Context) error {
	m, err := f.metadata(ctx)
	if err != nil {
		return err
	}
	if m.size > f.o.MaxSize {
		return fmt.Errorf("the Hub reports %s, more than the %s limit: %w", humanBytes(m.size), humanBytes(f.o.MaxSize), ErrTooLarge)
	}

	file, err := os.OpenFile(f.part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("opening %s: %w", f.part, err)
	}
	defer file.Close() // second close after the explicit one below is harmless

	have, err := file.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("reading %s: %w", f.part, err)
	}
	h := sha256.New()
	if m.size >= 0 && have > m.size {
		// Left over from a different (larger) version of the file: useless.
		have, err = restart(file, h)
		if err != nil {
			return err
		}
	}
	if have > 0 {
		// The final check covers the whole file, so the bytes already on disk are hashed first.
		if err := hashPrefix(ctx, file, have, h); err != nil {
			return err
		}
	}

	resumed := have > 0
	for {
		if m.size < 0 || have != m.size {
			have, err = f.get(ctx, file, h, have, &m)
			if err != nil {
				if errors.Is(err, ErrIntegrity) || errors.Is(err, ErrTooLarge) {
					file.Close()
					os.Remove(f.part)
				}
				return err
			}
		}
		verr := verify(h, have, m)
		if verr == nil {
			break
		}
		if resumed {
			// The old part may come from an earlier version of the file or a corrupted run;
			// one clean download from zero settles whether the Hub's own bytes are bad.
			resumed = false
			if have, err = restart(file, h); err != nil {
				return err
			}
			continue
		}
		file.Close()
		os.Remove(f.part)
		return verr
	}

	if err := file.Sync(); err != nil {
		return fmt.Errorf("flushing %s to disk: %w", f.part, err)
	}
	if err := file.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", f.part, err)
	}
	if err := os.Rename(f.part, f.final); err != nil {
		return fmt.Errorf("moving the verified download into place: %w", err)
	}
	syncDir(filepath.Dir(f.final))
	return nil
}

// restart empties the part file and the running hash.
func restart(file *os.File, h hash.Hash) (int64, error) {
	if err := file.Truncate(0); err != nil {
		return 0, fmt.Errorf("truncating partial download: %w", err)
	}
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("rewinding partial download: %w", err)
	}
	h.Reset()
	return 0, nil
}

// hashPrefix feeds the first n bytes of file into h and leaves the offset at n. It checks
// ctx between chunks: a multi-GiB part takes seconds to hash.
func hashPrefix(ctx context.Context, file *os.File, n int64, h hash.Hash) error {
	buf := make([]byte, 1<<20)
	for off := int64(0); off < n; {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk := buf[:min(int64(len(buf)), n-off)]
		k, err := file.ReadAt(chunk, off)
		h.Write(chunk[:k])
		off += int64(k)
		if err != nil && !(errors.Is(err, io.EOF) && off == n) {
			return fmt.Errorf("reading partial download: %w", err)
		}
	}
	_, err := file.Seek(n, io.SeekStart)
	return err
}

func verify(h hash.Hash, have int64, m meta) error {
	if m.size >= 0 && have != m.size {
		return fmt.Errorf("size mismatch: got %d bytes, the Hub says %d: %w", have, m.size, ErrIntegrity)
	}
	if m.sha256 != "" {
		if got := hex.EncodeToString(h.Sum(nil)); got != m.sha256 {
			return fmt.Errorf("sha256 mismatch: got %s, the Hub says %s: %w", got, m.sha256, ErrIntegrity)
		}
	}
	return nil
}

// syncDir makes the rename itself durable. Not every platform can fsync a directory, and
// the file is already complete either way, so failures are ignored.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// newRequest builds a request to the Hub with the headers every request carries. The idle
// deadline is armed by the caller through ctx.
func (f *fetcher) newRequest(ctx context.Context, method string, u *url.URL) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "nielsgpt-hub/1")
	// Sizes, offsets and hashes are of the file itself; transparent gzip would break all three.
	req.Header.Set("Accept-Encoding", "identity")
	if f.o.Token != "" && sameHost(u, f.url) {
		req.Header.Set("Authorization", "Bearer "+f.o.Token)
	}
	return req, nil
}

// idleContext returns a context that is cancelled with errStalled unless poke is called at
// least every tuning.idleTimeout. It bounds both the wait for response headers and every
// gap in the body, whatever client the caller supplied.
func idleContext(ctx context.Context) (context.Context, func(), func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	t := time.AfterFunc(tuning.idleTimeout, func() { cancel(errStalled) })
	poke := func() { t.Reset(tuning.idleTimeout) }
	stop := func() { t.Stop(); cancel(nil) }
	return ctx, poke, stop
}

// metadata asks the Hub for the file's size and sha256 with a HEAD that does not follow
// redirects off the Hub's host: the Hub's own 302 carries X-Linked-Size and X-Linked-Etag,
// which the CDN's response would not. Same-host redirects (a renamed repository) are
// followed, since they lead to the answer.
func (f *fetcher) metadata(ctx context.Context) (meta, error) {
	ctx, _, stop := idleContext(ctx)
	defer stop()
	noFollow := *f.client
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	u := f.url
	for hops := 0; ; hops++ {
		req, err := f.newRequest(ctx, http.MethodHead, u)
		if err != nil {
			return meta{}, err
		}
		resp, err := noFollow.Do(req)
		if err != nil {
			return meta{}, f.networkError(ctx, "asking the Hub for the file's size and hash", err)
		}
		resp.Body.Close()

		if isRedirect(resp.StatusCode) {
			loc, err := resp.Location()
			if err != nil {
				return meta{}, fmt.Errorf("the Hub answered %d without a usable Location", resp.StatusCode)
			}
			if sameHost(loc, f.url) && resp.Header.Get("X-Linked-Size") == "" {
				if hops >= 5 {
					return meta{}, errors.New("too many redirects on the Hub")
				}
				u = loc
				continue
			}
			return parseMeta(resp, false)
		}
		switch {
		case resp.StatusCode == http.StatusOK:
			return parseMeta(resp, true)
		case resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented:
			// A mirror without HEAD: the GET's own headers still give the size.
			return meta{size: -1}, nil
		default:
			return meta{}, f.statusError(resp)
		}
	}
}

func isRedirect(code int) bool {
	switch code {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// parseMeta reads size and sha256 from the Hub's response. Content-Length is only the
// file's size on a 200 (on a redirect it is the size of the redirect's own body).
func parseMeta(resp *http.Response, direct bool) (meta, error) {
	m := meta{size: -1}
	if s := resp.Header.Get("X-Linked-Size"); s != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil || n < 0 {
			return m, fmt.Errorf("the Hub sent an unreadable X-Linked-Size %q", clip(s))
		}
		m.size = n
	} else if direct && resp.ContentLength >= 0 {
		m.size = resp.ContentLength
	}
	etag := resp.Header.Get("X-Linked-Etag")
	if etag == "" {
		etag = resp.Header.Get("ETag")
	}
	m.sha256 = sha256FromETag(etag)
	return m, nil
}

// sha256FromETag returns the hash when the ETag is one. For LFS files the Hub's ETag is the
// file's sha256; for small files kept in git it is the 40-hex git blob id, which says
// nothing checkable here, and other servers use other formats.
func sha256FromETag(etag string) string {
	etag = strings.TrimPrefix(strings.TrimSpace(etag), "W/")
	etag = strings.ToLower(strings.Trim(etag, `"`))
	if len(etag) != 64 {
		return ""
	}
	if _, err := hex.DecodeString(etag); err != nil {
		return ""
	}
	return etag
}

// sameHost compares scheme-normalised host:port, so "https://h" and "https://h:443" match
// while a CDN on another host, or the same host on another port, does not.
func sameHost(a, b *url.URL) bool {
	return strings.EqualFold(hostPort(a), hostPort(b))
}

func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// followingClient is the caller's client with our redirect policy in front of theirs.
// Go's own policy forwards Authorization to the same host on any port and to subdomains
// (huggingface.co → cdn-lfs.huggingface.co); the token must reach the Hub's host only.
func (f *fetcher) followingClient() *http.Client {
	c := *f.client
	inner := f.client.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
			return fmt.Errorf("refusing a redirect from https to insecure %s", req.URL.Redacted())
		}
		if !sameHost(req.URL, f.url) {
			req.Header.Del("Authorization")
		}
		if inner != nil {
			return inner(req, via)
		}
		return nil
	}
	return &c
}

// get requests the bytes from offset have onward and appends them to file, feeding h. It
// returns the new length of the part file. m.size is filled in from the response when the
// metadata lacked it.
func (f *fetcher) get(ctx context.Context, file *os.File, h hash.Hash, have int64, m *meta) (int64, error) {
	client := f.followingClient()
	for try := 0; ; try++ {
		if try >= 2 {
			return have, transient(errors.New("the server keeps answering range requests inconsistently"))
		}
		rctx, poke, stop := idleContext(ctx)
		req, err := f.newRequest(rctx, http.MethodGet, f.url)
		if err != nil {
			stop()
			return have, err
		}
		if have > 0 {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
		}
		resp, err := client.Do(req)
		if err != nil {
			err = f.networkError(rctx, "requesting the file", err) // before stop(), which would mask the cause
			stop()
			return have, err
		}

		var total int64 = -1 // the whole file's size according to this response
		switch resp.StatusCode {
		case http.StatusOK:
			if have > 0 {
				// The server ignored Range: the body is the whole file again.
				if have, err = restart(file, h); err != nil {
					drainClose(resp)
					stop()
					return have, err
				}
			}
			total = resp.ContentLength
		case http.StatusPartialContent:
			start, end, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
			if !ok || start != have || (size >= 0 && end != size-1) ||
				(resp.ContentLength >= 0 && resp.ContentLength != end-start+1) {
				// Not the range asked for: start over rather than splice mismatched bytes.
				drainClose(resp)
				stop()
				if have, err = restart(file, h); err != nil {
					return have, err
				}
				continue
			}
			total = size
		case http.StatusRequestedRangeNotSatisfiable:
			drainClose(resp)
			stop()
			_, _, size, _ := parseContentRange(resp.Header.Get("Content-Range"))
			if m.size < 0 {
				m.size = size // may stay unknown
			}
			if size == have && m.size == have {
				// The part already holds the whole file (an earlier run died before the
				// rename); the caller still verifies it.
				return have, nil
			}
			if have, err = restart(file, h); err != nil {
				return have, err
			}
			continue
		default:
			err := f.statusError(resp)
			drainClose(resp)
			stop()
			return have, err
		}

		if total >= 0 {
			switch {
			case m.size < 0:
				m.size = total
			case total != m.size:
				drainClose(resp)
				stop()
				return have, fmt.Errorf("size mismatch: the download is %d bytes, the Hub says %d: %w", total, m.size, ErrIntegrity)
			}
			if total > f.o.MaxSize {
				drainClose(resp)
				stop()
				return have, fmt.Errorf("the download is %s, more than the %s limit: %w", humanBytes(total), humanBytes(f.o.MaxSize), ErrTooLarge)
			}
		}
		have, err = f.copyBody(rctx, poke, resp.Body, file, h, have, m.size)
		resp.Body.Close()
		stop()
		return have, err
	}
}

// copyBody appends body to file and h until EOF, poking the idle deadline on every read.
// It never writes past the expected size (or MaxSize when the size is unknown).
func (f *fetcher) copyBody(ctx context.Context, poke func(), body io.Reader, file *os.File, h hash.Hash, have, size int64) (int64, error) {
	limit := f.o.MaxSize
	if size >= 0 {
		limit = size
	}
	bar := newProgressBar(f.o.Progress, f.o.Filename, size, have)
	defer bar.finish()

	buf := make([]byte, 256<<10)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			poke()
			if have+int64(n) > limit {
				if size >= 0 {
					return have, fmt.Errorf("size mismatch: the server sent more than the %d bytes the Hub announced: %w", size, ErrIntegrity)
				}
				return have, fmt.Errorf("the download exceeds the %s limit: %w", humanBytes(f.o.MaxSize), ErrTooLarge)
			}
			if _, err := file.Write(buf[:n]); err != nil {
				// Whatever reached the disk is a valid prefix; a later run resumes after it.
				return have, fmt.Errorf("writing %s: %w", f.part, err)
			}
			h.Write(buf[:n])
			have += int64(n)
			bar.update(have)
		}
		if rerr == io.EOF {
			if size >= 0 && have < size {
				// A body without Content-Length ends like this when the connection drops.
				return have, transient(fmt.Errorf("the connection closed after %s of %s (the partial file is kept for resuming)", humanBytes(have), humanBytes(size)))
			}
			return have, nil
		}
		if rerr != nil {
			return have, f.networkError(ctx, fmt.Sprintf("transfer stopped after %s (the partial file is kept for resuming)", humanBytes(have)), rerr)
		}
	}
}

// networkError turns a transport failure into a transient error that says what happened,
// preferring the idle deadline and the caller's cancellation over the transport's wording.
func (f *fetcher) networkError(ctx context.Context, doing string, err error) error {
	if errors.Is(context.Cause(ctx), errStalled) {
		return transient(fmt.Errorf("%s: the server sent nothing for %s (stalled)", doing, tuning.idleTimeout))
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return transient(fmt.Errorf("%s: network error: %w", doing, f.scrub(err)))
}

// scrub keeps the token out of an error even if a hostile server or an odd transport
// echoes it back.
func (f *fetcher) scrub(err error) error {
	if f.o.Token == "" || !strings.Contains(err.Error(), f.o.Token) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), f.o.Token, "[HF_TOKEN]"))
}

// statusError explains an unexpected HTTP status, using the Hub's X-Error-Code and
// X-Error-Message headers when present.
func (f *fetcher) statusError(resp *http.Response) error {
	code := resp.Header.Get("X-Error-Code")
	detail := ""
	if msg := resp.Header.Get("X-Error-Message"); msg != "" {
		if f.o.Token != "" {
			msg = strings.ReplaceAll(msg, f.o.Token, "[HF_TOKEN]")
		}
		detail = " (the Hub says: " + clip(msg) + ")"
	}
	switch s := resp.StatusCode; {
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		var why string
		switch {
		case code == "GatedRepo":
			why = "the repository is gated: accept its terms on the Hub, then set HF_TOKEN to a token of that account"
		case f.o.Token == "":
			why = "the repository is private or does not exist: set HF_TOKEN to a token with read access, or check CKPT_REPO_ID"
		default:
			why = "HF_TOKEN was rejected or lacks read access to this repository (or it does not exist: check CKPT_REPO_ID)"
		}
		return fmt.Errorf("%d %s: %s%s: %w", s, http.StatusText(s), why, detail, ErrUnauthorized)
	case s == http.StatusNotFound:
		what := "the repository or the file"
		switch code {
		case "RepoNotFound":
			what = "the repository (check CKPT_REPO_ID)"
		case "EntryNotFound":
			what = "the file (check CKPT_FILENAME)"
		case "RevisionNotFound":
			what = "the main branch"
		}
		return fmt.Errorf("404 Not Found: %s does not exist%s: %w", what, detail, ErrNotFound)
	case s == http.StatusTooManyRequests || s >= 500:
		return transient(fmt.Errorf("%d %s from the Hub%s", s, http.StatusText(s), detail))
	default:
		return fmt.Errorf("unexpected %d %s from the Hub%s", s, http.StatusText(s), detail)
	}
}

// drainClose reads a little of an unwanted body so the connection can be reused, but never
// much: a hostile server could send an endless body.
func drainClose(resp *http.Response) {
	io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}

// parseContentRange reads "bytes START-END/SIZE" (SIZE may be "*") or "bytes */SIZE".
// Missing numbers come back as -1.
func parseContentRange(v string) (start, end, size int64, ok bool) {
	start, end, size = -1, -1, -1
	rest, found := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !found {
		return start, end, size, false
	}
	rng, sz, found := strings.Cut(rest, "/")
	if !found {
		return start, end, size, false
	}
	if sz != "*" {
		n, err := strconv.ParseInt(sz, 10, 64)
		if err != nil || n < 0 {
			return start, end, size, false
		}
		size = n
	}
	if rng == "*" {
		return start, end, size, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return start, end, size, false
	}
	s, err1 := strconv.ParseInt(a, 10, 64)
	e, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || s < 0 || e < s || (size >= 0 && e >= size) {
		return start, end, size, false
	}
	return s, e, size, true
}
