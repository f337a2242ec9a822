package devicegrant

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/devicegrant/clientmeta"
	"github.com/devicegrant/devicegrant/store"
)

// The authorization-code grant with PKCE (P-AC-1…4, RFC 6749 §4.1, RFC
// 7636, RFC 9207, RFC 9700): how Element X, Element Web and other Matrix
// clients with a browser sign in.

const grantAuthorizationCode = clientmeta.GrantAuthorizationCode

// authCodeTTL is how long a minted code may wait for its exchange (P-AC-3);
// approvalTTL how long an approved request may wait for the homeserver to
// create its device.
const (
	authCodeTTL = 60 * time.Second
	approvalTTL = 10 * time.Minute
)

// challengeRE is an RFC 7636 S256 challenge: base64url of a SHA-256, no
// padding (§4.2). verifierRE is a code_verifier (§4.1).
var (
	challengeRE = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)
	verifierRE  = regexp.MustCompile(`^[A-Za-z0-9._~-]{43,128}$`)
)

// authRequest is a checked authorization request.
type authRequest struct {
	client       *client
	redirectURI  string
	state        string
	responseMode string
	challenge    string
	nonce        string
	scope        scopes
	prompt       string
	loginHint    string // a localpart
	params       url.Values
}

// parseAuthRequest checks an authorization request. Until the client and
// redirect URI are known good, problems are shown to the person (pageErr)
// and never redirected: that would make us an open redirector (P-AC-2).
// After, they go back to the client (redirErr).
func (s *Server) parseAuthRequest(c *gin.Context, q url.Values) (req *authRequest, pageErr string, redirErr *oauthError) {
	req = &authRequest{params: url.Values{}}
	for _, k := range []string{"response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge",
		"code_challenge_method", "response_mode", "nonce", "prompt", "login_hint"} {
		if len(q[k]) > 1 {
			// Before the redirect URI is validated, even this is shown
			// rather than redirected (P-AC-2).
			return nil, "The application sent " + k + " twice.", nil
		}
		if v := q.Get(k); v != "" {
			req.params.Set(k, v)
		}
	}
	clientID := q.Get("client_id")
	if clientID == "" {
		return nil, "The application did not say who it is (no client_id).", nil
	}
	cl, err := s.loadClient(c.Request.Context(), clientID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, "This application is not registered here. It may need to sign in again from the start.", nil
	}
	if err != nil {
		s.log.ErrorContext(c.Request.Context(), "authorize: load client", "err", err)
		return nil, "Something went wrong on our side. Please try again.", nil
	}
	req.client = cl
	req.redirectURI = q.Get("redirect_uri")
	if req.redirectURI == "" || !cl.meta.RedirectURIMatches(req.redirectURI) {
		return nil, "The application asked to send you to an address it did not register. For your safety, you are not being sent there.", nil
	}
	req.state = q.Get("state")
	req.responseMode = q.Get("response_mode")
	switch req.responseMode {
	case "":
		req.responseMode = "query"
	case "query", "fragment":
	default:
		req.responseMode = "query"
		return req, "", errInvalidRequest("response_mode must be query or fragment")
	}
	if !cl.meta.HasGrant(grantAuthorizationCode) {
		return req, "", errUnauthorizedClient("this client did not register the authorization_code grant")
	}
	if rt := q.Get("response_type"); rt != "code" {
		return req, "", &oauthError{http.StatusBadRequest, "unsupported_response_type", "response_type must be code"}
	}
	req.challenge = q.Get("code_challenge")
	switch {
	case req.challenge == "":
		return req, "", errInvalidRequest("PKCE is required: send code_challenge with code_challenge_method=S256")
	case q.Get("code_challenge_method") != "S256":
		return req, "", errInvalidRequest("code_challenge_method must be S256; plain is not accepted")
	case !challengeRE.MatchString(req.challenge):
		return req, "", errInvalidRequest("code_challenge must be 43 base64url characters (S256 of the verifier)")
	}
	sc, err := parseScopes(q.Get("scope"))
	if err != nil {
		return req, "", &oauthError{http.StatusBadRequest, "invalid_scope", err.Error()}
	}
	req.scope = sc
	req.nonce = q.Get("nonce")
	if len(req.nonce) > 512 || len(req.state) > 2048 {
		return req, "", errInvalidRequest("state or nonce is too long")
	}
	req.prompt = q.Get("prompt")
	switch req.prompt {
	case "", "none", "login", "consent":
	case "create":
		if !s.cfg.Registration.Enabled {
			return req, "", errInvalidRequest("prompt=create: this server does not allow self-registration")
		}
	default:
		return req, "", errInvalidRequest("unsupported prompt value " + req.prompt)
	}
	if hint, ok := strings.CutPrefix(q.Get("login_hint"), "mxid:"); ok {
		if lp, server, ok := strings.Cut(strings.TrimPrefix(hint, "@"), ":"); ok && server == s.cfg.ServerName {
			req.loginHint = strings.ToLower(lp)
		}
	}
	return req, "", nil
}

