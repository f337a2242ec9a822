// Package devicegrant is the protocol core of devicegrantd: the OAuth 2.0
// rules (RFC 6749, 7009, 7591, 7662, 8414, 8628) as Matrix profiles them,
// their state machines, and the HTTP handlers and phone pages that expose
// them.
//
// Data flows one way: handlers → the rules in this package → store.
package devicegrant

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicegrant/devicegrant/devicegrant/clientmeta"
	"github.com/devicegrant/devicegrant/store"
)

// Config says how the server behaves. The zero value of every field but
// Issuer has a working default.
type Config struct {
	// Issuer is the public base URL, e.g. "https://auth.example.org/".
	// Plain http is accepted only for a loopback host.
	Issuer string
	// ServerName is the Matrix server name users belong to (the part
	// after the colon in @alice:example.org). Default: the issuer's host.
	ServerName string
	// HomeserverSecret, when set, lets the homeserver introspect tokens by
	// presenting it as a Bearer token, and is presented to it in turn.
	HomeserverSecret string
	// HomeserverEndpoint is the homeserver's base URL for /_synapse/mas
	// calls (P-HS-3). When set, users and devices are provisioned there
	// through the outbox, and a device receives its tokens only after its
	// Matrix device exists. Empty: standalone.
	HomeserverEndpoint string
	// OutboxBackoff bounds the wait between retries of a failed homeserver
	// call. Default 1 second, doubling up to 5 minutes.
	OutboxBackoff Backoff
	// OutboxLease is how long an instance holds a homeserver call it is
	// making: another instance sharing the database makes the call only
	// once the lease has run out, so this is how long the calls of an
	// instance that died mid-call wait. Each call is cut off at half the
	// lease, so that it never outlives it. Default 1 minute.
	OutboxLease time.Duration
	// SyncInterval is how often every user's device list is reconciled
	// with the homeserver (sync_devices), by one of the instances sharing
	// the database (jobs.go). Default 1 hour.
	SyncInterval time.Duration
	// Registration enables self-registration (prompt=create).
	Registration Registration
	// LegacyLogin turns off the legacy Matrix login API (on by default).
	LegacyLogin LegacyLogin

	// Metrics, when set, receives the server's Prometheus collectors.
	Metrics prometheus.Registerer

	// AccessTokenTTL is how long an access token lives. Default 5 minutes.
	AccessTokenTTL time.Duration
	// DeviceCodeTTL is how long a device code may wait for approval.
	// Default 10 minutes (P-DEV-9).
	DeviceCodeTTL time.Duration
	// PollInterval is the minimum time between polls a device is told.
	// Default 5 seconds; at least one second.
	PollInterval time.Duration
	// BrowserSessionTTL is how long a person stays signed in on their
	// phone. Default 14 days.
	BrowserSessionTTL time.Duration

	// UserCodeFailures limits wrong user-code entries per client address
	// and, for people signed in, per account. UserCodeFailuresGlobal
	// limits them across all addresses of people not signed in, and
	// UserCodeFailuresSignedIn across all signed-in accounts: a budget of
	// its own, so that a guesser spending the anonymous one does not stop
	// people approving their devices, while accounts made in bulk (self-
	// registration) still cannot multiply the guesses (P-DEV-4). Defaults:
	// a burst of 10 then one a minute per address or account; a burst of
	// 100 then one every 6 seconds for each of the two global budgets.
	UserCodeFailures         RateLimit
	UserCodeFailuresGlobal   RateLimit
	UserCodeFailuresSignedIn RateLimit
	// LoginFailures limits wrong passwords per client address (IPv6: per
	// /64). Default: a burst of 10 then one every 30 seconds.
	LoginFailures RateLimit
	// ClientRegistrations and DeviceAuthorizations limit requests to the
	// two unauthenticated endpoints that write, per client address.
	// Defaults: a burst of 20 then one a minute; a burst of 30 then one
	// every 10 seconds.
	ClientRegistrations  RateLimit
	DeviceAuthorizations RateLimit
	// NewClients limits registrations that add a client row, from all
	// addresses together (one that reuses an identical public client,
	// P-DCR-6, does not count): with unused clients deleted after a day
	// it bounds what strangers can store. Default: a burst of 200 then
	// one every 15 seconds.
	NewClients RateLimit
	// AccountLoginFailures limits wrong passwords per account, from all
	// addresses together. Default: a burst of 20 then one a minute.
	AccountLoginFailures RateLimit

	// HeartbeatInterval is how often Run tells the database that this
	// instance is alive. Every rate limit above is a budget for the whole
	// server: with several instances on one database, each enforces its
	// share, dividing the rates and bursts by the number of instances
	// heard from within three intervals (README, "Rate limits across
	// instances"). Default 10 seconds.
	HeartbeatInterval time.Duration

	// TrustedProxies lists the addresses or CIDR ranges of reverse proxies
	// whose X-Forwarded-For header is believed. Default: none.
	TrustedProxies []string

	// Logger receives the server's logs. Default: slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default: time.Now.
	Now func() time.Time
}

