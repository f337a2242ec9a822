package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/devicegrant/devicegrant/devicegrant"
)

// config is the YAML file's shape. Every field can also be set by the
// environment variable listed in settings; the environment wins.
type config struct {
	Listen     string     `yaml:"listen"`
	Issuer     string     `yaml:"issuer"`
	Database   string     `yaml:"database"`
	ServerName string     `yaml:"server_name"`
	Homeserver homeserver `yaml:"homeserver"`
	TLS        tlsConfig  `yaml:"tls"`

	AccessTokenTTL    time.Duration `yaml:"access_token_ttl"`
	DeviceCodeTTL     time.Duration `yaml:"device_code_ttl"`
	PollInterval      time.Duration `yaml:"poll_interval"`
	BrowserSessionTTL time.Duration `yaml:"browser_session_ttl"`

	RateLimits struct {
		UserCodeFailures       rateLimit `yaml:"user_code_failures"`
		UserCodeFailuresGlobal rateLimit `yaml:"user_code_failures_global"`
		SignedInCodeFailures   rateLimit `yaml:"user_code_failures_signed_in"`
		LoginFailures          rateLimit `yaml:"login_failures"`
		AccountLoginFailures   rateLimit `yaml:"account_login_failures"`
		ClientRegistrations    rateLimit `yaml:"client_registrations"`
		DeviceAuthorizations   rateLimit `yaml:"device_authorizations"`
		NewClients             rateLimit `yaml:"new_clients"`
		Registrations          rateLimit `yaml:"registrations"`
	} `yaml:"rate_limits"`

	TrustedProxies []string `yaml:"trusted_proxies"`
	MetricsListen  string   `yaml:"metrics_listen"`
	MetricsPprof   bool     `yaml:"metrics_pprof"`
	// ShutdownDrain: how long serve keeps answering after SIGTERM (see
	// drain in serve.go).
	ShutdownDrain time.Duration `yaml:"shutdown_drain"`

	Registration struct {
		Enabled  bool   `yaml:"enabled"`
		TermsURL string `yaml:"terms_url"`
	} `yaml:"registration"`

	// LegacyLogin: both default to true (set before the file is read).
	LegacyLogin struct {
		Enabled  bool `yaml:"enabled"`
		Password bool `yaml:"password"`
	} `yaml:"legacy_login"`

	Display struct {
		Panel string `yaml:"panel"`
	} `yaml:"display"`

	Log struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"`
	} `yaml:"log"`
}

type homeserver struct {
	Endpoint   string `yaml:"endpoint"`
	Secret     string `yaml:"secret"`
	SecretFile string `yaml:"secret_file"`
	// OutboxLease: see devicegrant.Config.OutboxLease.
	OutboxLease time.Duration `yaml:"outbox_lease"`
}

type tlsConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// rateLimit is written "BURST/EVERY", e.g. "10/1m": ten at once, then one
// a minute.
type rateLimit devicegrant.RateLimit

func (r *rateLimit) UnmarshalText(b []byte) error {
	burst, every, ok := strings.Cut(string(b), "/")
	n, err1 := strconv.Atoi(strings.TrimSpace(burst))
	d, err2 := time.ParseDuration(strings.TrimSpace(every))
	if !ok || err1 != nil || err2 != nil || n <= 0 || d <= 0 {
		return fmt.Errorf("rate limit %q: want BURST/EVERY, e.g. 10/1m", b)
	}
	*r = rateLimit{Burst: n, Every: d}
	return nil
}

func (r rateLimit) String() string {
	if r.Burst == 0 {
		return ""
	}
	return fmt.Sprintf("%d/%s", r.Burst, r.Every)
}

// setting ties a config field to its environment variable and its help.
type setting struct {
	yaml, env, help, def string
	field                func(*config) any
}

