package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/devicegrant/devicegrant/store/postgres"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

const doctorUsage = `Usage: devicegrantd doctor [--json] [--config FILE]

Checks what usually breaks a deployment, with the same configuration as
the daemon, and prints one line per check: "ok", "FAIL" with what is wrong
and how to fix it, or "skip" when an earlier failure makes a check
meaningless. It changes nothing. Exit status 0 when every check passes,
1 otherwise.

  configuration  the file and environment parse
  issuer         https, or http on a loopback address
  database       exists, is mode 0600 (with its -wal and -shm files) and
                 passes PRAGMA integrity_check; a postgres:// URL: the
                 server answers and the schema is up to date
  notices        (PostgreSQL) a NOTIFY reaches another connection that
                 LISTENs, as the instances' notices of changed grants must
  listener       the daemon answers at the issuer's URL with its own issuer
  homeserver     (with homeserver.endpoint) it answers, accepts the shared
                 secret on /_synapse/mas/*, serves our issuer at
                 /_matrix/client/v1/auth_metadata, and its clock (Date
                 header) agrees with ours within 5 seconds
`

// maxClockSkew is how far the homeserver's clock may be from ours. Token
// lifetimes are minutes, but introspection caching and expires_in make
// larger differences show up as sessions that end early or late.
const maxClockSkew = 5 * time.Second

// doctorLocalpart is asked about with is_localpart_available to try the
// shared secret; the call changes nothing on the homeserver.
const doctorLocalpart = "devicegrantd-doctor"

// result is one check's outcome.
type result struct {
	Check  string `json:"check"`
	Status string `json:"status"` // ok, fail or skip
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// errProblems is returned when a check failed; the lines already say why.
var errProblems = errors.New("the doctor found problems")

func doctorCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, doctorUsage, "\nFlags:\n"); fs.PrintDefaults() }
	configPath := fs.String("config", "", "YAML configuration `FILE`")
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fmt.Fprint(stderr, doctorUsage)
		return errUsage
	}
	d := &doctor{client: &http.Client{Timeout: 5 * time.Second}}
	d.run(ctx, *configPath, getenv)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(d.results); err != nil {
			return err
		}
	} else {
		for _, r := range d.results {
			fmt.Fprintln(stdout, r.line())
		}
	}
	if n := d.failures(); n > 0 {
		return fmt.Errorf("%w: %d check(s) failed", errProblems, n)
	}
	return nil
}

func (r result) line() string {
	switch r.Status {
	case "ok":
		return fmt.Sprintf("ok    %-19s %s", r.Check, r.Detail)
	case "skip":
		return fmt.Sprintf("skip  %-19s %s", r.Check, r.Detail)
	}
	return fmt.Sprintf("FAIL  %-19s %s. Fix: %s", r.Check, r.Detail, r.Fix)
}

type doctor struct {
	client  *http.Client
	results []result
}

func (d *doctor) ok(check, detail string, args ...any) {
	d.results = append(d.results, result{Check: check, Status: "ok", Detail: fmt.Sprintf(detail, args...)})
}

func (d *doctor) skip(check, detail string) {
	d.results = append(d.results, result{Check: check, Status: "skip", Detail: detail})
}

func (d *doctor) fail(check, detail, fix string) {
	d.results = append(d.results, result{Check: check, Status: "fail", Detail: detail, Fix: fix})
}

func (d *doctor) failures() int {
	n := 0
	for _, r := range d.results {
		if r.Status == "fail" {
			n++
		}
	}
	return n
}

func (d *doctor) run(ctx context.Context, configPath string, getenv func(string) string) {
	cfg, err := loadConfig(configPath, getenv)
	if err != nil {
		d.fail("configuration", err.Error(), "correct that setting; \"devicegrantd --help\" lists every key and variable")
		for _, c := range []string{"issuer", "database", "listener", "homeserver"} {
			d.skip(c, "needs a configuration that parses")
		}
		return
	}
	where := "defaults and environment"
	if configPath != "" {
		where = configPath
	}
	d.ok("configuration", "%s parses", where)
	issuerOK := d.checkIssuer(cfg.Issuer)
	d.checkDatabase(ctx, cfg.Database)
	if issuerOK {
		d.checkListener(ctx, cfg)
	} else {
		// The daemon refuses to start with such an issuer.
		d.skip("listener", "needs a valid issuer")
	}
	d.checkHomeserver(ctx, cfg)
}

