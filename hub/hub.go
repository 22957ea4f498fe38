// Package hub fetches the niels-gpt checkpoint from the Hugging Face Hub into a local
// directory (CKPT_DIR), the way the original Python server did with hf_hub_download, but
// with the guarantees a long-running server needs: the token only ever goes to the Hub's
// own host, the file is verified against the size and sha256 the Hub publishes, a partial
// download never looks like a finished file, interrupted downloads resume, and a stalled
// or hostile server produces an error instead of a hang.
//
// Download is the whole API; OptionsFromEnv reads the CKPT_* and HF_* environment variables.
package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// The original service's defaults (and huggingface_hub's own defaults for the Hub variables).
const (
	DefaultEndpoint = "https://huggingface.co"
	DefaultRepoID   = "nnandal/niels-gpt"
	DefaultFilename = "best.pt"
	DefaultDir      = "./checkpoints"
	// DefaultMaxSize bounds what a hostile or misconfigured Hub can make us write to disk.
	// Generation-1 checkpoints are tens of MiB even with optimizer state; 4 GiB leaves room
	// for much larger models without letting a lying server fill the disk.
	DefaultMaxSize int64 = 4 << 30
)

// Options says what to fetch and how. The zero value of each optional field picks a sane default.
type Options struct {
	Endpoint string       // Hub base URL; "" = DefaultEndpoint (HF_ENDPOINT style override; tests point it at a fake server)
	RepoID   string       // "owner/name", e.g. "nnandal/niels-gpt"
	Filename string       // a plain file name in the repository's root, e.g. "best.pt"
	Dir      string       // CKPT_DIR: where the file lives; "" = the current directory
	Token    string       // HF_TOKEN; sent as a bearer token to the Endpoint's host only, never to redirect targets elsewhere
	Offline  bool         // HF_HUB_OFFLINE: never touch the network; use the cached file or fail
	Progress io.Writer    // where a progress bar is drawn; nil = none
	Client   *http.Client // nil = a client with connect/header timeouts and no overall timeout
	MaxSize  int64        // refuse larger files; 0 = DefaultMaxSize
}

// Errors callers may test for with errors.Is to pick a message or an exit path. The error
// text itself already names the cause and what to do about it.
var (
	// ErrOffline: HF_HUB_OFFLINE is set and the file is not in Dir.
	ErrOffline = errors.New("offline and the checkpoint is not cached")
	// ErrUnauthorized: the Hub refused access (401/403): a private or gated repository, or a bad token.
	ErrUnauthorized = errors.New("access denied by the Hub")
	// ErrNotFound: the repository or the file does not exist (404).
	ErrNotFound = errors.New("not found on the Hub")
	// ErrIntegrity: the downloaded bytes do not match the size or sha256 the Hub published.
	ErrIntegrity = errors.New("downloaded file failed verification")
	// ErrTooLarge: the file is larger than Options.MaxSize.
	ErrTooLarge = errors.New("file too large")
	// ErrInvalidOptions: RepoID, Filename or Endpoint is unusable (possibly hostile).
	ErrInvalidOptions = errors.New("invalid download options")
)

// tuning holds the timing knobs. They are variables, not constants, only so the tests can
// shrink them; production code never changes them.
var tuning = struct {
	idleTimeout   time.Duration // no bytes (or no response headers) for this long = stalled
	attempts      int           // tries per Download for transient failures (network, 5xx, stalls)
	backoff       time.Duration // wait before the second try; doubles after each failure
	progressEvery time.Duration // minimum interval between progress redraws
}{
	idleTimeout:   60 * time.Second,
	attempts:      3,
	backoff:       2 * time.Second,
	progressEvery: 200 * time.Millisecond,
}

// OptionsFromEnv fills Options from CKPT_REPO_ID, CKPT_FILENAME, CKPT_DIR, HF_TOKEN,
// HF_HUB_OFFLINE and HF_ENDPOINT, using the defaults for unset or empty variables.
// getenv is usually os.Getenv; nil means os.Getenv. Progress, Client and MaxSize are left
// for the caller (they are not environment settings).
func OptionsFromEnv(getenv func(string) string) Options {
	if getenv == nil {
		getenv = os.Getenv
	}
	get := func(key, def string) string {
		if v := strings.TrimSpace(getenv(key)); v != "" {
			return v
		}
		return def
	}
	return Options{
		Endpoint: strings.TrimRight(get("HF_ENDPOINT", DefaultEndpoint), "/"),
		RepoID:   get("CKPT_REPO_ID", DefaultRepoID),
		Filename: get("CKPT_FILENAME", DefaultFilename),
		Dir:      get("CKPT_DIR", DefaultDir),
		// Tokens are opaque; only surrounding whitespace (a stray newline from `cat token`) is dropped.
		Token:   strings.TrimSpace(getenv("HF_TOKEN")),
		Offline: envTrue(getenv("HF_HUB_OFFLINE")),
	}
}

// envTrue reads a boolean the way huggingface_hub does (1/ON/YES/TRUE, any case), so a
// setting that works for the Python tools works here too.
func envTrue(v string) bool {
	switch strings.ToUpper(strings.TrimSpace(v)) {
	case "1", "ON", "YES", "TRUE":
		return true
	}
	return false
}