// settings lists everything configurable; --help prints it.
func settings() []setting {
	return []setting{
		{"listen", "DEVICEGRANTD_LISTEN", "host:port to listen on", "127.0.0.1:8080", func(c *config) any { return &c.Listen }},
		{"issuer", "DEVICEGRANTD_ISSUER", "public base URL; https unless loopback", "http://<listen>/", func(c *config) any { return &c.Issuer }},
		{"database", "DEVICEGRANTD_DATABASE", "SQLite database file (created mode 0600), or a postgres:// URL for PostgreSQL", "./devicegrantd.db", func(c *config) any { return &c.Database }},
		{"server_name", "DEVICEGRANTD_SERVER_NAME", "Matrix server name, as in @alice:<server_name>", "the issuer's host", func(c *config) any { return &c.ServerName }},
		{"homeserver.endpoint", "DEVICEGRANTD_HOMESERVER_ENDPOINT", "homeserver base URL for /_synapse/mas provisioning (Synapse's matrix_authentication_service mode)", "standalone", func(c *config) any { return &c.Homeserver.Endpoint }},
		{"homeserver.secret", "DEVICEGRANTD_HOMESERVER_SECRET", "shared secret: the homeserver presents it at introspection, devicegrantd at /_synapse/mas", "none", func(c *config) any { return &c.Homeserver.Secret }},
		{"homeserver.secret_file", "DEVICEGRANTD_HOMESERVER_SECRET_FILE", "file holding that secret (instead of secret)", "", func(c *config) any { return &c.Homeserver.SecretFile }},
		{"homeserver.outbox_lease", "DEVICEGRANTD_HOMESERVER_OUTBOX_LEASE", "how long an instance holds a homeserver call it makes; calls of an instance that died wait this long for another (each call is cut off at half of it)", "1m", func(c *config) any { return &c.Homeserver.OutboxLease }},
		{"tls.cert_file", "DEVICEGRANTD_TLS_CERT_FILE", "serve TLS with this certificate chain (PEM)", "plain HTTP", func(c *config) any { return &c.TLS.CertFile }},
		{"tls.key_file", "DEVICEGRANTD_TLS_KEY_FILE", "and this private key (PEM)", "", func(c *config) any { return &c.TLS.KeyFile }},
		{"access_token_ttl", "DEVICEGRANTD_ACCESS_TOKEN_TTL", "access token lifetime", "5m", func(c *config) any { return &c.AccessTokenTTL }},
		{"device_code_ttl", "DEVICEGRANTD_DEVICE_CODE_TTL", "how long a device code waits for approval", "10m", func(c *config) any { return &c.DeviceCodeTTL }},
		{"poll_interval", "DEVICEGRANTD_POLL_INTERVAL", "minimum time between a device's polls", "5s", func(c *config) any { return &c.PollInterval }},
		{"browser_session_ttl", "DEVICEGRANTD_BROWSER_SESSION_TTL", "how long a person stays signed in on their phone", "336h", func(c *config) any { return &c.BrowserSessionTTL }},
		{"rate_limits.user_code_failures", "DEVICEGRANTD_USER_CODE_FAILURES", "wrong user codes per client address, or per account when signed in, BURST/EVERY", "10/1m", func(c *config) any { return &c.RateLimits.UserCodeFailures }},
		{"rate_limits.user_code_failures_global", "DEVICEGRANTD_USER_CODE_FAILURES_GLOBAL", "wrong user codes from all addresses together", "100/6s", func(c *config) any { return &c.RateLimits.UserCodeFailuresGlobal }},
		{"rate_limits.user_code_failures_signed_in", "DEVICEGRANTD_USER_CODE_FAILURES_SIGNED_IN", "wrong user codes from all signed-in accounts together", "100/6s", func(c *config) any { return &c.RateLimits.SignedInCodeFailures }},
		{"rate_limits.login_failures", "DEVICEGRANTD_LOGIN_FAILURES", "wrong passwords per client address (IPv6: per /64)", "10/30s", func(c *config) any { return &c.RateLimits.LoginFailures }},
		{"rate_limits.account_login_failures", "DEVICEGRANTD_ACCOUNT_LOGIN_FAILURES", "wrong passwords per account, from all addresses", "20/1m", func(c *config) any { return &c.RateLimits.AccountLoginFailures }},
		{"rate_limits.client_registrations", "DEVICEGRANTD_CLIENT_REGISTRATIONS", "client registrations per address", "20/1m", func(c *config) any { return &c.RateLimits.ClientRegistrations }},
		{"rate_limits.device_authorizations", "DEVICEGRANTD_DEVICE_AUTHORIZATIONS", "device authorization requests per address", "30/10s", func(c *config) any { return &c.RateLimits.DeviceAuthorizations }},
		{"rate_limits.new_clients", "DEVICEGRANTD_NEW_CLIENTS", "registrations that add a client, from all addresses", "200/15s", func(c *config) any { return &c.RateLimits.NewClients }},
		{"rate_limits.registrations", "DEVICEGRANTD_REGISTRATIONS", "self-registration attempts per address that reach the homeserver or argon2 (each account made is one)", "3/1h", func(c *config) any { return &c.RateLimits.Registrations }},
		{"trusted_proxies", "DEVICEGRANTD_TRUSTED_PROXIES", "proxy addresses/CIDRs whose X-Forwarded-For is believed: a YAML list ([127.0.0.1]), comma-separated in the environment", "none", func(c *config) any { return &c.TrustedProxies }},
		{"registration.enabled", "DEVICEGRANTD_REGISTRATION", "let people create their own accounts (prompt=create): true or false", "false", func(c *config) any { return &c.Registration.Enabled }},
		{"registration.terms_url", "DEVICEGRANTD_TERMS_URL", "terms people must accept to register (put a version in the URL)", "none", func(c *config) any { return &c.Registration.TermsURL }},
		{"legacy_login.enabled", "DEVICEGRANTD_LEGACY_LOGIN", "serve the legacy Matrix login API (/_matrix/client/v3/login, /refresh, /logout) for clients without OAuth 2.0: true or false", "true", func(c *config) any { return &c.LegacyLogin.Enabled }},
		{"legacy_login.password", "DEVICEGRANTD_LEGACY_LOGIN_PASSWORD", "offer m.login.password there (false leaves SSO and m.login.token)", "true", func(c *config) any { return &c.LegacyLogin.Password }},
		{"shutdown_drain", "DEVICEGRANTD_SHUTDOWN_DRAIN", "on SIGTERM, keep serving this long first, /healthz answering 503 and each connection closed after its next answer, so that a load balancer stops sending before the port closes", "0s", func(c *config) any { return &c.ShutdownDrain }},
		{"metrics_listen", "DEVICEGRANTD_METRICS_LISTEN", "host:port serving Prometheus /metrics (keep it private)", "off", func(c *config) any { return &c.MetricsListen }},
		{"metrics_pprof", "DEVICEGRANTD_METRICS_PPROF", "also serve Go's profiler (/debug/pprof/) on metrics_listen, to profile before optimising: true or false", "false", func(c *config) any { return &c.MetricsPprof }},
		{"display.panel", "DEVICEGRANTD_DISPLAY", "appliance mode: show the newest pending pairing on ssd1306:/dev/i2c-1:0x3c, sh1106:..., epd, fb:/dev/fb1, png:FILE:WxH or terminal", "off", func(c *config) any { return &c.Display.Panel }},
		{"log.level", "DEVICEGRANTD_LOG_LEVEL", "debug, info, warn or error", "info", func(c *config) any { return &c.Log.Level }},
		{"log.format", "DEVICEGRANTD_LOG_FORMAT", "text or json", "text", func(c *config) any { return &c.Log.Format }},
	}
}