// authorizeURL is the request again with its prompt replaced (none when
// prompt is ""): coming back after signing in or registering must not
// ask again.
func (s *Server) authorizeURL(req *authRequest, prompt string) string {
	p := url.Values{}
	for k, v := range req.params {
		p[k] = v
	}
	p.Del("prompt")
	if prompt != "" {
		p.Set("prompt", prompt)
	}
	return s.prefix + pathAuthorize + "?" + p.Encode()
}

// nextPrompt is the prompt to keep after signing in or registering.
func nextPrompt(req *authRequest) string {
	if req.prompt == "consent" || req.prompt == "none" {
		return req.prompt
	}
	return ""
}

// checkedAuthRequest parses a request and answers it when it is bad: with
// a page, or a redirect back to the client. It returns nil then.
func (s *Server) checkedAuthRequest(c *gin.Context, q url.Values) *authRequest {
	req, pageErr, redirErr := s.parseAuthRequest(c, q)
	if pageErr != "" {
		s.errorPage(c, http.StatusBadRequest, "Cannot continue", pageErr)
		return nil
	}
	if redirErr != nil {
		user, _ := s.signedInUser(c)
		s.authError(c, req, user, redirErr.code, redirErr.desc)
		return nil
	}
	return req
}

// authError answers an authorization request with an error for the
// client. Sending it back unasked would make us an open redirector for
// anyone who registers a client (RFC 9700 §4.11.2): so only a client the
// operator trusts, or one this person has signed in to before, gets the
// redirect straight away. For any other, the person sees the error here,
// with the application's name and a link back to it.
func (s *Server) authError(c *gin.Context, req *authRequest, user *store.User, code, desc string) {
	params := url.Values{"error": {code}, "error_description": {desc}}
	if s.mayRedirectUnasked(c, req, user) {
		s.redirectAuth(c, req, params)
		return
	}
	target, err := s.authRedirectTarget(req, params)
	if err != nil {
		s.errorPage(c, http.StatusBadRequest, "Cannot continue", "The application's address is not valid.")
		return
	}
	cv := req.client.view()
	where := cv.Name
	if u, err := url.Parse(req.redirectURI); err == nil {
		if h := u.Hostname(); h != "" {
			where += " at " + h
		} else {
			where += " (" + u.Scheme + ")"
		}
	}
	s.render(c, http.StatusBadRequest, &messagePage{
		frame: frame{Title: "Cannot continue", User: user},
		Kind:  "bad",
		Message: cv.Name + " asked for something this server cannot do: " + desc + " (" + code + "). " +
			"As you have not signed in to this application here before (or are signed out), you are not sent to it without asking.",
		// The link is the registered redirect URI (an https, loopback or
		// reverse-domain private-use URI, checked at registration) with
		// our parameters: never script.
		Link:     template.URL(target),
		LinkText: "Back to " + where,
	})
}

// mayRedirectUnasked reports whether an error may go back to the client
// without the person seeing it first: the operator trusts the client, or
// the person signed in to it before (a session, live or ended).
func (s *Server) mayRedirectUnasked(c *gin.Context, req *authRequest, user *store.User) bool {
	if req.client.Trusted {
		return true
	}
	if user == nil {
		return false
	}
	sessions, err := s.store.SessionsByUser(c.Request.Context(), user.ID, true)
	if err != nil {
		s.log.ErrorContext(c.Request.Context(), "authorize: sessions of the person", "err", err)
		return false
	}
	for _, x := range sessions {
		if x.ClientID == req.client.ID {
			return true
		}
	}
	return false
}

