package server

// Errors on the OpenAI-compatible routes come in OpenAI's shape,
// {"error": {"message", "type", "param", "code"}}, because that is what its
// SDKs parse; everywhere else they keep the original's {"error", "code"}.
// The shape is chosen per request by a flag the /v1 routes set first, so
// the shared middleware (model loading, rate limit, body limit, slots) and
// the handlers write errors one way and the flag picks the dialect.

import (
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

const ctxOpenAIShape = "nielsgpt.openai_errors"

// openAIErrors marks a request as one whose errors use OpenAI's shape.
func openAIErrors(c *gin.Context) {
	c.Set(ctxOpenAIShape, true)
	c.Next()
}

func wantsOpenAIErrors(c *gin.Context) bool {
	if c.GetBool(ctxOpenAIShape) {
		return true
	}
	// 404s and 405s are answered before any group middleware runs.
	return strings.HasPrefix(c.Request.URL.Path, "/v1/")
}

type openAIErrorBody struct {
	Error openAIError `json:"error"`
}

type openAIError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// openAIErrorType is OpenAI's error type for a status: what its SDKs and
// clients switch on besides the status itself.
func openAIErrorType(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return "authentication_error"
	case status == http.StatusTooManyRequests:
		return "rate_limit_error"
	case status >= 500:
		return "server_error"
	default:
		return "invalid_request_error"
	}
}

// writeOpenAIError ends the request with OpenAI's error shape. code and
// param may be empty (JSON null).
func writeOpenAIError(c *gin.Context, s *Server, status int, code, param, message string) {
	c.Set(ctxErrorCode, code)
	body := openAIErrorBody{Error: openAIError{Message: message, Type: openAIErrorType(status)}}
	if code != "" {
		body.Error.Code = &code
	}
	if param != "" {
		body.Error.Param = &param
	}
	_ = http.NewResponseController(c.Writer).SetWriteDeadline(s.writeDeadline())
	c.AbortWithStatusJSON(status, body)
}
