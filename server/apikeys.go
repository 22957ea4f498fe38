package server

// API keys (API_KEYS): when set, every POST endpoint and every /v1 route
// needs `Authorization: Bearer <key>`. Keys are compared as SHA-256 digests
// in constant time, against every key, so neither the time taken nor an
// early exit tells a caller how close a guess came; they are never logged
// (the request log records no header at all).

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"nielsgpt/metrics"
)

// keyDigests are the SHA-256 digests of API_KEYS; nil when keys are off.
type keyDigests [][sha256.Size]byte

func newKeyDigests(keys []string) keyDigests {
	var d keyDigests
	for _, k := range keys {
		d = append(d, sha256.Sum256([]byte(k)))
	}
	return d
}

func (d keyDigests) allows(key string) bool {
	got := sha256.Sum256([]byte(key))
	match := 0
	for _, want := range d {
		match |= subtle.ConstantTimeCompare(got[:], want[:])
	}
	return match == 1
}

// requireAPIKey answers 401 (in the route's own error shape) unless the
// request carries one of the keys.
func (s *Server) requireAPIKey(c *gin.Context) {
	if len(s.keys) == 0 {
		c.Next()
		return
	}
	key, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer ")
	if !ok || !s.keys.allows(strings.TrimSpace(key)) {
		c.Header("WWW-Authenticate", `Bearer realm="nielsgpt"`)
		s.reject(c, http.StatusUnauthorized, metrics.RejectUnauthorized, "Missing or invalid API key (Authorization: Bearer <key>)")
		return
	}
	c.Next()
}