func (d *doctor) checkIssuer(issuer string) bool {
	u, err := url.Parse(issuer)
	switch {
	case err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "":
		d.fail("issuer", fmt.Sprintf("%q is not an absolute URL without query or fragment", issuer),
			"set issuer to the public https URL clients reach devicegrantd at, e.g. https://auth.example.org/")
	case u.Scheme == "https":
		d.ok("issuer", "%s is https", issuer)
	case u.Scheme == "http" && isLoopback(u.Hostname()):
		d.ok("issuer", "%s is plain http on loopback: fine on this machine, not for phones", issuer)
	default:
		d.fail("issuer", issuer+" is not https (plain http is allowed only on loopback)",
			"set issuer to the https URL of devicegrantd (TLS here with tls.cert_file, or at a reverse proxy)")
	}
	return d.results[len(d.results)-1].Status == "ok"
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// pgCheckTimeout bounds the doctor's PostgreSQL checks together.
const pgCheckTimeout = 10 * time.Second

func (d *doctor) checkDatabase(ctx context.Context, path string) {
	if postgres.IsURL(path) {
		// A server that accepts and then says nothing (hung, or half of a
		// failover) would otherwise hold the doctor until TCP gives up, or
		// for ever (TestDoctorSilentPostgres).
		ctx, cancel := context.WithTimeout(ctx, pgCheckTimeout)
		defer cancel()
		current, latest, err := postgres.SchemaVersion(ctx, path)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				err = fmt.Errorf("%s gave no answer within %s: %w", shownDatabase(path), pgCheckTimeout, err)
			}
			d.fail("database", err.Error(), "check the database URL, that PostgreSQL is reachable from here, and the daemon's log")
			return
		case current == 0:
			d.fail("database", shownDatabase(path)+" answers but has no devicegrant schema yet",
				"run devicegrantd migrate, or start the daemon, which creates it; if it should exist, check the database name and search_path in the URL")
		case current < latest:
			d.fail("database", fmt.Sprintf("%s has schema version %d, this program's %d", shownDatabase(path), current, latest),
				"run devicegrantd migrate (the daemon also migrates when it starts), after a backup; see Upgrading in the README")
		case current > latest:
			d.fail("database", fmt.Sprintf("the schema of %s at version %d is newer than this program knows (%d)", shownDatabase(path), current, latest),
				"run the newer devicegrantd that migrated it (this binary would refuse to start)")
		default:
			d.ok("database", "%s is reachable and its schema up to date", shownDatabase(path))
		}
		// The schema does not matter to notices, and an operator
		// migrating next wants to know about a pooler now.
		if err := postgres.CheckNotices(ctx, path, 3*time.Second); err != nil {
			d.fail("notices", err.Error(), "connect devicegrantd to PostgreSQL itself or to a session-mode pool: each instance LISTENs for the others' changes to device grants")
			return
		}
		d.ok("notices", "a NOTIFY on one connection reaches another, as instances tell each other of changed grants")
		return
	}
	fi, err := os.Stat(path)
	if err != nil {
		fix := "check database in the configuration; the daemon creates the file when it first starts"
		if errors.Is(err, os.ErrPermission) {
			fix = "run the doctor as the daemon's user (e.g. sudo -u devicegrantd, or systemd-run -p DynamicUser=yes ...)"
		}
		d.fail("database", err.Error(), fix)
		return
	}
	for _, name := range []string{path, path + "-wal", path + "-shm"} {
		st := fi
		if name != path {
			if st, err = os.Stat(name); err != nil {
				continue
			}
		}
		if perm := st.Mode().Perm(); perm&0o077 != 0 {
			d.fail("database", fmt.Sprintf("%s is mode %04o: other users can read the password and token hashes", name, perm),
				fmt.Sprintf("chmod 600 %s (and its -wal and -shm files)", path))
			return
		}
		// An admin command run as root beside the daemon can leave -wal
		// or -shm owned by root, and the daemon then fails to write.
		dbUID, ok1 := owner(fi)
		uid, ok2 := owner(st)
		if ok1 && ok2 && uid != dbUID {
			d.fail("database", fmt.Sprintf("%s is owned by uid %d but the database by uid %d: the daemon may be unable to write", name, uid, dbUID),
				fmt.Sprintf("chown --reference=%s %s, and run admin commands as the daemon's user (sudo -u devicegrantd)", path, name))
			return
		}
	}
	if err := sqlite.Check(ctx, path); err != nil {
		d.fail("database", err.Error(), "stop the daemon and restore the latest backup (see \"devicegrantd backup --help\")")
		return
	}
	d.ok("database", "%s is mode 0600 and passes integrity_check", path)
}

