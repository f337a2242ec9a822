package devicegrant

import (
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
)

// MaxBodyBytes is the largest request body any endpoint reads (64 KiB).
// No OAuth form comes near it; registration has its own cap of the same
// size for its JSON.
const MaxBodyBytes = 64 << 10

// formType is the only body OAuth's endpoints and the pages' forms take
// (RFC 6749 §3.2, RFC 8628 §3.1, RFC 7009 §2.1, RFC 7662 §2.1).
const formType = "application/x-www-form-urlencoded"

// apiBody and pageBody bound what a request may send before its handler
// runs. Without them gin's PostForm accepts multipart/form-data and
// buffers up to 32 MiB of it in memory (and more in temporary files)
// before any check: one large POST raised the daemon's memory tenfold.
// Both refuse a body over MaxBodyBytes, and any POST body that is not
// form-encoded, before reading it; they then parse the form here, so a
// handler's PostForm only reads what is already in memory. They also
// refuse repeated parameters and text that is not UTF-8 or holds a NUL,
// in the form and the query, and apiBody refuses malformed HTTP Basic
// credentials: whatever passes is what the handlers expect to parse.
func (s *Server) apiBody(c *gin.Context) {
	e := s.checkBody(c, strings.HasSuffix(c.FullPath(), "/"+pathRegister))
	if h := c.GetHeader("Authorization"); e == nil && len(h) >= 6 && strings.EqualFold(h[:6], "basic ") {
		// A client that tried HTTP Basic and got it wrong failed to
		// authenticate (RFC 6749 §2.3.1); it is not a public client.
		if _, _, ok := c.Request.BasicAuth(); !ok {
			e = errInvalidClient("malformed HTTP Basic credentials")
		}
	}
	if e != nil {
		writeError(c, e)
		c.Abort()
	}
}

func (s *Server) pageBody(c *gin.Context) {
	if e := s.checkBody(c, false); e != nil {
		s.errorPage(c, e.status, "Request refused", e.desc)
		c.Abort()
	}
}

// checkBody caps the body and, unless it is JSON (registration), parses a
// POST's form. It returns the error to answer, or nil.
func (s *Server) checkBody(c *gin.Context, json bool) *oauthError {
	r := c.Request
	// A refused request is answered and the connection closed: without
	// "Connection: close" the HTTP server would first try to read the rest
	// of the body to keep the connection.
	refuse := func(e *oauthError) *oauthError {
		c.Header("Connection", "close")
		return e
	}
	tooLarge := &oauthError{http.StatusRequestEntityTooLarge, "invalid_request",
		fmt.Sprintf("the request body is larger than %d KiB", MaxBodyBytes>>10)}
	if r.ContentLength > MaxBodyBytes && !json { // registration answers in RFC 7591's terms
		return refuse(tooLarge) // on its declared length, unread
	}
	r.Body = http.MaxBytesReader(unwrapWriter(c.Writer), r.Body, MaxBodyBytes)
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return errInvalidRequest("the query string is malformed")
	}
	if e := checkText(query); e != nil {
		return e
	}
	if json || r.Method != http.MethodPost || r.ContentLength == 0 {
		return nil
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != formType {
		return refuse(errInvalidRequest("the request body must be " + formType))
	}
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return refuse(tooLarge)
		}
		return refuse(errInvalidRequest("the form body is malformed"))
	}
	// RFC 6749 §3.1: parameters must not be included more than once;
	// which copy a check reads would otherwise be anybody's guess.
	for k, v := range r.PostForm {
		if len(v) > 1 {
			return errInvalidRequest("the parameter " + printable(k) + " appears more than once")
		}
	}
	return checkText(r.PostForm)
}

// checkText refuses parameters that are not UTF-8 text, or hold a NUL:
// no OAuth parameter or form field can, and they would otherwise reach
// logs, the database and the pages.
func checkText(v url.Values) *oauthError {
	bad := func(s string) bool { return !utf8.ValidString(s) || strings.ContainsRune(s, 0) }
	for k, vals := range v {
		if bad(k) {
			return errInvalidRequest("a parameter name is not valid UTF-8 text")
		}
		for _, s := range vals {
			if bad(s) {
				return errInvalidRequest("the parameter " + printable(k) + " is not valid UTF-8 text")
			}
		}
	}
	return nil
}

// noMethod answers 405 as notFound answers 404: the Matrix error format
// on Matrix paths, a page for browsers, an OAuth-style error otherwise.
func (s *Server) noMethod(c *gin.Context) {
	if strings.HasPrefix(c.Request.URL.Path, s.prefix+"_matrix/") {
		writeMatrixError(c, mxErr(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "method %s is not allowed here", c.Request.Method))
		return
	}
	if strings.Contains(c.GetHeader("Accept"), "text/html") {
		s.errorPage(c, http.StatusMethodNotAllowed, "Not allowed", "This page cannot be used that way.")
		return
	}
	c.JSON(http.StatusMethodNotAllowed, gin.H{"error": "invalid_request", "error_description": "method " + c.Request.Method + " is not allowed here"})
}

// printable quotes a parameter name for an error message, short and safe.
func printable(s string) string { return fmt.Sprintf("%q", storableText(s, 40)) }

// unwrapWriter finds net/http's own writer under gin's, so that a
// MaxBytesReader that hits its limit tells the HTTP server, which then
// closes the connection instead of reading on (this covers the handlers
// that read the body themselves, such as registration).
func unwrapWriter(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}
