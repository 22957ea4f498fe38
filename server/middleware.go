package server

// Middleware, in the order a request meets it: panic recovery, the access
// log (which also settles the client's address), CORS; then, for the POST
// endpoints that run the model only, the API key, "is the model loaded?" and
// the per-client rate limit, all before any of the request body is read.

import (
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/gin-contrib/cors"
	"github.com/gin-gonic/gin"

	"nielsgpt/metrics"
)

// Keys of values handlers leave in the gin.Context for the access log.
const (
	ctxClientIP  = "nielsgpt.client_ip"
	ctxTokens    = "nielsgpt.tokens"
	ctxErrorCode = "nielsgpt.error_code"
	// ctxIgnoredFields names the request fields a lenient parser ignored.
	ctxIgnoredFields = "nielsgpt.ignored_fields"
)

func clientIP(c *gin.Context) netip.Addr {
	if v, ok := c.Get(ctxClientIP); ok {
		return v.(netip.Addr)
	}
	return netip.Addr{}
}

// recoverPanics turns a handler bug into a 500 for that request instead of
// the end of every stream on the server.
func (s *Server) recoverPanics(c *gin.Context) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler { // net/http's own way to drop a connection
				panic(p)
			}
			s.log.Error("panic in handler", "route", c.FullPath(), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if !c.Writer.Written() {
				writeError(c, s, http.StatusInternalServerError, "internal_error", "Internal server error")
			}
			c.Abort()
		}
	}()
	c.Next()
}

// accessLog writes one line per request and records the request metrics.
// The path is logged without its query string, which is where secrets
// sometimes travel; no header is logged at all.
func (s *Server) accessLog(c *gin.Context) {
	start := time.Now()
	ip := s.trust.clientAddr(c.Request)
	c.Set(ctxClientIP, ip)
	// Every write gets a deadline (see Config.WriteTimeout). net/http keeps a
	// connection's deadline across keep-alive requests, so one is set as each
	// request starts, replacing whatever the previous one left, and again
	// when the handler returns, to bound net/http's final flush.
	rc := http.NewResponseController(c.Writer)
	_ = rc.SetWriteDeadline(s.writeDeadline())
	c.Next()
	_ = rc.SetWriteDeadline(s.writeDeadline())

	route := c.FullPath()
	switch {
	case route != "":
	case c.Request.Method == http.MethodOptions && c.GetHeader("Origin") != "":
		// CORS answers preflights before routing, for any path; one label
		// keeps them apart from clients probing for routes that do not exist.
		route = "preflight"
	default:
		route = "unmatched" // bounded label values whatever paths clients invent
	}
	status := c.Writer.Status()
	elapsed := time.Since(start)
	s.metrics.ObserveRequest(route, status, elapsed)
	if status < 400 && (route == "/livez" || route == "/readyz") {
		return // an orchestrator asks every few seconds: counted, not logged
	}

	attrs := []slog.Attr{
		slog.String("method", c.Request.Method),
		slog.String("route", route),
		slog.String("path", c.Request.URL.Path),
		slog.Int("status", status),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
		slog.String("client_ip", ipString(ip)),
		slog.Int("bytes", max(c.Writer.Size(), 0)),
	}
	if tokens, ok := c.Get(ctxTokens); ok {
		attrs = append(attrs, slog.Int("tokens", tokens.(int)))
	}
	if ignored, ok := c.Get(ctxIgnoredFields); ok {
		attrs = append(attrs, slog.Any("ignored_fields", ignored))
	}
	if code, ok := c.Get(ctxErrorCode); ok {
		attrs = append(attrs, slog.String("code", code.(string)))
	}
	s.log.LogAttrs(c.Request.Context(), slog.LevelInfo, "request", attrs...)
}

func ipString(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	return a.String()
}

// corsMethods is "any method", spelled out: with credentials, browsers read
// a "*" in Access-Control-Allow-Methods literally.
var corsMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