// get fetches a URL and returns the response with up to 1 MiB of its body,
// and when the request went out and came back (to bracket a Date header).
func (d *doctor) get(ctx context.Context, u, bearer string) (resp *http.Response, body []byte, sent, back time.Time, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, sent, back, err
	}
	req.Header.Set("Accept", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	sent = time.Now()
	resp, err = d.client.Do(req)
	if err != nil {
		return nil, nil, sent, back, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	back = time.Now()
	return resp, body, sent, back, err
}

// issuerIn reads the issuer of a metadata document, with a trailing slash
// as devicegrantd writes it.
func issuerIn(body []byte) (string, bool) {
	var md struct {
		Issuer string `json:"issuer"`
	}
	if json.Unmarshal(body, &md) != nil || md.Issuer == "" {
		return "", false
	}
	return md.Issuer, true
}

func sameIssuer(a, b string) bool {
	return strings.TrimSuffix(a, "/") == strings.TrimSuffix(b, "/")
}

func (d *doctor) checkListener(ctx context.Context, cfg *config) {
	u := cfg.Issuer + ".well-known/openid-configuration"
	resp, body, _, _, err := d.get(ctx, u, "")
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		d.fail("listener", fmt.Sprintf("%s answers with a certificate this machine does not trust: %v", u, certErr.Err),
			"serve a certificate from a public CA (e.g. Let's Encrypt at the reverse proxy) for the issuer's host name; phones will not trust this one either")
		return
	}
	if err != nil {
		d.fail("listener", fmt.Sprintf("nothing answers at %s: %v", u, unwrapURLError(err)),
			fmt.Sprintf("start the daemon (systemctl start devicegrantd), and make the issuer's URL reach its listen address %s (directly or through the reverse proxy)", cfg.Listen))
		return
	}
	got, ok := issuerIn(body)
	switch {
	case resp.StatusCode != http.StatusOK || !ok:
		d.fail("listener", fmt.Sprintf("%s answered %s without OpenID metadata", u, resp.Status),
			"point the issuer's URL (or the reverse proxy's route for it) at devicegrantd's listen address "+cfg.Listen)
	case !sameIssuer(got, cfg.Issuer):
		d.fail("listener", fmt.Sprintf("%s serves issuer %s, not %s", u, got, cfg.Issuer),
			"give the daemon and this command the same configuration, or route the issuer's URL to this daemon")
	default:
		d.ok("listener", "%s answers with our issuer", u)
	}
}

func (d *doctor) checkHomeserver(ctx context.Context, cfg *config) {
	hs := strings.TrimSuffix(cfg.Homeserver.Endpoint, "/")
	if hs == "" {
		d.skip("homeserver", "no homeserver.endpoint: standalone, nothing is provisioned")
		return
	}
	resp, _, sent, back, err := d.get(ctx, hs+"/_matrix/client/versions", "")
	if err != nil {
		d.fail("homeserver", fmt.Sprintf("cannot reach the homeserver at %s: %v", hs, unwrapURLError(err)),
			"start the homeserver, or set homeserver.endpoint to its client API URL as seen from this machine (e.g. http://127.0.0.1:8008)")
		for _, c := range []string{"homeserver secret", "homeserver metadata", "clock"} {
			d.skip(c, "needs a reachable homeserver")
		}
		return
	}
	if resp.StatusCode != http.StatusOK {
		d.fail("homeserver", fmt.Sprintf("%s/_matrix/client/versions answered %s", hs, resp.Status),
			"set homeserver.endpoint to the homeserver's client API URL (the one serving /_matrix/client/versions)")
	} else {
		d.ok("homeserver", "%s answers", hs)
	}
	d.checkSecret(ctx, cfg, hs)
	d.checkMetadata(ctx, cfg, hs)
	d.checkClock(resp, sent, back)
}