// Registration says whether people may create their own accounts.
type Registration struct {
	Enabled bool
	// TermsURL, when set, must be accepted to register; the URL accepted
	// is recorded with the account (put a version in it).
	TermsURL string
	// PerAddress limits, per client address (IPv6: per /64), new accounts
	// and the attempts that cost a homeserver check or an argon2 hash
	// without making one. Default: 3, then one an hour.
	PerAddress RateLimit
}

// Backoff is a retry delay that doubles from Min to Max.
type Backoff struct{ Min, Max time.Duration }

// RateLimit allows Burst events at once, then one per Every.
type RateLimit struct {
	Burst int
	Every time.Duration
}

func (r RateLimit) orDefault(d RateLimit) RateLimit {
	if r.Burst <= 0 || r.Every <= 0 {
		return d
	}
	return r
}

// Server is the authorization server. Create it with New; it is an
// http.Handler.
type Server struct {
	cfg     Config
	issuer  string // with a trailing slash
	prefix  string // the issuer's path, with a trailing slash
	secure  bool   // the issuer is https: cookies get Secure and __Host-
	store   store.Store
	log     *slog.Logger
	now     func() time.Time
	pages   map[string]func() (*template.Template, error)
	handler http.Handler

	codeLimit    *limiter      // failed user-code entries per address and overall
	accountCodes *limiter      // failed user-code entries per signed-in account and over all accounts
	loginLimit   *limiter      // failed passwords per address
	accountLimit *limiter      // failed passwords per account
	regLimit     *limiter      // new accounts per address
	dcrLimit     *limiter      // client registrations per address
	newClients   *limiter      // new client rows, one key for everybody
	deviceLimit  *limiter      // device authorizations per address
	hashSlots    chan struct{} // bounds argon2 work in flight

	// instanceID names this process in the instances table, whose
	// heartbeats divide the limiters' budgets (heartbeat), and as the
	// holder of the leases on shared jobs (jobs.go).
	instanceID string
	// others is the store's Watcher when other instances may share it,
	// nil otherwise: only then are heartbeats and job leases written, and
	// other instances' changes heard of (watchOthers).
	others store.Watcher

	dummyOnce sync.Once
	dummy     string // see dummyHash

	keyMu    sync.Mutex
	keyCache map[string]crypto.Signer // parsed signing keys by id

	outboxKick chan struct{} // wakes the outbox deliverer
	httpClient *http.Client  // for homeserver calls
	metrics    *metrics

	metadataJSON []byte

	// Caches of the hot paths (cache.go), kept correct by committing.
	tokens  *memo[string, cachedToken]  // introspection, by access-token hash
	polls   *memo[string, pollView]     // polling, by pollKey
	clients *memo[string, cachedClient] // client rows, by id (loadClient)
	pacing  *pacer                      // when each device polled, for slow_down
	// parsedMeta remembers parsed client metadata by its stored bytes.
	parsedMeta *memo[string, *clientmeta.Metadata]
}

