// Package devtest runs a real devicegrantd core for tests of other
// packages: loopback HTTP, a real SQLite file (or a store given WithStore),
// one account, and a phone that walks the approval pages as a person's
// browser would.
package devtest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/sqlite"
	"github.com/devicegrant/devicegrant/store/storetest"
)

// The account every Server starts with.
const (
	Username = "alice"
	Password = "correct horse battery"
)

// Clock is a settable clock, safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock showing t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Server is a running devicegrantd core.
type Server struct {
	URL    string // the issuer, with its trailing slash
	Server *devicegrant.Server
	Store  store.Store // without the WithRerunUpdates wrapper
	DBPath string      // the SQLite file; empty WithStore
	Clock  *Clock      // nil unless WithClock was given

	noRun            bool
	rerun            bool
	between          storetest.Between
	t                testing.TB
	homeserverSecret string
}

// Option changes how Start builds the server.
type Option func(*devicegrant.Config, *Server)

// WithClock makes the server run on a settable clock.
func WithClock() Option {
	return func(c *devicegrant.Config, s *Server) {
		s.Clock = NewClock(time.Now().Truncate(time.Millisecond))
		c.Now = s.Clock.Now
	}
}

// WithoutRun leaves the background work (Server.Run: homeserver calls,
// cleanup) stopped, as if the process died before doing it.
func WithoutRun() Option {
	return func(_ *devicegrant.Config, s *Server) { s.noRun = true }
}

// WithRerunUpdates makes the server's store run every Update function
// twice, the first run rolled back (storetest.Rerun), with between (may be
// nil) in the middle: a function that is not safe to re-run, as the store
// contract requires, then fails the test on SQLite too. Server.Store stays
// the plain store.
func WithRerunUpdates(between storetest.Between) Option {
	return func(_ *devicegrant.Config, s *Server) { s.rerun, s.between = true, between }
}

// WithStore runs the core on st (say, a PostgreSQL store) instead of a
// new SQLite file; Start closes it when the test ends.
func WithStore(st store.Store) Option {
	return func(_ *devicegrant.Config, s *Server) { s.Store = st }
}

// WithConfig lets a test change any setting.
func WithConfig(f func(*devicegrant.Config)) Option {
	return func(c *devicegrant.Config, _ *Server) { f(c) }
}

// Start runs a server, with its background work (Server.Run), until the
// test ends. Its defaults suit tests: a one second poll interval, server
// name example.org, HomeserverSecret for introspection, homeserver retries
// from 20 ms to 200 ms, logs discarded.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	gin.SetMode(gin.ReleaseMode)
	ctx := context.Background()
	s := &Server{t: t}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.URL = "http://" + ln.Addr().String() + "/"
	cfg := devicegrant.Config{
		Issuer:           s.URL,
		ServerName:       "example.org",
		HomeserverSecret: HomeserverSecret,
		PollInterval:     time.Second,
		OutboxBackoff:    devicegrant.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, o := range opts {
		o(&cfg, s)
	}
	s.homeserverSecret = cfg.HomeserverSecret
	if s.Store == nil {
		s.DBPath = filepath.Join(t.TempDir(), "devicegrantd.db")
		if s.Store, err = sqlite.Open(ctx, s.DBPath); err != nil {
			t.Fatal(err)
		}
	}
	st := s.Store
	t.Cleanup(func() { st.Close() })
	core := st
	if s.rerun {
		core = storetest.Rerun(st, s.between)
	}
	srv, err := devicegrant.New(cfg, core)
	if err != nil {
		t.Fatal(err)
	}
	s.Server = srv
	hs := &httptest.Server{Listener: ln, Config: &http.Server{Handler: srv}}
	hs.Start()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if !s.noRun {
			srv.Run(runCtx)
		}
	}()
	// Cleanups run last-in first-out: stop the background work, then the
	// HTTP server, then close the store (registered first, above).
	t.Cleanup(hs.Close)
	t.Cleanup(func() { stop(); <-done })
	if _, err := srv.CreateUser(ctx, Username, Password, "Alice"); err != nil {
		t.Fatal(err)
	}
	return s
}