func (d *doctor) checkSecret(ctx context.Context, cfg *config, hs string) {
	const check = "homeserver secret"
	if cfg.Homeserver.Secret == "" {
		d.fail(check, "homeserver.endpoint is set but no shared secret is",
			"set homeserver.secret_file (or DEVICEGRANTD_HOMESERVER_SECRET) to the homeserver's matrix_authentication_service.secret")
		return
	}
	u := hs + "/_synapse/mas/is_localpart_available?localpart=" + doctorLocalpart
	resp, body, _, _, err := d.get(ctx, u, cfg.Homeserver.Secret)
	if err != nil {
		d.fail(check, fmt.Sprintf("%s: %v", u, unwrapURLError(err)), "check that the homeserver is up and try again")
		return
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		d.fail(check, fmt.Sprintf("the homeserver refused our shared secret on /_synapse/mas/ (%s %s)", resp.Status, matrixErrcode(body)),
			"make homeserver.secret the same as matrix_authentication_service.secret in homeserver.yaml, then restart both")
	case resp.StatusCode == http.StatusNotFound && matrixErrcode(body) == "":
		d.fail(check, "the homeserver has no /_synapse/mas/ endpoints (404)",
			"enable matrix_authentication_service in homeserver.yaml (Synapse 1.157 or later), with endpoint set to our issuer "+cfg.Issuer)
	case resp.StatusCode >= 500:
		d.fail(check, fmt.Sprintf("/_synapse/mas/is_localpart_available answered %s", resp.Status),
			"read the homeserver's log for the error, then try again")
	default:
		d.ok(check, "the homeserver accepts our shared secret on /_synapse/mas/")
	}
}

func (d *doctor) checkMetadata(ctx context.Context, cfg *config, hs string) {
	const check = "homeserver metadata"
	u := hs + "/_matrix/client/v1/auth_metadata"
	resp, body, _, _, err := d.get(ctx, u, "")
	if err != nil {
		d.fail(check, fmt.Sprintf("%s: %v", u, unwrapURLError(err)), "check that the homeserver is up and try again")
		return
	}
	got, ok := issuerIn(body)
	switch {
	case resp.StatusCode == http.StatusNotFound:
		d.fail(check, u+" is not served (404): clients will not find devicegrantd",
			"enable matrix_authentication_service in homeserver.yaml with endpoint "+cfg.Issuer+" (older Synapse: serve it from the reverse proxy, see the README)")
	case resp.StatusCode != http.StatusOK || !ok:
		d.fail(check, fmt.Sprintf("%s answered %s %s: the homeserver could not fetch our metadata", u, resp.Status, matrixErrcode(body)),
			"set matrix_authentication_service.endpoint in homeserver.yaml to a URL where the homeserver reaches devicegrantd ("+cfg.Issuer+" or its listen address)")
	case !sameIssuer(got, cfg.Issuer):
		d.fail(check, fmt.Sprintf("the homeserver announces issuer %s, not ours (%s)", got, cfg.Issuer),
			"point matrix_authentication_service.endpoint at this devicegrantd and set issuer to the URL clients use, then restart the homeserver")
	default:
		d.ok(check, "%s announces our issuer", u)
	}
}

func (d *doctor) checkClock(resp *http.Response, sent, back time.Time) {
	const check = "clock"
	date, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		d.skip(check, "the homeserver sent no Date header to compare clocks with")
		return
	}
	// Date has one-second resolution and was stamped some time between
	// sending and receiving: only a skew beyond that window counts.
	var skew time.Duration
	switch {
	case date.Before(sent.Truncate(time.Second)):
		skew = sent.Truncate(time.Second).Sub(date)
	case date.After(back):
		skew = date.Sub(back)
	}
	if skew > maxClockSkew {
		// The best single guess: Date was truncated to the second, and
		// stamped about halfway through the exchange.
		est := date.Add(500 * time.Millisecond).Sub(sent.Add(back.Sub(sent) / 2)).Round(time.Second)
		dir := "ahead of"
		if est < 0 {
			est, dir = -est, "behind"
		}
		d.fail(check, fmt.Sprintf("the homeserver's clock is %s %s ours (Date: %s)", est, dir, resp.Header.Get("Date")),
			"enable time synchronisation on both machines (timedatectl set-ntp true)")
		return
	}
	d.ok(check, "the homeserver's clock agrees with ours within %s", maxClockSkew)
}

// matrixErrcode returns a Matrix error body's errcode, or "".
func matrixErrcode(body []byte) string {
	var e struct {
		Errcode string `json:"errcode"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Errcode
}

// unwrapURLError drops *url.Error's repetition of the method and URL,
// which the line already names.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