// loadConfig reads the YAML file (if any), then the environment, then
// fills defaults and checks the result.
func loadConfig(path string, getenv func(string) string) (*config, error) {
	c := &config{}
	c.LegacyLogin.Enabled, c.LegacyLogin.Password = true, true
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		// An empty file is an empty configuration (io.EOF).
		if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	for _, s := range settings() {
		v := getenv(s.env)
		if v == "" {
			continue
		}
		if err := setFromString(s.field(c), v); err != nil {
			return nil, fmt.Errorf("%s: %w", s.env, err)
		}
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.Database == "" {
		c.Database = "./devicegrantd.db"
	}
	if c.Issuer == "" {
		host, _, err := net.SplitHostPort(c.Listen)
		if err != nil {
			return nil, fmt.Errorf("listen %q: %w", c.Listen, err)
		}
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("listening on %s, which is not loopback: set issuer (DEVICEGRANTD_ISSUER) to the public https URL", c.Listen)
		}
		scheme := "http"
		if c.TLS.CertFile != "" {
			scheme = "https"
		}
		c.Issuer = scheme + "://" + c.Listen + "/"
	}
	if c.ServerName == "" {
		u, err := url.Parse(c.Issuer)
		if err != nil {
			return nil, fmt.Errorf("issuer %q: %w", c.Issuer, err)
		}
		c.ServerName = u.Host
	}
	if c.Homeserver.Secret == "" && c.Homeserver.SecretFile != "" {
		b, err := os.ReadFile(c.Homeserver.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("homeserver secret file: %w", err)
		}
		c.Homeserver.Secret = strings.TrimSpace(string(b))
		if c.Homeserver.Secret == "" {
			return nil, fmt.Errorf("homeserver secret file %s is empty", c.Homeserver.SecretFile)
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return nil, errors.New("tls: set both cert_file and key_file, or neither")
	}
	return c, nil
}

// setFromString parses an environment variable into a config field.
func setFromString(p any, v string) error {
	switch p := p.(type) {
	case *string:
		*p = v
	case *time.Duration:
		d, err := time.ParseDuration(v)
		if err != nil {
			return err
		}
		*p = d
	case *rateLimit:
		return p.UnmarshalText([]byte(v))
	case *bool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("want true or false: %w", err)
		}
		*p = b
	case *[]string:
		*p = nil
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				*p = append(*p, s)
			}
		}
	default:
		return fmt.Errorf("unsupported setting type %s", reflect.TypeOf(p))
	}
	return nil
}

