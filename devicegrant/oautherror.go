package devicegrant

import (
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"
)

// oauthError is an RFC 6749 §5.2 error response.
type oauthError struct {
	status int
	code   string
	desc   string
}

func (e *oauthError) Error() string { return e.code + ": " + e.desc }

func errInvalidRequest(desc string) *oauthError {
	return &oauthError{http.StatusBadRequest, "invalid_request", desc}
}

func errInvalidGrant(desc string) *oauthError {
	return &oauthError{http.StatusBadRequest, "invalid_grant", desc}
}

func errInvalidClient(desc string) *oauthError {
	return &oauthError{http.StatusUnauthorized, "invalid_client", desc}
}

func errUnauthorizedClient(desc string) *oauthError {
	return &oauthError{http.StatusBadRequest, "unauthorized_client", desc}
}

func errServer() *oauthError {
	return &oauthError{http.StatusInternalServerError, "server_error", "the server could not complete the request; try again"}
}

// writeError sends e as JSON. Token-endpoint errors must not be cached.
func writeError(c *gin.Context, e *oauthError) {
	c.Header("Cache-Control", "no-store")
	c.Header("Pragma", "no-cache")
	if e.status == http.StatusUnauthorized {
		// RFC 6749 §5.2: a 401 names the scheme the client should use.
		c.Header("WWW-Authenticate", `Basic realm="devicegrant"`)
	}
	c.JSON(e.status, gin.H{"error": e.code, "error_description": e.desc})
}

// fail logs an internal error (without secrets; callers pass errors that
// name no token) and answers server_error.
func (s *Server) fail(c *gin.Context, what string, err error) {
	s.log.ErrorContext(c.Request.Context(), what, "route", c.FullPath(), "err", err)
	writeError(c, errServer())
}

// overLimit answers 429 when the client address has spent its budget of
// requests to l, and reports whether it did.
func (s *Server) overLimit(c *gin.Context, l *limiter) bool {
	_, wait := l.take("ip:"+addressKey(c.ClientIP()), s.now(), true)
	if wait <= 0 {
		return false
	}
	c.Header("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusTooManyRequests, gin.H{"error": "temporarily_unavailable",
		"error_description": "too many requests from this address; retry after " + fmt.Sprint(int(wait.Seconds())+1) + " s"})
	return true
}