func (s *Server) authorize(c *gin.Context) {
	req := s.checkedAuthRequest(c, c.Request.URL.Query())
	if req == nil {
		return
	}
	if req.prompt == "create" {
		s.render(c, http.StatusOK, &registerPage{
			frame:    frame{Title: "Create an account"},
			Next:     s.authorizeURL(req, nextPrompt(req)),
			Username: req.loginHint,
			TermsURL: s.cfg.Registration.TermsURL,
		})
		return
	}
	user, ok := s.currentUser(c)
	if !ok {
		return
	}
	if req.prompt == "login" {
		// Ask for the password again, but end nothing on a GET: a link
		// must not be able to sign anyone out. Signing in replaces the
		// browser session.
		user = nil
	}
	if user == nil {
		if req.prompt == "none" {
			s.authError(c, req, nil, "login_required", "the person is not signed in")
			return
		}
		p := &loginPage{
			frame:    frame{Title: "Sign in"},
			Next:     s.authorizeURL(req, nextPrompt(req)),
			Username: req.loginHint,
		}
		if s.cfg.Registration.Enabled {
			p.RegisterURL = s.authorizeURL(req, "create")
		}
		s.render(c, http.StatusOK, p)
		return
	}
	if req.client.Trusted && req.prompt != "consent" {
		// Approving writes: an authorization code and, with a homeserver,
		// a Matrix device created or renamed (upsert_device). A link on
		// another site must not do that in a signed-in browser, so only
		// a navigation from our own pages approves unasked; any other
		// gets the consent page, and the click on it approves.
		if fromOwnPage(c) {
			s.approveAuth(c, req, user)
			return
		}
		if req.prompt == "none" {
			s.authError(c, req, user, "interaction_required", "the request did not come from this server's own pages; the person must continue by hand")
			return
		}
		s.showAuthConsent(c, req, user, "")
		return
	}
	if req.prompt == "none" {
		s.authError(c, req, user, "consent_required", "the person has not approved this application")
		return
	}
	s.showAuthConsent(c, req, user, "")
}

// fromOwnPage reports whether the browser says (Fetch Metadata,
// Sec-Fetch-Site, which pages cannot set) that this request came from one
// of our own pages, such as the redirect after our sign-in form. Only
// same-origin counts: "same-site" includes sibling subdomains, which may
// serve content we do not control. A request from another site, one the
// person started outside any page ("none": a bookmark, a link in another
// app), or from a browser that does not say, is not.
func fromOwnPage(c *gin.Context) bool {
	return c.GetHeader("Sec-Fetch-Site") == "same-origin"
}

func (s *Server) showAuthConsent(c *gin.Context, req *authRequest, user *store.User, errMsg string) {
	cv := req.client.view()
	redirectHost := ""
	if u, err := url.Parse(req.redirectURI); err == nil && (u.Scheme == "https" || u.Scheme == "http") {
		redirectHost = u.Hostname()
	}
	hidden := map[string]string{}
	for k := range req.params {
		hidden[k] = req.params.Get(k)
	}
	s.render(c, http.StatusOK, &authorizePage{
		frame:        frame{Title: "Sign in to " + cv.Name + "?", User: user, Error: errMsg},
		Client:       cv,
		Scopes:       describeScopes(req.scope.String()),
		Hidden:       hidden,
		RedirectHost: redirectHost,
		Replaces:     s.replacedSignIn(c.Request.Context(), user, req.scope.deviceID),
	})
}

func (s *Server) authorizeSubmit(c *gin.Context) {
	if !s.checkCSRF(c) {
		return
	}
	req := s.checkedAuthRequest(c, c.Request.PostForm)
	if req == nil {
		return
	}
	user, err := s.signedInUser(c)
	if err != nil || user == nil {
		s.render(c, http.StatusOK, &loginPage{
			frame:    frame{Title: "Sign in"},
			Next:     s.authorizeURL(req, nextPrompt(req)),
			Username: req.loginHint,
		})
		return
	}
	switch c.PostForm("action") {
	case "approve":
		s.approveAuth(c, req, user)
	case "deny":
		s.redirectAuth(c, req, url.Values{"error": {"access_denied"}, "error_description": {"the person declined"}})
	default:
		s.showAuthConsent(c, req, user, "Choose Continue or Cancel.")
	}
}