// cors answers cross-origin requests from the listed origins only.
//
// gin-contrib/cors refuses an unlisted origin with 403 even on a plain GET;
// like the original server, we instead let such a request through with no
// CORS headers (the browser then withholds the response from the page) and
// leave the 403 for preflights. "Any header" cannot be a "*" either when
// credentials are on, so a preflight's requested headers are echoed back;
// the library is given no AllowHeaders so it leaves that echo alone.
func (s *Server) cors() gin.HandlerFunc {
	allowed := make(map[string]bool, len(s.cfg.AllowedOrigins))
	for _, o := range s.cfg.AllowedOrigins {
		allowed[o] = true
	}
	if len(allowed) == 0 {
		return func(c *gin.Context) { c.Next() }
	}
	apply := cors.New(cors.Config{
		AllowOriginFunc:  func(origin string) bool { return allowed[origin] },
		AllowMethods:     corsMethods,
		AllowCredentials: true,
		MaxAge:           10 * time.Minute,
	})
	return func(c *gin.Context) {
		origin := c.GetHeader("Origin")
		if origin == "" {
			c.Next()
			return
		}
		preflight := c.Request.Method == http.MethodOptions
		if !allowed[origin] && !preflight {
			c.Next()
			return
		}
		if preflight && allowed[origin] {
			if requested := c.GetHeader("Access-Control-Request-Headers"); requested != "" && isHeaderList(requested) {
				c.Header("Access-Control-Allow-Headers", requested)
			}
		}
		apply(c)
	}
}

// isHeaderList checks that a requested header list is only header-name
// tokens, commas and spaces before it is echoed into a response header.
func isHeaderList(s string) bool {
	if len(s) > 1024 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		isToken := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !isToken && c != ',' && c != ' ' {
			return false
		}
	}
	return true
}

// requireModel answers 503 while the model is still loading.
func (s *Server) requireModel(c *gin.Context) {
	if s.currentEngine() == nil {
		c.Header("Retry-After", "5")
		s.reject(c, http.StatusServiceUnavailable, metrics.RejectModelLoading, "Model not ready yet, please retry")
		return
	}
	c.Next()
}

// rateLimit draws one token from the client's bucket. Every POST endpoint
// shares it, since every one runs the model.
func (s *Server) rateLimit(c *gin.Context) {
	if !s.limiter.allow(c.Request.Context(), rateKey(clientIP(c))) {
		// An empty bucket has one token again within 60/perMin seconds.
		c.Header("Retry-After", strconv.Itoa(int(math.Ceil(60/s.cfg.RateLimitPerMin))))
		s.reject(c, http.StatusTooManyRequests, metrics.RejectRateLimited, "Rate limit exceeded")
		return
	}
	c.Next()
}

// errorBody is the error shape of every non-422 error (docs/API.md, Errors).
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// writeError ends the request with {"error", "code"}.
func writeError(c *gin.Context, s *Server, status int, code, message string) {
	if wantsOpenAIErrors(c) {
		writeOpenAIError(c, s, status, code, "", message)
		return
	}
	c.Set(ctxErrorCode, code)
	_ = http.NewResponseController(c.Writer).SetWriteDeadline(s.writeDeadline())
	c.AbortWithStatusJSON(status, errorBody{Error: message, Code: code})
}

// reject is writeError for refusals, counted by reason (the reasons and the
// codes are the same words).
func (s *Server) reject(c *gin.Context, status int, reason, message string) {
	s.metrics.Reject(reason)
	writeError(c, s, status, reason, message)
}

// writeValidation ends the request with 422 {"detail": message}, or on the
// OpenAI routes with a 400 naming the field in param.
func (s *Server) writeValidation(c *gin.Context, err error) {
	s.metrics.Reject(metrics.RejectInvalid)
	message := err.Error()
	if wantsOpenAIErrors(c) {
		var param string
		if v, ok := err.(*validationError); ok {
			param = v.param
		}
		writeOpenAIError(c, s, http.StatusBadRequest, "invalid_value", param, message)
		return
	}
	c.Set(ctxErrorCode, "invalid")
	_ = http.NewResponseController(c.Writer).SetWriteDeadline(s.writeDeadline())
	c.AbortWithStatusJSON(http.StatusUnprocessableEntity, gin.H{"detail": message})
}