// Download returns the local path of Dir/Filename, downloading it first when it is not
// already there. A file already present is trusted and returned without any network
// request (as the original server did); everything written by Download was verified
// before it got its final name.
func Download(ctx context.Context, o Options) (string, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	o, fileURL, err := checkOptions(o)
	if err != nil {
		return "", err
	}
	final := filepath.Join(o.Dir, o.Filename)
	part := final + ".part"

	if ok, err := present(final); err != nil || ok {
		return finalOrErr(final, ok, err)
	}
	if o.Offline {
		hint := ""
		if _, err := os.Stat(part); err == nil {
			hint = " (a partial download " + part + " exists; going online resumes it)"
		}
		return "", fmt.Errorf("hub: %s is not in %s and HF_HUB_OFFLINE is set%s: set HF_HUB_OFFLINE=0 to download it from %s, use --model demo for the embedded model, or --model PATH for a local file: %w",
			o.Filename, dirName(o.Dir), hint, o.RepoID, ErrOffline)
	}

	if err := os.MkdirAll(dirName(o.Dir), 0o755); err != nil {
		return "", fmt.Errorf("hub: creating checkpoint directory: %w", err)
	}
	// Two servers starting at once against the same CKPT_DIR must not append to the same
	// .part file; the second one waits and then finds the finished file.
	unlock, err := lockFile(ctx, final+".lock")
	if err != nil {
		return "", fmt.Errorf("hub: waiting for another download of %s: %w", final, err)
	}
	defer unlock()
	if ok, err := present(final); err != nil || ok {
		return finalOrErr(final, ok, err)
	}

	client, closeIdle := o.Client, func() {}
	if client == nil {
		client, closeIdle = defaultClient()
	}
	defer closeIdle()

	f := &fetcher{o: o, url: fileURL, client: client, final: final, part: part}
	wait := tuning.backoff
	for attempt := 1; ; attempt++ {
		err = f.fetch(ctx)
		if err == nil {
			return final, nil
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("hub: download of %s interrupted (the partial file %s is kept for resuming): %w", o.Filename, part, ctx.Err())
		}
		var te *transientError
		if !errors.As(err, &te) || attempt >= tuning.attempts {
			tries := ""
			if attempt > 1 {
				tries = fmt.Sprintf(" (gave up after %d attempts)", attempt)
			}
			return "", fmt.Errorf("hub: downloading %s from %s/%s%s: %w", o.Filename, redactURL(strings.TrimRight(o.Endpoint, "/")), o.RepoID, tries, err)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("hub: download of %s interrupted (the partial file %s is kept for resuming): %w", o.Filename, part, ctx.Err())
		case <-time.After(wait):
		}
		wait *= 2
	}
}

func finalOrErr(final string, ok bool, err error) (string, error) {
	if err != nil {
		return "", err
	}
	return final, nil
}

// present reports whether the finished file exists. A directory (or other non-file) in its
// place is an error: it cannot be served and must not be overwritten silently.
func present(final string) (bool, error) {
	fi, err := os.Stat(final)
	switch {
	case err == nil && fi.Mode().IsRegular():
		return true, nil
	case err == nil:
		return false, fmt.Errorf("hub: %s exists but is not a regular file", final)
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("hub: checking for %s: %w", final, err)
	}
}

func dirName(dir string) string {
	if dir == "" {
		return "."
	}
	return dir
}

// Repository names on the Hub are letters, digits, '-', '_' and '.', at most 96 characters
// per part. Requiring a leading letter or digit (and rejecting "..") keeps every value
// from forming a path or URL segment with special meaning.
var (
	repoPartRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$`)
	fileNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._+-]{0,199}$`)
)

// checkOptions validates o (the values come from the environment and may be hostile: they
// must not write outside Dir or steer the request elsewhere), fills defaults, and builds
// the resolve URL.
func checkOptions(o Options) (Options, *url.URL, error) {
	if o.Endpoint == "" {
		o.Endpoint = DefaultEndpoint
	}
	if o.MaxSize <= 0 {
		o.MaxSize = DefaultMaxSize
	}
	parts := strings.Split(o.RepoID, "/")
	if len(parts) != 2 || !repoPartRE.MatchString(parts[0]) || !repoPartRE.MatchString(parts[1]) || strings.Contains(o.RepoID, "..") {
		return o, nil, fmt.Errorf("hub: repository id %q must look like owner/name (letters, digits, '-', '_', '.'): %w", clip(o.RepoID), ErrInvalidOptions)
	}
	if !fileNameRE.MatchString(o.Filename) || strings.Contains(o.Filename, "..") {
		return o, nil, fmt.Errorf("hub: file name %q must be a plain file name (letters, digits, '-', '_', '.', '+'; no path separators or \"..\"): %w", clip(o.Filename), ErrInvalidOptions)
	}
	base, err := url.Parse(strings.TrimRight(o.Endpoint, "/"))
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" || base.RawQuery != "" || base.Fragment != "" {
		return o, nil, fmt.Errorf("hub: endpoint %q must be an http(s) URL such as %s: %w", clip(redactURL(o.Endpoint)), DefaultEndpoint, ErrInvalidOptions)
	}
	// Both parts were validated above, so plain concatenation cannot inject path segments.
	fileURL := *base
	fileURL.Path = base.Path + "/" + o.RepoID + "/resolve/main/" + o.Filename
	fileURL.RawPath = ""
	return o, &fileURL, nil
}

// clip keeps hostile values from flooding an error message (or a terminal) with junk.
func clip(s string) string {
	const max = 120
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) { // never split a character
		cut--
	}
	return s[:cut] + "..."
}

// redactURL hides credentials someone may have put in HF_ENDPOINT.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return s
}
