package devicegrant

import (
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/store"
)

//go:embed pages
var pageFS embed.FS

// lazyPages gives each page's template, pages/NAME.html inside
// pages/layout.html, parsed the first time the page is shown rather than
// at start: a daemon nobody has opened a page of yet (an appliance, most
// of its life) then holds neither the parsed templates nor the pages of
// code that parse them. TestPagesParse parses them all.
func lazyPages() map[string]func() (*template.Template, error) {
	out := map[string]func() (*template.Template, error){}
	for _, name := range []string{"enter_code", "login", "consent", "message", "account", "session", "confirm", "authorize", "register", "legacy_sso"} {
		out[name] = sync.OnceValues(func() (*template.Template, error) {
			t, err := template.ParseFS(pageFS, "pages/layout.html", "pages/"+name+".html")
			if err != nil {
				return nil, fmt.Errorf("devicegrant: page %s: %w", name, err)
			}
			return t, nil
		})
	}
	return out
}

// frame is what the layout around every page shows. render fills in the
// server's part (ServerName, Base, CSRF).
type frame struct {
	Title      string
	ServerName string
	Base       string // the issuer's path, for links
	CSRF       string
	User       *store.User // signed in: the footer offers to sign out
	Error      string      // what went wrong with the form, shown beside it
	Refresh    int         // seconds before the page reloads itself; 0 never
}

func (f *frame) layout() *frame { return f }

// pageData is one page's data: its frame and the template that shows it.
// Each template has a data type of its own below, so a page can only be
// given what its template shows.
type pageData interface {
	layout() *frame
	template() string
}

// The pages, one data type each.
type (
	enterCodePage struct {
		frame
		Code string // as typed, to show again
	}
	loginPage struct {
		frame
		Code, CodeRaw string // the user code being approved, if any
		Username      string
		Next          string // where to go afterwards
		RegisterURL   string // offer self-registration
	}
	consentPage struct {
		frame
		Code, CodeRaw string
		Client        clientView
		Grant         grantView
		Scopes        []string
		Replaces      string // the sign-in that approving ends (P-SCOPE-4)
	}
	messagePage struct {
		frame
		Kind     string // ok or bad
		Message  string
		Again    bool         // offer to enter another code
		Link     template.URL // a link onwards, built by us
		LinkText string
	}
	accountPage struct {
		frame
		Info         string
		Sessions     []sessionView
		Leaked       []sessionView // sessions ended because their token was reported
		CrossSigning bool
	}
	sessionPage struct {
		frame
		Session sessionView
	}
	confirmPage struct {
		frame
		Message       string
		Action        string            // the form's path
		Hidden        map[string]string // hidden fields
		Button        string            // the button's label
		TypeToConfirm string            // text to type
	}
	authorizePage struct {
		frame
		Client       clientView
		Scopes       []string
		RedirectHost string // where the person goes back to
		Replaces     string // the sign-in that approving ends (P-SCOPE-4)
		Hidden       map[string]string
	}
	registerPage struct {
		frame
		Username, Next string
		TermsURL       string // terms to accept
	}
	legacySSOPage struct {
		frame
		Message      string
		RedirectHost string
		Hidden       map[string]string
	}
)

func (enterCodePage) template() string { return "enter_code" }
func (loginPage) template() string     { return "login" }
func (consentPage) template() string   { return "consent" }
func (messagePage) template() string   { return "message" }
func (accountPage) template() string   { return "account" }
func (sessionPage) template() string   { return "session" }
func (confirmPage) template() string   { return "confirm" }
func (authorizePage) template() string { return "authorize" }
func (registerPage) template() string  { return "register" }
func (legacySSOPage) template() string { return "legacy_sso" }

type clientView struct{ Name, URI, Host, LogoURI string }

type grantView struct{ Ago, IP, Agent, ExpiresIn string }

// render shows p with the given status; the status is the caller's
// decision, never guessed from the page.
func (s *Server) render(c *gin.Context, status int, p pageData) {
	f := p.layout()
	f.ServerName, f.Base, f.CSRF = s.cfg.ServerName, s.prefix, s.csrfToken(c)
	c.Status(status)
	c.Header("Content-Type", "text/html; charset=utf-8")
	t, err := s.pages[p.template()]()
	if err == nil {
		err = t.ExecuteTemplate(c.Writer, "layout", p)
	}
	if err != nil {
		s.log.ErrorContext(c.Request.Context(), "render page", "page", p.template(), "err", err)
	}
}

func (s *Server) errorPage(c *gin.Context, status int, title, msg string) {
	s.render(c, status, &messagePage{frame: frame{Title: title}, Kind: "bad", Message: msg, Again: true})
}

// pageHeaders sets the security headers of every HTML page: no framing, no
// referrer (verification URLs hold user codes), no caching, no scripts.
//
// There is deliberately no form-action directive: Chromium applies it to
// every redirect that follows a form submission, so "form-action 'self'"
// would block the sign-in and consent forms' redirect back to the app's
// redirect URI (any host, or a private-use scheme). Forms cannot be
// injected anyway: no script runs and html/template escapes all data.
func (s *Server) pageHeaders(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' https:; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	c.Next()
}

//go:embed pages/style.css
var styleCSS []byte