// New checks cfg and returns a server on st.
func New(cfg Config, st store.Store) (*Server, error) {
	if st == nil {
		return nil, errors.New("devicegrant: no store")
	}
	issuer, err := checkIssuer(cfg.Issuer)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(issuer)
	if cfg.ServerName == "" {
		cfg.ServerName = u.Host
	}
	cfg.AccessTokenTTL = orDuration(cfg.AccessTokenTTL, 5*time.Minute)
	cfg.DeviceCodeTTL = orDuration(cfg.DeviceCodeTTL, 10*time.Minute)
	cfg.PollInterval = orDuration(cfg.PollInterval, 5*time.Second).Truncate(time.Second)
	if cfg.PollInterval < time.Second {
		cfg.PollInterval = time.Second
	}
	cfg.BrowserSessionTTL = orDuration(cfg.BrowserSessionTTL, 14*24*time.Hour)
	cfg.UserCodeFailures = cfg.UserCodeFailures.orDefault(RateLimit{Burst: 10, Every: time.Minute})
	cfg.UserCodeFailuresGlobal = cfg.UserCodeFailuresGlobal.orDefault(RateLimit{Burst: 100, Every: 6 * time.Second})
	cfg.UserCodeFailuresSignedIn = cfg.UserCodeFailuresSignedIn.orDefault(RateLimit{Burst: 100, Every: 6 * time.Second})
	cfg.LoginFailures = cfg.LoginFailures.orDefault(RateLimit{Burst: 10, Every: 30 * time.Second})
	cfg.AccountLoginFailures = cfg.AccountLoginFailures.orDefault(RateLimit{Burst: 20, Every: time.Minute})
	cfg.ClientRegistrations = cfg.ClientRegistrations.orDefault(RateLimit{Burst: 20, Every: time.Minute})
	cfg.DeviceAuthorizations = cfg.DeviceAuthorizations.orDefault(RateLimit{Burst: 30, Every: 10 * time.Second})
	cfg.NewClients = cfg.NewClients.orDefault(RateLimit{Burst: 200, Every: 15 * time.Second})
	cfg.Registration.PerAddress = cfg.Registration.PerAddress.orDefault(RateLimit{Burst: 3, Every: time.Hour})
	if cfg.HomeserverEndpoint != "" {
		u, err := url.Parse(cfg.HomeserverEndpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("devicegrant: homeserver endpoint %q must be an http(s) URL", cfg.HomeserverEndpoint)
		}
		if cfg.HomeserverSecret == "" {
			return nil, errors.New("devicegrant: a homeserver endpoint needs the shared homeserver secret")
		}
	}
	cfg.OutboxBackoff.Min = orDuration(cfg.OutboxBackoff.Min, time.Second)
	cfg.OutboxBackoff.Max = max(orDuration(cfg.OutboxBackoff.Max, 5*time.Minute), cfg.OutboxBackoff.Min)
	cfg.OutboxLease = orDuration(cfg.OutboxLease, time.Minute)
	cfg.SyncInterval = orDuration(cfg.SyncInterval, time.Hour)
	cfg.HeartbeatInterval = orDuration(cfg.HeartbeatInterval, 10*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		cfg:          cfg,
		issuer:       issuer,
		prefix:       u.Path,
		secure:       u.Scheme == "https",
		store:        st,
		log:          cfg.Logger,
		now:          cfg.Now,
		pages:        lazyPages(),
		codeLimit:    newLimiter(cfg.UserCodeFailures, &cfg.UserCodeFailuresGlobal),
		accountCodes: newLimiter(cfg.UserCodeFailures, &cfg.UserCodeFailuresSignedIn),
		loginLimit:   newLimiter(cfg.LoginFailures, nil),
		accountLimit: newLimiter(cfg.AccountLoginFailures, nil),
		regLimit:     newLimiter(cfg.Registration.PerAddress, nil),
		dcrLimit:     newLimiter(cfg.ClientRegistrations, nil),
		newClients:   newLimiter(cfg.NewClients, nil),
		deviceLimit:  newLimiter(cfg.DeviceAuthorizations, nil),
		hashSlots:    make(chan struct{}, max(2, runtime.NumCPU())),
		instanceID:   randomString(16),
		outboxKick:   make(chan struct{}, 1),
		keyCache:     map[string]crypto.Signer{},
		httpClient:   &http.Client{Timeout: 20 * time.Second},
		tokens:       newMemo[string, cachedToken](tokenCacheSize),
		polls:        newMemo[string, pollView](pollCacheSize),
		clients:      newMemo[string, cachedClient](clientCacheSize),
		pacing:       newPacer(),
		parsedMeta:   newMemo[string, *clientmeta.Metadata](1000),
	}
	s.store = committing{Store: st, s: s}
	// Only a store that several processes share (store.Watcher) may have
	// other instances beside this one, to count and to share jobs with.
	s.others, _ = st.(store.Watcher)
	if s.metrics, err = newMetrics(cfg.Metrics, st); err != nil {
		return nil, err
	}
	if s.metadataJSON, err = s.buildMetadata(); err != nil {
		return nil, err
	}
	if s.handler, err = s.routes(); err != nil {
		return nil, err
	}
	return s, nil
}

