package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/devicegrant/devicegrant/devicegrant"
)

func serve(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "YAML configuration `FILE`")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: devicegrantd [serve] [--config FILE]\n\nRuns the server until SIGINT or SIGTERM.\n\nFlags:\n")
		fs.PrintDefaults()
		printSettings(stderr)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, cfg)
	if err != nil {
		return err
	}
	sd, err := newNotifier(getenv)
	if err != nil {
		return err
	}

	st, err := openStore(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer st.Close()

	gin.SetMode(gin.ReleaseMode)
	sc := cfg.server()
	sc.Logger = log
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sc.Metrics = reg
	srv, err := devicegrant.New(sc, st)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	var handler http.Handler = srv
	if cfg.TLS.CertFile != "" {
		handler = hsts(srv)
	}
	var draining atomic.Bool
	handler = drain(handler, &draining, strings.TrimSuffix(issuerPath(srv.Issuer()), "/")+"/healthz")
	// Bodies are capped by the server at devicegrant.MaxBodyBytes; these
	// bound what a slow or bloated client can hold before a handler runs.
	hs := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Run outlives the signal by the drain, so that an instance still
	// answering keeps hearing the others' grant notices and heartbeating.
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		srv.Run(runCtx)
	}()
	defer func() { stopRun(); <-runDone }()
	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		if cfg.MetricsPprof {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		ms := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go ms.Serve(mln)
		defer ms.Close()
	}
	if cfg.Display.Panel != "" {
		if err := appliance(ctx, srv, cfg.Display.Panel, log); err != nil {
			return err
		}
	}

	users, err := st.Users(ctx)
	if err != nil {
		return err
	}
	welcome(stderr, cfg, srv.Issuer(), len(users), ln.Addr().String())
	log.Info("listening", "addr", ln.Addr().String(), "issuer", srv.Issuer(), "database", shownDatabase(cfg.Database),
		"homeserver_secret", cfg.Homeserver.Secret != "", "homeserver", cfg.Homeserver.Endpoint,
		"legacy_login", cfg.LegacyLogin.Enabled, "legacy_password_login", cfg.LegacyLogin.Enabled && cfg.LegacyLogin.Password)

	errc := make(chan error, 1)
	go func() {
		if cfg.TLS.CertFile != "" {
			errc <- hs.ServeTLS(ln, cfg.TLS.CertFile, cfg.TLS.KeyFile)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	// Listening and serving: systemd may start what comes after us.
	if err := sd.notify("READY=1\nSTATUS=listening on " + ln.Addr().String()); err != nil {
		log.Warn("telling systemd we are ready", "err", err)
	}
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	if err := sd.notify("STOPPING=1"); err != nil {
		log.Warn("telling systemd we are stopping", "err", err)
	}
	if cfg.ShutdownDrain > 0 {
		log.Info("draining before shutting down", "for", cfg.ShutdownDrain)
		draining.Store(true)
		time.Sleep(cfg.ShutdownDrain)
	}
	// Shutdown finishes the requests in flight; the outbox deliverer,
	// stopped at the same time, releases the call it held (run waits for
	// it in the deferred <-runDone).
	log.Info("shutting down")
	stopRun()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// drain wraps the server for the time between SIGTERM and closing the
// port, when shutdown_drain is set. Go's Shutdown closes the port and every idle
// connection at once; a load balancer that keeps connections to the
// instance alive may be sending a request on one of them at that moment,
// and gets no answer, which it cannot safely retry for a POST (it may
// have taken effect). While draining, the instance serves on, but
// /healthz answers 503, so that a health-checking balancer takes it out,
// and every answer closes its connection, so that the balancer holds no
// idle connection to it when the port closes: requests then meet a
// refused connection, which any balancer tries on the next instance.
// With TestRollingUpgrade's clients speeded up to some 250 requests a
// second per instance, a stop without a drain cut off about one request in
// three restarts; a drain without health checks at the balancer, about
// one in two (the port's close still meets connections being opened); a
// 1 s drain with checks every 100 ms, none in nine.
func drain(next http.Handler, draining *atomic.Bool, healthz string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if draining.Load() {
			w.Header().Set("Connection", "close")
			if r.URL.Path == healthz {
				http.Error(w, "shutting down", http.StatusServiceUnavailable)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// mustPath is the path of a URL the server already parsed (its issuer).
func issuerPath(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "/"
	}
	return p.Path
}

// maxHeaderBytes caps a request's headers (net/http allows 4 KiB more for
// its own bookkeeping): OAuth requests carry at most a Basic or Bearer
// credential and the pages two small cookies.
const maxHeaderBytes = 16 << 10

// hsts tells browsers to use https only, for a year, when the daemon
// terminates TLS itself (behind a reverse proxy, the proxy's job). It
// leaves out includeSubDomains: other hosts under the issuer's domain are
// not the daemon's to decide for.
func hsts(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", "max-age=31536000")
		next.ServeHTTP(w, r)
	})
}

// welcome tells a person who just started the daemon what to do next.
func welcome(w io.Writer, cfg *config, issuer string, users int, addr string) {
	fmt.Fprintf(w, `
devicegrantd is running.
  listening on   %s
  issuer         %s
  discovery      %s.well-known/openid-configuration
  approval page  %sdevice   (open it on a phone, or scan a device's QR code)
  database       %s
`, addr, issuer, issuer, issuer, shownDatabase(cfg.Database))
	if cfg.Homeserver.Secret == "" {
		fmt.Fprintln(w, "  introspection  trusted confidential clients only (set DEVICEGRANTD_HOMESERVER_SECRET for a homeserver)")
	}
	if cfg.Homeserver.Endpoint != "" {
		fmt.Fprintf(w, "  homeserver     %s (users and devices provisioned through /_synapse/mas)\n", cfg.Homeserver.Endpoint)
	}
	if users == 0 {
		args := ""
		if cfg.Database != "./devicegrantd.db" {
			args = " (with the same configuration)"
		}
		fmt.Fprintf(w, `
No accounts yet. Create one%s:
  go run ./cmd/devicegrantd user add alice
`, args)
	}
	fmt.Fprintln(w)
}

func newLogger(w io.Writer, cfg *config) (*slog.Logger, error) {
	var level slog.Level
	if cfg.Log.Level != "" {
		if err := level.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
			return nil, fmt.Errorf("log level: %w", err)
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(cfg.Log.Format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", cfg.Log.Format)
	}
}

// parseFlags parses, turning -h into a clean exit and flag errors into
// errUsage (the flag package already printed them).
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return errHelp
	}
	if err != nil {
		return errUsage
	}
	return nil
}