// approveAuth records the approval and sends the browser on to mint the
// code. With a homeserver to provision, the Matrix device is created first
// (P-HS-3) and the browser waits on a page that refreshes itself.
func (s *Server) approveAuth(c *gin.Context, req *authRequest, user *store.User) {
	ctx := c.Request.Context()
	authTime := s.now()
	if b, err := s.browserSession(c); err == nil && b != nil {
		authTime = b.CreatedAt
	}
	now := s.now()
	a := store.AuthCode{
		ID: newID(), ClientID: req.client.ID, RedirectURI: req.redirectURI, CodeChallenge: req.challenge,
		Scope: req.scope.String(), Nonce: req.nonce, State: req.state, ResponseMode: req.responseMode,
		UserID: user.ID, AuthTime: authTime, CreatedAt: now, ExpiresAt: now.Add(approvalTTL),
	}
	err := s.store.Update(ctx, func(tx store.Tx) error {
		wait, err := s.provisionDevice(ctx, tx, user.Username, req.scope.deviceID, req.client.name(), a.ID)
		if err != nil {
			return err
		}
		return tx.CreateAuthCode(ctx, approvedAuthCode(a, wait != 0))
	})
	if s.clientGone(ctx, req.client.ID, err) {
		// Deleted by cleanup while the person was deciding: nothing can
		// be sent back to it, nor should be.
		s.errorPage(c, http.StatusBadRequest, "Cannot continue", "This application is not registered here. It may need to sign in again from the start.")
		return
	}
	if err != nil {
		s.log.ErrorContext(ctx, "authorize: approve", "err", err)
		s.errorPage(c, http.StatusInternalServerError, "Something went wrong", "Please go back to the application and try again.")
		return
	}
	s.log.InfoContext(ctx, "authorization approved", "client_id", req.client.ID, "user", user.Username)
	c.Redirect(http.StatusSeeOther, s.prefix+pathAuthorize+"/continue?id="+a.ID)
}

// authorizeContinue mints the code once the device exists and sends the
// browser back to the client with it.
func (s *Server) authorizeContinue(c *gin.Context) {
	ctx := c.Request.Context()
	user, err := s.signedInUser(c)
	if err != nil || user == nil {
		s.errorPage(c, http.StatusForbidden, "Signed out", "You were signed out in the meantime. Start again from the application.")
		return
	}
	var a store.AuthCode
	var code string
	err = s.store.Update(ctx, func(tx store.Tx) error {
		code = ""
		a, err = tx.AuthCode(ctx, c.Query("id"))
		if err != nil || a.UserID != user.ID || a.Status != store.AuthCodeReady || !s.now().Before(a.ExpiresAt) {
			return err
		}
		code = issueAuthCode(&a, s.now())
		return tx.UpdateAuthCode(ctx, a)
	})
	switch {
	case errors.Is(err, store.ErrNotFound) || (err == nil && a.UserID != user.ID):
		s.errorPage(c, http.StatusNotFound, "Not found", "There is no sign-in waiting here. Start again from the application.")
		return
	case err != nil:
		s.log.ErrorContext(ctx, "authorize: mint code", "err", err)
		s.errorPage(c, http.StatusInternalServerError, "Something went wrong", "Please reload this page.")
		return
	}
	req := &authRequest{redirectURI: a.RedirectURI, responseMode: a.ResponseMode, state: a.State}
	switch {
	case code != "":
		s.redirectAuth(c, req, url.Values{"code": {code}})
	case a.Status == store.AuthCodeWaiting && s.now().Before(a.ExpiresAt):
		s.render(c, http.StatusOK, &messagePage{
			frame:   frame{Title: "Almost there", User: user, Refresh: 1},
			Kind:    "ok",
			Message: "Your homeserver is setting up the new device. This page continues by itself in a moment.",
		})
	case a.Status == store.AuthCodeWaiting:
		s.redirectAuth(c, req, url.Values{"error": {"temporarily_unavailable"},
			"error_description": {"the homeserver did not create the device in time; try again later"}})
	default:
		s.errorPage(c, http.StatusConflict, "Already done", "This sign-in already went back to the application.")
	}
}

// redirectAuth sends the browser back to the client (RFC 6749 §4.1.2) with
// params, the state and the issuer (RFC 9207, against mix-up attacks), in
// the query or the fragment.
func (s *Server) redirectAuth(c *gin.Context, req *authRequest, params url.Values) {
	target, err := s.authRedirectTarget(req, params)
	if err != nil {
		s.errorPage(c, http.StatusBadRequest, "Cannot continue", "The application's address is not valid.")
		return
	}
	c.Header("Cache-Control", "no-store")
	c.Redirect(http.StatusSeeOther, target)
}