// ServeHTTP serves every endpoint and page.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Issuer returns the issuer URL, with its trailing slash.
func (s *Server) Issuer() string { return s.issuer }

// Run does the server's background work until ctx is done: the heartbeat
// that divides the rate limits among the instances sharing the database,
// deleting long-expired rows, delivering homeserver calls, reconciling
// devices with the homeserver (at start, and every SyncInterval), and, on
// a store that announces changes (store.Watcher), hearing of other
// instances' changes to grants. Serving HTTP does not need it, but nothing
// reaches the homeserver without it, and without it another instance's
// approval reaches a device's poll here only after pollCacheTTL.
//
// Several instances on one database share the periodic work (jobs.go):
// cleanup and the sync run on one instance at a time, the sync at most
// once per SyncInterval across them all (the sync at start is skipped
// when another instance synced within the interval), and each outbox
// entry is delivered by the one instance that leased it.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	if s.others != nil {
		wg.Add(2)
		go func() {
			defer wg.Done()
			s.heartbeat(ctx)
		}()
		go func() {
			defer wg.Done()
			s.watchOthers(ctx)
		}()
	}
	// The sync's ticker starts before the sync at start, so that its
	// ticks come before the lease taken then expires: the instance that
	// syncs keeps the lease.
	syncTick := time.NewTicker(s.cfg.SyncInterval)
	defer syncTick.Stop()
	if s.provisioning() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.deliverOutbox(ctx)
		}()
		s.syncDevicesOnce(ctx, true)
	}
	cleanup := time.NewTicker(cleanupEvery)
	defer cleanup.Stop()
	s.cleanupOnce(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-cleanup.C:
			s.cleanupOnce(ctx)
		case <-syncTick.C:
			if s.provisioning() {
				s.syncDevicesOnce(ctx, false)
			}
		}
	}
}

// Cleanup deletes device grants, authorization codes and browser sessions
// that expired more than a day ago (a day of grace lets a late poll still
// get expired_token rather than invalid_grant), token pairs spent more
// than a week ago, clients registered more than unusedClientTTL ago
// that never got a session, the places accounts have not signed in from
// for knownPlaceTTL, and the heartbeats of instances long gone. Run has it
// done every ten minutes, by one instance of those sharing the database;
// Cleanup itself does it now.
func (s *Server) Cleanup(ctx context.Context) (int64, error) {
	n, _, err := s.cleanup(ctx, false)
	return n, err
}

// cleanup is Cleanup, done only if this instance takes the cleanup lease
// when leased is set; ran tells whether it was done.
func (s *Server) cleanup(ctx context.Context, leased bool) (n int64, ran bool, err error) {
	err = s.store.Update(ctx, func(tx store.Tx) error {
		n, ran = 0, false
		if leased && s.others != nil {
			now := s.now()
			got, err := tx.TakeLease(ctx, jobCleanup, s.instanceID, now, now.Add(cleanupEvery))
			if err != nil || !got {
				return err
			}
		}
		ran = true
		expired, err := tx.DeleteExpired(ctx, s.now().Add(-24*time.Hour))
		if err != nil {
			return err
		}
		// Spent refresh tokens are kept a week so that a stolen one
		// presented late is still recognised as reuse (P-RT-2).
		spent, err := tx.DeleteSpentTokens(ctx, s.now().Add(-7*24*time.Hour))
		if err != nil {
			return err
		}
		// Registration is open to anyone, so a client nobody signed in
		// with must not stay forever (issue 10.9).
		unused, err := tx.DeleteUnusedClients(ctx, s.now().Add(-unusedClientTTL))
		if err != nil {
			return err
		}
		places, err := tx.ForgetPlaces(ctx, s.now().Add(-knownPlaceTTL))
		if err != nil {
			return err
		}
		gone, err := tx.DeleteInstances(ctx, s.now().Add(-staleInstance))
		n = expired + spent + unused + places + gone
		return err
	})
	if err != nil {
		return 0, false, fmt.Errorf("devicegrant: cleanup: %w", err)
	}
	// A device that has not polled for a code's lifetime has nothing
	// left to pace; the pacing is this instance's own, so it forgets
	// whether or not it did the cleanup.
	s.pacing.forget(s.now().Add(-s.cfg.DeviceCodeTTL - time.Minute))
	return n, ran, nil
}

