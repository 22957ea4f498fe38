package server

// The inspector page at GET /: a hand-written HTML, CSS and JavaScript page
// (server/web) compiled into the binary, so that a newcomer who runs
// `nielsgpt serve --model demo` is one click from watching the model think,
// on a machine with no network.
//
// The page's own files are served under /ui/<version>/, where version is a
// digest of their contents: a browser may keep them for a year, and a new
// binary with different files is a new URL. The page itself is revalidated
// on every load (its ETag is the same digest). Every answer carries a
// Content-Security-Policy that allows this origin only, so nothing the page
// does (or anything injected into it) can send a byte elsewhere.

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"

	"github.com/gin-gonic/gin"
)

//go:embed web
var webFiles embed.FS

// pagePolicy lets the page load its own script and style and talk to its
// own origin, and nothing else: no other origin, no inline script, no
// plugins, no framing by other sites. blob: images and downloads are the
// page's own (the .npz download is made from a fetched blob).
const pagePolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; " +
	"connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// page is the inspector, read from webFiles once.
type page struct {
	version string            // digest of every file: the asset path's version
	index   []byte            // index.html with its asset URLs versioned
	assets  map[string][]byte // file name → contents, index.html excluded
}

// assetPrefix is where the page's files are served; the page refers to them
// as "ui/NAME", which loadPage rewrites to "/ui/<version>/NAME".
const assetPrefix = "/ui/"

func loadPage() (*page, error) {
	p := &page{assets: map[string][]byte{}}
	h := sha256.New()
	entries, err := fs.ReadDir(webFiles, "web")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		b, err := fs.ReadFile(webFiles, "web/"+e.Name())
		if err != nil {
			return nil, err
		}
		h.Write([]byte(e.Name()))
		h.Write([]byte{0})
		h.Write(b)
		if e.Name() == "index.html" {
			p.index = b
		} else {
			p.assets[e.Name()] = b
		}
	}
	p.version = hex.EncodeToString(h.Sum(nil))[:16]
	p.index = bytes.ReplaceAll(p.index, []byte(`"ui/`), []byte(`"`+assetPrefix+p.version+"/"))
	return p, nil
}

// registerPage serves the page at / and its files under /ui/.
func (s *Server) registerPage(r *gin.Engine) {
	p, err := loadPage()
	if err != nil {
		panic("server: the embedded page cannot be read: " + err.Error()) // a broken build
	}
	asset := func(c *gin.Context) {
		if !p.serveAsset(c) {
			// An old version's URL (a page cached across an upgrade) is a
			// 404, not today's file under a name that promises yesterday's.
			writeError(c, s, http.StatusNotFound, "not_found", "Not found")
		}
	}
	for _, register := range []func(string, ...gin.HandlerFunc) gin.IRoutes{r.GET, r.HEAD} {
		register("/", p.serveIndex)
		register(assetPrefix+":version/:name", asset)
	}
	r.GET(assetPrefix+"model", s.pageModel)
}

func setPageHeaders(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("Content-Security-Policy", pagePolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

func (p *page) serveIndex(c *gin.Context) {
	setPageHeaders(c)
	etag := `"` + p.version + `"`
	c.Header("ETag", etag)
	// Revalidate each time: the page names its assets' version, so a stale
	// page would keep loading old assets after an upgrade.
	c.Header("Cache-Control", "no-cache")
	if etagMatches(c.GetHeader("If-None-Match"), etag) {
		c.Status(http.StatusNotModified)
		return
	}
	c.Data(http.StatusOK, "text/html; charset=utf-8", p.index)
}

// serveAsset answers one of the page's files, or false when there is no
// such file in this version.
func (p *page) serveAsset(c *gin.Context) bool {
	setPageHeaders(c)
	b, ok := p.assets[c.Param("name")]
	if !ok || c.Param("version") != p.version {
		return false
	}
	c.Header("Cache-Control", "public, max-age=31536000, immutable")
	ct := mime.TypeByExtension(path.Ext(c.Param("name")))
	if ct == "" {
		ct = "application/octet-stream"
	}
	c.Data(http.StatusOK, ct, b)
	return true
}

// etagMatches reads If-None-Match: a list of entity tags, or "*".
func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

// pageModel tells the page the loaded model's shape before its first
// request: how many layers and heads to offer for tracing and ablation, and
// the context length the matrix view may show.
func (s *Server) pageModel(c *gin.Context) {
	c.Header("Cache-Control", "no-store")
	eng := s.currentEngine()
	if eng == nil {
		c.Header("Retry-After", "5")
		writeError(c, s, http.StatusServiceUnavailable, "model_loading", "Model not ready yet, please retry")
		return
	}
	m := eng.Config()
	c.JSON(http.StatusOK, gin.H{
		"vocab": m.Vocab, "context": m.Context, "layers": m.Layers, "heads": m.Heads,
		"generation": m.Generation(),
	})
}