func (s *Server) style(c *gin.Context) {
	c.Header("Cache-Control", "public, max-age=3600")
	c.Header("X-Content-Type-Options", "nosniff")
	c.Data(http.StatusOK, "text/css; charset=utf-8", styleCSS)
}

// cookieName adds the __Host- prefix on https, which pins a cookie to this
// host and path / and stops a sibling subdomain from planting one.
func (s *Server) cookieName(base string) string {
	if s.secure {
		return "__Host-" + base
	}
	return base
}

func (s *Server) setCookie(c *gin.Context, name, value string, maxAge time.Duration) {
	http.SetCookie(c.Writer, &http.Cookie{
		Name: s.cookieName(name), Value: value, Path: "/", MaxAge: int(maxAge.Seconds()),
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode,
	})
}

func (s *Server) cookie(c *gin.Context, name string) string {
	v, err := c.Cookie(s.cookieName(name))
	if err != nil {
		return ""
	}
	return v
}

// csrfToken returns the double-submit CSRF token for forms, setting its
// cookie on first use. A cross-site attacker can neither read the cookie
// nor, with SameSite=Lax and __Host-, set it.
func (s *Server) csrfToken(c *gin.Context) string {
	if v, ok := c.Get("csrf"); ok {
		return v.(string)
	}
	tok := s.cookie(c, "dg_csrf")
	if len(tok) != 43 {
		tok = randomString(32)
		s.setCookie(c, "dg_csrf", tok, 0)
	}
	c.Set("csrf", tok)
	return tok
}

// checkCSRF reports whether a form carries this browser's CSRF token, and
// answers the request when it does not.
func (s *Server) checkCSRF(c *gin.Context) bool {
	cookie, form := s.cookie(c, "dg_csrf"), c.PostForm("csrf")
	if cookie != "" && subtle.ConstantTimeCompare([]byte(cookie), []byte(form)) == 1 {
		return true
	}
	s.errorPage(c, http.StatusForbidden, "Please try again", "This form expired. Go back, reload the page and submit it again.")
	return false
}

// browserSession returns this browser's live session, or nil.
func (s *Server) browserSession(c *gin.Context) (*store.BrowserSession, error) {
	v := s.cookie(c, "dg_session")
	if v == "" {
		return nil, nil
	}
	b, err := s.store.BrowserSession(c.Request.Context(), hashSecret(v))
	if errors.Is(err, store.ErrNotFound) || (err == nil && !s.now().Before(b.ExpiresAt)) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &b, nil
}

// signedInUser returns the person signed in on this browser, or nil.
func (s *Server) signedInUser(c *gin.Context) (*store.User, error) {
	b, err := s.browserSession(c)
	if err != nil || b == nil {
		return nil, err
	}
	u, err := s.store.User(c.Request.Context(), b.UserID)
	if err != nil {
		return nil, err
	}
	if !u.DeactivatedAt.IsZero() {
		return nil, nil
	}
	return &u, nil
}

// signOut ends this browser's session.
func (s *Server) signOut(c *gin.Context) {
	ctx := c.Request.Context()
	if v := s.cookie(c, "dg_session"); v != "" {
		if b, err := s.store.BrowserSession(ctx, hashSecret(v)); err == nil {
			if err := s.store.Update(ctx, func(tx store.Tx) error { return tx.DeleteBrowserSession(ctx, b.ID) }); err != nil {
				s.log.ErrorContext(ctx, "sign out", "err", err)
			}
		}
	}
	s.setCookie(c, "dg_session", "", -time.Second)
}

// replacedSignIn names what approving a sign-in on deviceID would end
// (P-SCOPE-4: one session per Matrix device), or "".
func (s *Server) replacedSignIn(ctx context.Context, user *store.User, deviceID string) string {
	if deviceID == "" {
		return ""
	}
	live, err := s.store.SessionsByDevice(ctx, user.ID, deviceID)
	if err != nil || len(live) == 0 {
		return ""
	}
	name := "An unnamed application"
	if cl, err := s.loadClient(ctx, live[0].ClientID); err == nil {
		name = cl.name()
	}
	return name + ", signed in as the device " + deviceID + " " + humanDuration(s.now().Sub(live[0].CreatedAt)) + " ago"
}

// currentUser is signedInUser for handlers: on a store failure it answers
// the request itself and reports ok false.
func (s *Server) currentUser(c *gin.Context) (user *store.User, ok bool) {
	user, err := s.signedInUser(c)
	if err != nil {
		s.log.ErrorContext(c.Request.Context(), "browser session", "err", err)
		s.errorPage(c, http.StatusInternalServerError, "Something went wrong", "Please try again.")
		return nil, false
	}
	return user, true
}

// signIn starts a browser session for u.
func (s *Server) signIn(c *gin.Context, u store.User) error {
	ctx := c.Request.Context()
	v := randomString(32)
	now := s.now()
	b := store.BrowserSession{ID: newID(), TokenHash: hashSecret(v), UserID: u.ID, CreatedAt: now, ExpiresAt: now.Add(s.cfg.BrowserSessionTTL)}
	if err := s.store.Update(ctx, func(tx store.Tx) error { return tx.CreateBrowserSession(ctx, b) }); err != nil {
		return err
	}
	s.setCookie(c, "dg_session", v, s.cfg.BrowserSessionTTL)
	return nil
}
