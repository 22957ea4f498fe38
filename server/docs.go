package server

// Interactive API documentation: the hand-written OpenAPI document
// (openapi.json, beside this file) and a Swagger UI page that renders it.
// Both are compiled into the binary (the UI's assets come from the
// github.com/swaggo/files/v2 module's embedded copy), so /docs works on a
// machine with no network, like the embedded demo model.
//
// The document is written by hand rather than generated from annotations
// because the interesting part of the API, the SSE event stream, is beyond
// what annotation generators can describe; docs_test.go keeps it honest by
// validating it and checking it against docs/API.md.

import (
	_ "embed"
	"io"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	swaggerFiles "github.com/swaggo/files/v2"
)

//go:embed openapi.json
var openAPIDocument []byte

const (
	openAPIPath = "/openapi.json"
	docsPath    = "/docs"
)

// RegisterDocs serves the OpenAPI document at GET /openapi.json and the
// Swagger UI at GET /docs (the page itself, also at /docs/ and
// /docs/index.html) with its assets under /docs/. r must be mounted at the
// root (the engine, or a group without a prefix): the page and the document
// refer to these absolute paths.
func RegisterDocs(r gin.IRoutes) {
	// HEAD beside GET because gin does not derive one from the other, and
	// uptime checks like to probe with HEAD.
	for _, register := range []func(string, ...gin.HandlerFunc) gin.IRoutes{r.GET, r.HEAD} {
		register(openAPIPath, serveOpenAPIDocument)
		register(docsPath, serveDocsPage)
		register(docsPath+"/*asset", serveDocsAsset)
	}
}

func serveOpenAPIDocument(c *gin.Context) {
	// The document changes with the binary, not on a schedule: let clients
	// cache it but ask again each time.
	c.Header("Cache-Control", "no-cache")
	c.Data(http.StatusOK, "application/json", openAPIDocument)
}

// docsPage replaces the module's own index.html and swagger-initializer.js,
// which load the petstore demo from the internet. Asset URLs are absolute so
// the page works at /docs as well as /docs/ (relative ones would resolve
// against / without the trailing slash). The bootstrap is inline so the one
// response says which document the UI shows.
const docsPage = `<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>nielsgpt API</title>
  <link rel="stylesheet" type="text/css" href="` + docsPath + `/swagger-ui.css">
  <link rel="stylesheet" type="text/css" href="` + docsPath + `/index.css">
  <link rel="icon" type="image/png" href="` + docsPath + `/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="` + docsPath + `/favicon-16x16.png" sizes="16x16">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="` + docsPath + `/swagger-ui-bundle.js" charset="utf-8"></script>
  <script>
    window.onload = function () {
      window.ui = SwaggerUIBundle({
        url: "` + openAPIPath + `",
        dom_id: "#swagger-ui",
        deepLinking: true,
        // The default posts the document to validator.swagger.io for a
        // badge: a network call, and our document is validated in tests.
        validatorUrl: null,
        // Streams take as long as the generation; show how long.
        displayRequestDuration: true,
        presets: [SwaggerUIBundle.presets.apis],
        layout: "BaseLayout"
      });
    };
  </script>
</body>
</html>
`

func serveDocsPage(c *gin.Context) {
	c.Header("Cache-Control", "no-cache")
	c.Data(http.StatusOK, "text/html; charset=utf-8", []byte(docsPage))
}

// serveDocsAsset serves one file of the embedded Swagger UI distribution.
func serveDocsAsset(c *gin.Context) {
	name := strings.TrimPrefix(c.Param("asset"), "/")
	switch name {
	case "", "index.html":
		serveDocsPage(c)
		return
	case "swagger-initializer.js":
		// The stock initializer points at the internet petstore; nothing of
		// ours loads it, so do not offer it.
		c.Status(http.StatusNotFound)
		return
	}
	if !fs.ValidPath(name) {
		c.Status(http.StatusNotFound)
		return
	}
	file, err := swaggerFiles.FS.Open(name)
	if err != nil {
		c.Status(http.StatusNotFound)
		return
	}
	defer file.Close()
	info, err := file.Stat()
	if err != nil || info.IsDir() {
		c.Status(http.StatusNotFound)
		return
	}
	// Embedded files are always seekable; ServeContent needs that for
	// ranges and for sizing the response.
	content, ok := file.(io.ReadSeeker)
	if !ok {
		c.Status(http.StatusInternalServerError)
		return
	}
	if path.Ext(name) == ".map" {
		// Source maps are JSON; the extension is unknown to package mime and
		// sniffing would call them text/plain.
		c.Header("Content-Type", "application/json")
	}
	// The assets change only when the swaggo/files module is upgraded; a day
	// of staleness after an upgrade costs nothing, and the 1.4 MB bundle is
	// not fetched again on every visit.
	c.Header("Cache-Control", "public, max-age=86400")
	// Embedded files carry no modification time, so no Last-Modified.
	http.ServeContent(c.Writer, c.Request, name, time.Time{}, content)
}