// authRedirectTarget is the client's redirect URI with params, the state
// and the issuer.
func (s *Server) authRedirectTarget(req *authRequest, params url.Values) (string, error) {
	u, err := url.Parse(req.redirectURI)
	if err != nil {
		return "", err
	}
	if req.state != "" {
		params.Set("state", req.state)
	}
	params.Set("iss", s.issuer)
	u.Fragment, u.RawFragment = "", ""
	target := ""
	if req.responseMode == "fragment" {
		target = u.String() + "#" + params.Encode()
	} else {
		q := u.Query()
		for k, v := range params {
			q[k] = v
		}
		u.RawQuery = q.Encode()
		target = u.String()
	}
	return target, nil
}

// exchangeCode is the token endpoint's authorization_code grant (P-AC-3,
// P-AC-4). A code works once; presenting it again ends the session it
// created (RFC 6749 §4.1.2).
func (s *Server) exchangeCode(ctx context.Context, r tokenRequest) (*tokenResponse, error) {
	cl, code, verifier, redirectURI := r.client, r.code, r.verifier, r.redirectURI
	switch {
	case code == "":
		return nil, errInvalidRequest("code is missing")
	case verifier == "":
		return nil, errInvalidRequest("code_verifier is missing (PKCE is required)")
	case !verifierRE.MatchString(verifier):
		return nil, errInvalidRequest("code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~")
	case !wellFormed(code, prefixAuthCode):
		return nil, errInvalidGrant("unknown code")
	}
	// The signing key is read before the transaction, and the id_token
	// signed inside it: a code must not be spent unless the whole answer
	// can be given.
	keys, err := s.signingKeys(ctx)
	if err != nil {
		return nil, err
	}
	var resp *tokenResponse
	var outcome *oauthError
	var replay bool
	err = s.store.Update(ctx, func(tx store.Tx) error {
		resp, outcome, replay = nil, nil, false
		now := s.now()
		a, err := tx.AuthCodeByCode(ctx, hashSecret(code))
		if errors.Is(err, store.ErrNotFound) || (err == nil && a.ClientID != cl.ID) {
			outcome = errInvalidGrant("unknown code")
			return nil
		}
		if err != nil {
			return err
		}
		if a.Status == store.AuthCodeUsed {
			replay = true
			outcome = errInvalidGrant("this code was already used; the tokens issued with it are revoked")
			if a.SessionID == "" {
				return nil
			}
			sess, err := tx.Session(ctx, a.SessionID)
			if err != nil {
				return err
			}
			return s.endSession(ctx, tx, sess, endCodeReplay, now)
		}
		sum := sha256.Sum256([]byte(verifier))
		switch {
		case !authCodeUsable(a, now):
			outcome = errInvalidGrant("the code expired; start again")
			return nil
		case redirectURI != a.RedirectURI:
			outcome = errInvalidGrant("redirect_uri differs from the one the code was issued for")
			return nil
		case subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(a.CodeChallenge)) != 1:
			outcome = errInvalidGrant("code_verifier does not match the code_challenge")
			return nil
		}
		user, err := accountOf(ctx, tx, a.UserID)
		if errors.Is(err, errDeactivated) {
			outcome = errInvalidGrant(err.Error())
			return nil
		}
		if err != nil {
			return err
		}
		sess, tokens, err := s.startSession(ctx, tx, user, cl.ID, a.Scope, r.ip, now)
		if err != nil {
			return err
		}
		if hasScope(a.Scope, "openid") {
			if tokens.IDToken, err = s.idToken(keys[0], user, cl.ID, a.Scope, a.Nonce, tokens.AccessToken, a.AuthTime); err != nil {
				return err
			}
		}
		useAuthCode(&a, sess.ID)
		resp = tokens
		return tx.UpdateAuthCode(ctx, a)
	})
	if err != nil {
		return nil, err
	}
	if replay {
		s.log.WarnContext(ctx, "authorization code replayed: session ended", "client_id", cl.ID)
	}
	if outcome != nil {
		return nil, outcome
	}
	return resp, nil
}