// unusedClientTTL is how long a registered client may wait for its first
// session (counted from its last registration) before Cleanup deletes it.
const unusedClientTTL = 24 * time.Hour

func (s *Server) url(path string) string { return s.issuer + strings.TrimPrefix(path, "/") }

// checkIssuer enforces P-DISC-2: an absolute https URL without query or
// fragment; http only on loopback, for development.
func checkIssuer(raw string) (string, error) {
	if raw == "" {
		return "", errors.New("devicegrant: no issuer URL configured")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("devicegrant: issuer %q: %w", raw, err)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("devicegrant: issuer %q must be an absolute URL without user, query or fragment", raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopbackHost(u.Hostname()) {
			return "", fmt.Errorf("devicegrant: issuer %q: plain http is allowed only for a loopback address; use https (TLS here or at a reverse proxy)", raw)
		}
	default:
		return "", fmt.Errorf("devicegrant: issuer %q must be https", raw)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	return u.String(), nil
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func orDuration(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// routes builds the gin engine. Everything hangs under the issuer's path,
// so an issuer such as https://example.org/auth/ works behind a proxy
// that does not strip the prefix.
func (s *Server) routes() (http.Handler, error) {
	e := gin.New()
	e.ContextWithFallback = true
	e.HandleMethodNotAllowed = true
	e.RedirectTrailingSlash = false
	e.RedirectFixedPath = false
	if err := e.SetTrustedProxies(s.cfg.TrustedProxies); err != nil {
		return nil, fmt.Errorf("devicegrant: trusted proxies: %w", err)
	}
	e.Use(s.recover, s.logRequests)
	e.NoRoute(s.notFound)
	e.NoMethod(s.noMethod)

	g := e.Group(s.prefix)
	g.GET("healthz", s.healthz)

	api := g.Group("", cors, s.apiBody)
	for _, p := range []string{
		".well-known/openid-configuration",
		".well-known/oauth-authorization-server",
		"_matrix/client/v1/auth_metadata",
		"_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
	} {
		api.GET(p, s.metadata)
		api.OPTIONS(p, preflight)
	}
	if s.prefix != "/" {
		// RFC 8414 §3: the path-inserted form for issuers with a path.
		e.GET("/.well-known/oauth-authorization-server"+strings.TrimSuffix(s.prefix, "/"), cors, s.metadata)
	}
	for p, h := range map[string]gin.HandlerFunc{
		pathRegister: s.register,
		pathDevice:   s.deviceAuthorization,
		pathToken:    s.token,
		pathRevoke:   s.revoke,
		pathCard:     s.pairingCard,
	} {
		api.POST(p, h)
		api.OPTIONS(p, preflight)
	}
	g.POST(pathIntrospect, s.apiBody, s.introspect) // server to server: no CORS
	api.GET(pathJWKS, s.jwks)
	api.GET(pathUserinfo, s.userinfo)
	api.POST(pathUserinfo, s.userinfo)
	api.OPTIONS(pathUserinfo, preflight)

	pg := g.Group("", s.pageHeaders, s.pageBody)
	pg.GET(pathVerify, s.enterCodePage)
	pg.POST(pathVerify, s.enterCodeSubmit)
	// The QR-friendly verification_uri_complete is upper case (P-DEV-8),
	// but people type URLs in lower case: serve both.
	for _, p := range []string{"D/:code", "d/:code"} {
		pg.GET(p, s.grantPage)
		pg.POST(p, s.grantSubmit)
	}
	if up := strings.ToUpper(s.prefix); up != s.prefix {
		e.GET(up+"D/:code", s.pageHeaders, s.grantPage)
	}
	pg.POST(pathLogin, s.loginSubmit)
	pg.POST(pathLogout, s.logoutSubmit)
	pg.GET(pathAuthorize, s.authorize)
	pg.POST(pathAuthorize, s.authorizeSubmit)
	pg.GET(pathAuthorize+"/continue", s.authorizeContinue)
	pg.GET(pathRegisterPage, s.registerPage)
	pg.POST(pathRegisterPage, s.registerSubmit)
	pg.GET(pathAccount, s.accountPage)
	pg.POST(pathAccount+"/profile", s.profileSubmit)
	pg.POST(pathAccount+"/password", s.passwordSubmit)
	pg.POST(pathAccount+"/sessions/end", s.endSessionSubmit)
	pg.POST(pathAccount+"/deactivate", s.deactivateSubmit)
	pg.POST(pathAccount+"/cross-signing-reset", s.crossSigningResetSubmit)
	g.GET(pathStyle, s.style)
	s.legacyRoutes(g, pg)
	e.GET("/favicon.ico", func(c *gin.Context) { // browsers ask; there is none
		c.Header("Cache-Control", "public, max-age=86400")
		c.Status(http.StatusNoContent)
	})
	return e, nil
}

// Endpoint paths, relative to the issuer. The oauth2/ ones are where a
// homeserver configured for matrix-authentication-service looks (P-HS-2).
const (
	pathRegister     = "oauth2/registration"
	pathDevice       = "oauth2/device"
	pathCard         = "oauth2/device/card"
	pathToken        = "oauth2/token"
	pathRevoke       = "oauth2/revoke"
	pathIntrospect   = "oauth2/introspect"
	pathVerify       = "device"
	pathLogin        = "login"
	pathLogout       = "logout"
	pathAccount      = "account"
	pathAuthorize    = "oauth2/authorize"
	pathJWKS         = "oauth2/keys.json"
	pathUserinfo     = "oauth2/userinfo"
	pathRegisterPage = "register"
	pathStyle        = "static/style.css"
)

// healthzTimeout bounds the store read behind /healthz, as the token
// epoch's read bounds introspection: a database that accepts connections
// but answers nothing must fail the check, not hold it open until the
// balancer gives up, each of its checks holding a request here meanwhile.
const healthzTimeout = 5 * time.Second

func (s *Server) healthz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), healthzTimeout)
	defer cancel()
	if _, err := s.store.Client(ctx, "healthz"); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.ErrorContext(c, "health check: store unreachable", "err", err)
		c.String(http.StatusServiceUnavailable, "store unavailable\n")
		return
	}
	c.String(http.StatusOK, "ok\n")
}