func (c *config) server() devicegrant.Config {
	dc := devicegrant.Config{
		Issuer:                 c.Issuer,
		ServerName:             c.ServerName,
		HomeserverSecret:       c.Homeserver.Secret,
		HomeserverEndpoint:     c.Homeserver.Endpoint,
		OutboxLease:            c.Homeserver.OutboxLease,
		AccessTokenTTL:         c.AccessTokenTTL,
		DeviceCodeTTL:          c.DeviceCodeTTL,
		PollInterval:           c.PollInterval,
		BrowserSessionTTL:      c.BrowserSessionTTL,
		UserCodeFailures:       devicegrant.RateLimit(c.RateLimits.UserCodeFailures),
		UserCodeFailuresGlobal: devicegrant.RateLimit(c.RateLimits.UserCodeFailuresGlobal),
		LoginFailures:          devicegrant.RateLimit(c.RateLimits.LoginFailures),
		AccountLoginFailures:   devicegrant.RateLimit(c.RateLimits.AccountLoginFailures),
		ClientRegistrations:    devicegrant.RateLimit(c.RateLimits.ClientRegistrations),
		DeviceAuthorizations:   devicegrant.RateLimit(c.RateLimits.DeviceAuthorizations),
		NewClients:             devicegrant.RateLimit(c.RateLimits.NewClients),
		TrustedProxies:         c.TrustedProxies,
		LegacyLogin:            devicegrant.LegacyLogin{Disabled: !c.LegacyLogin.Enabled, PasswordDisabled: !c.LegacyLogin.Password},
		Registration:           devicegrant.Registration{Enabled: c.Registration.Enabled, TermsURL: c.Registration.TermsURL, PerAddress: devicegrant.RateLimit(c.RateLimits.Registrations)},
	}
	dc.UserCodeFailuresSignedIn = devicegrant.RateLimit(c.RateLimits.SignedInCodeFailures)
	return dc
}