func (s *Server) notFound(c *gin.Context) {
	if strings.HasPrefix(c.Request.URL.Path, s.prefix+"_matrix/") {
		// The Matrix API's own answer for an endpoint not served here
		// (say, a legacy path the proxy sends that is not implemented).
		writeMatrixError(c, mxErr(http.StatusNotFound, "M_UNRECOGNIZED", "this endpoint is not served here"))
		return
	}
	if strings.Contains(c.GetHeader("Accept"), "text/html") {
		s.errorPage(c, http.StatusNotFound, "Not found", "There is no page at this address.")
		return
	}
	c.JSON(http.StatusNotFound, gin.H{"error": "not_found", "error_description": "no such endpoint"})
}

func (s *Server) recover(c *gin.Context) {
	defer func() {
		if r := recover(); r != nil {
			s.log.ErrorContext(c, "panic serving request", "route", c.FullPath(), "panic", r)
			c.AbortWithStatusJSON(http.StatusInternalServerError, gin.H{"error": "server_error"})
		}
	}()
	c.Next()
}

// logRequests logs the route pattern, never the raw path or query: those
// can hold user codes and tokens.
func (s *Server) logRequests(c *gin.Context) {
	start := time.Now()
	c.Next()
	level := slog.LevelDebug
	if c.Writer.Status() >= 500 {
		level = slog.LevelError
	}
	s.log.Log(c, level, "request", "method", c.Request.Method, "route", c.FullPath(),
		"status", c.Writer.Status(), "duration", time.Since(start), "client", c.ClientIP())
}

func cors(c *gin.Context) {
	c.Header("Access-Control-Allow-Origin", "*")
}

func preflight(c *gin.Context) {
	c.Header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
	c.Header("Access-Control-Allow-Headers", "Authorization, Content-Type")
	c.Header("Access-Control-Max-Age", "86400")
	c.Status(http.StatusNoContent)
}
