// Package bench is devicegrantd's benchmark harness: it starts devicegrantd
// on loopback with a fresh SQLite file (or targets a running one), drives
// its hot paths with concurrent keep-alive clients, measures each next to
// a bare gin handler of the same shape served the same way in the same
// run, and reports a Markdown table. Ratios, not absolute figures, are
// what compare across machines, and so is the CPU time per request each
// party spent (Linux only), which says what a machine with more cores
// would give.
//
// It is a program (cmd/devicegrant-bench), not a timed unit test; a short
// smoke run is part of the test command so it cannot rot.
package bench

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options say what to measure and how long.
type Options struct {
	// Duration is how long each row is measured. Default 5 s.
	Duration time.Duration
	// Conns is the number of concurrent connections (wrk's -c). Default 16.
	Conns int
	// Chains is the number of concurrent refresh chains. Default 32.
	Chains int
	// Pending is the number of pending pairings the memory row holds.
	// Default 10,000.
	Pending int
	// Target is the base URL of a running devicegrantd; empty starts one.
	// With a target, Secret, Username and Password must be given and
	// the process rows (memory, start-up, size) are left out.
	Target, Secret, Username, Password string
	// Binary is a devicegrantd binary to start; empty builds one.
	Binary string
	// Database is the database of the daemon the harness starts: empty
	// for a fresh SQLite file, or a postgres:// URL naming an empty
	// database (or schema, with search_path) for the PostgreSQL backend.
	Database string
	// Bare is the command that serves the bare handler: the harness's own
	// executable and its arguments, the address appended. Required.
	Bare []string
	// Instances is how many devicegrantd processes the harness starts on
	// Database (a postgres:// URL when more than one), all with one
	// issuer. Requests go round robin to them from the harness itself,
	// as a balancer would spread them, without a balancer's own cost on
	// the machine. Default 1.
	Instances int
	// WorkDir keeps the database and logs; empty uses a temporary one.
	WorkDir string
	// Progress receives a line per step; nil discards them.
	Progress io.Writer
}

func (o *Options) defaults() {
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Conns <= 0 {
		o.Conns = 16
	}
	if o.Chains <= 0 {
		o.Chains = 32
	}
	if o.Pending <= 0 {
		o.Pending = 10000
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	o.Instances = max(o.Instances, 1)
}

// Row is one line of the report.
type Row struct {
	Name   string
	Result Result
	Bare   *Result // nil when the row has no bare counterpart
	Goal   string
	Met    bool
	Note   string
	// CPU is what the row's measured window cost each party; nil where
	// it was not measured (not Linux, or a row without requests).
	CPU *CPU
}

// Report is what Run measured.
type Report struct {
	Rows                         []Row
	RSSIdle, RSSPending, RSSPeak int64 // bytes; 0 when not measured
	// RSSIdleAnon is the anonymous part of RSSIdle (heap, stacks), the
	// rest being mapped files, chiefly the binary; RSSIdleHuge is how much
	// of that rest the kernel maps in 2 MB pages (FilePmdMapped), whole
	// page-cache folios whether or not the daemon touched all of them.
	RSSIdleAnon, RSSIdleHuge        int64
	Pending                         int
	Ready                           time.Duration
	Instances                       int // devicegrantd processes serving the run
	BinarySize                      int64
	Conns                           int
	Duration                        time.Duration
	PendingAnswers, SlowDownAnswers int64
	// Database names the started daemons' backend for the CPU table
	// ("SQLite" or "PostgreSQL"); empty with --target.
	Database string
	// CPUMissing says why rows lack CPU figures; empty when none does.
	CPUMissing string
}

// harness is one run's state.
type harness struct {
	o       Options
	client  *http.Client
	bases   []string // every instance's base URL, with its trailing slash
	turn    atomic.Uint64
	secret  string
	daemon  *process   // the first instance, whose memory the report shows
	daemons []*process // every instance the harness started
	phones  []*phone
	devices atomic.Int64 // device id counter
}

const (
	apiScope   = "urn:matrix:client:api:*"
	benchUser  = "bench"
	benchPass  = "bench password 1234"
	grantType  = "urn:ietf:params:oauth:grant-type:device_code"
	clientJSON = `{"client_name":"devicegrant-bench","client_uri":"https://bench.example.org/","application_type":"native",
		"token_endpoint_auth_method":"none","grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"]}`
)

// Run measures every row. Errors are setup failures; a row whose requests
// fail reports its error count instead.
func Run(ctx context.Context, o Options) (*Report, error) {
	o.defaults()
	if len(o.Bare) == 0 {
		return nil, errors.New("bench: Options.Bare is required")
	}
	if o.Instances > 1 && (o.Target != "" || !strings.HasPrefix(o.Database, "postgres")) {
		return nil, errors.New("bench: several instances share one PostgreSQL database: give --database postgres://… and no --target")
	}
	h := &harness{o: o, client: newClient(max(o.Conns, o.Chains) * 2 * o.Instances)}
	rep := &Report{Conns: o.Conns, Duration: o.Duration, Pending: o.Pending, Instances: o.Instances}
	switch {
	case o.Target != "":
	case strings.HasPrefix(o.Database, "postgres"):
		rep.Database = "PostgreSQL"
	default:
		rep.Database = "SQLite"
	}
	dir := o.WorkDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "devicegrant-bench-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}

	// The bare handler, in its own process.
	bareAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	bare, err := start(ctx, o.Bare[0], append(o.Bare[1:], bareAddr), nil, bareAddr, filepath.Join(dir, "bare.log"))
	if err != nil {
		return nil, err
	}
	defer bare.stop()

	if o.Target != "" {
		h.bases, h.secret = []string{strings.TrimSuffix(o.Target, "/") + "/"}, o.Secret
		if h.secret == "" || o.Username == "" || o.Password == "" {
			return nil, errors.New("bench: a target needs --secret (the homeserver secret), --username and --password")
		}
	} else {
		if err := h.startDaemon(ctx, dir, rep); err != nil {
			return nil, err
		}
		defer func() {
			for _, d := range h.daemons {
				d.stop()
			}
		}()
		o.Username, o.Password = benchUser, benchPass
	}
	for range max(o.Conns, 1) {
		h.phones = append(h.phones, newPhone(h.client.Transport, o.Username, o.Password))
	}

	clientID, err := h.register(ctx)
	if err != nil {
		return nil, err
	}
	// The pending pairings the polling row polls, and, before any
	// sign-in, the memory they take: a password check (argon2id, 19 MiB)
	// leaves its memory in the heap until the runtime gives it back,
	// which the peak row shows.
	h.progress("%d pending pairings", o.Pending)
	codes, err := h.fillPending(ctx, clientID, o.Pending)
	if err != nil {
		return nil, err
	}
	if h.daemon != nil {
		time.Sleep(time.Second)
		if rep.RSSPending, err = h.daemon.rss("VmRSS"); err != nil {
			return nil, err
		}
	}
	h.progress("signing in %d sessions", o.Chains+1)
	sessions, err := h.signInMany(ctx, clientID, o.Chains+1)
	if err != nil {
		return nil, err
	}

	// Introspection of a valid token.
	h.progress("introspection")
	access := sessions[0].AccessToken
	intro := func(base func() string, secret string) func(ctx context.Context, w int) error {
		return func(ctx context.Context, w int) error {
			return h.expect(ctx, post(base()+"oauth2/introspect", url.Values{"token": {access}}, "Bearer "+secret), 200, `"active":true`)
		}
	}
	bareBase := func() string { return bare.base }
	r, cpu := h.measure(rep, func() Result { return closedLoop(ctx, o.Conns, o.Duration, intro(h.base, h.secret)) })
	b := closedLoop(ctx, o.Conns, o.Duration, intro(bareBase, bareSecret))
	row := ratioRow("introspection of a valid token (homeserver secret)", r, b, 0.7)
	row.CPU = cpu
	rep.Rows = append(rep.Rows, row)

	h.progress("device authorization")
	r, cpu = h.measure(rep, func() Result {
		return closedLoop(ctx, o.Conns, o.Duration, func(ctx context.Context, w int) error {
			_, err := h.deviceAuth(ctx, clientID)
			return err
		})
	})
	rep.Rows = append(rep.Rows, Row{Name: "device authorization (rate limit raised)", Result: r, Goal: "≥ 2,500/s, durable", Met: r.Errors == 0 && r.PerSecond() >= 2500, CPU: cpu})

	// Polls of the pending device codes, round robin, as fast as the
	// workers can send: a code polled again within its interval (1 s) is
	// answered slow_down, as RFC 8628 says.
	h.progress("polling %d pending codes", len(codes))
	if len(codes) == 0 {
		return nil, errors.New("bench: no device code was issued")
	}
	var next atomic.Int64
	var pending, slow atomic.Int64
	poll := func(base func() string, count bool) func(ctx context.Context, w int) error {
		return func(ctx context.Context, w int) error {
			code := codes[int(next.Add(1))%len(codes)]
			status, body, err := call(ctx, h.client, post(base()+"oauth2/token", url.Values{"grant_type": {grantType}, "device_code": {code}, "client_id": {clientID}}, ""))
			switch {
			case err != nil:
				return err
			case status == 400 && strings.Contains(string(body), `"authorization_pending"`):
				if count {
					pending.Add(1)
				}
				return nil
			case status == 400 && strings.Contains(string(body), `"slow_down"`):
				if count {
					slow.Add(1)
				}
				return nil
			}
			return fmt.Errorf("poll: %d %s", status, body)
		}
	}
	r, cpu = h.measure(rep, func() Result { return closedLoop(ctx, o.Conns, o.Duration, poll(h.base, true)) })
	b = closedLoop(ctx, o.Conns, o.Duration, poll(bareBase, false))
	rep.PendingAnswers, rep.SlowDownAnswers = pending.Load(), slow.Load()
	row = ratioRow("polls of pending device codes", r, b, 0.5)
	row.CPU = cpu
	row.Note = fmt.Sprintf("%d authorization_pending, %d slow_down", rep.PendingAnswers, rep.SlowDownAnswers)
	rep.Rows = append(rep.Rows, row)

	// Refresh rotation: each chain refreshes its own token in turn.
	h.progress("refresh rotation, %d chains", o.Chains)
	refresh := make([]string, o.Chains)
	for i := range refresh {
		refresh[i] = sessions[i+1].RefreshToken
	}
	r, cpu = h.measure(rep, func() Result {
		return closedLoop(ctx, o.Chains, o.Duration, func(ctx context.Context, w int) error {
			tok, err := h.token(ctx, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh[w]}, "client_id": {clientID}})
			if err != nil {
				return err
			}
			refresh[w] = tok.RefreshToken
			return nil
		})
	})
	rep.Rows = append(rep.Rows, Row{Name: fmt.Sprintf("refresh rotation, %d concurrent chains", o.Chains), Result: r, Goal: "≥ 2,000/s, durable", Met: r.Errors == 0 && r.PerSecond() >= 2000, CPU: cpu})

	// The whole device flow, the client registered once.
	h.progress("whole device flow")
	r, cpu = h.measure(rep, func() Result {
		return closedLoop(ctx, o.Conns, o.Duration, func(ctx context.Context, w int) error {
			_, err := h.signIn(ctx, h.phones[w%len(h.phones)], clientID)
			return err
		})
	})
	rep.Rows = append(rep.Rows, Row{Name: "whole device flow (authorize, approve on a phone, poll, tokens)", Result: r, Goal: "≥ 500/s", Met: r.Errors == 0 && r.PerSecond() >= 500, CPU: cpu})

	if h.daemon != nil {
		if rep.RSSPeak, err = h.daemon.rss("VmHWM"); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// measure runs one row's load and reads, around it, the CPU time the
// daemons, the harness and the rest of the machine spent. The bare
// handler's rows are not measured: its process idles meanwhile, and its
// time would count as the rest's.
func (h *harness) measure(rep *Report, run func() Result) (Result, *CPU) {
	var pids []int
	for _, d := range h.daemons {
		pids = append(pids, d.cmd.Process.Pid)
	}
	a, err := snapCPU("/proc", pids)
	r := run()
	if err == nil {
		var b cpuSnap
		if b, err = snapCPU("/proc", pids); err == nil {
			return r, cpuBetween(a, b, len(pids) > 0)
		}
	}
	rep.CPUMissing = cmp.Or(rep.CPUMissing, fmt.Sprintf("CPU time not measured for some or all rows (it is read from Linux's /proc): %v", err))
	return r, nil
}

// base returns the next instance's base URL, round robin.
func (h *harness) base() string {
	return h.bases[(h.turn.Add(1)-1)%uint64(len(h.bases))]
}

func (h *harness) progress(format string, args ...any) {
	fmt.Fprintf(h.o.Progress, "bench: "+format+"\n", args...)
}

// startDaemon builds (unless given) and starts devicegrantd on a fresh
// SQLite file, with one account, and measures start-up and idle memory.
func (h *harness) startDaemon(ctx context.Context, dir string, rep *Report) error {
	bin := h.o.Binary
	if bin == "" {
		root, err := moduleRoot()
		if err != nil {
			return err
		}
		bin = filepath.Join(dir, "devicegrantd")
		h.progress("building devicegrantd")
		if err := buildDaemon(ctx, root, bin); err != nil {
			return err
		}
	}
	fi, err := os.Stat(bin)
	if err != nil {
		return err
	}
	rep.BinarySize = fi.Size()
	addrs := make([]string, h.o.Instances)
	for i := range addrs {
		if addrs[i], err = freeAddr(); err != nil {
			return err
		}
	}
	h.secret = "bench-" + rand.Text()
	env := []string{
		// Every instance has the first one's issuer, as instances behind
		// a balancer have the balancer's.
		"DEVICEGRANTD_ISSUER=http://" + addrs[0] + "/",
		"DEVICEGRANTD_DATABASE=" + cmp.Or(h.o.Database, filepath.Join(dir, "devicegrantd.db")),
		"DEVICEGRANTD_HOMESERVER_SECRET=" + h.secret,
		"DEVICEGRANTD_ACCESS_TOKEN_TTL=1h",
		"DEVICEGRANTD_POLL_INTERVAL=1s",
		// Limits are raised, not measured: sixteen phones of one account
		// approving at once would spend its user-code budget, which takes
		// a try before each lookup and gives it back after.
		"DEVICEGRANTD_DEVICE_AUTHORIZATIONS=1000000000/1ms",
		"DEVICEGRANTD_USER_CODE_FAILURES=1000000000/1ms",
		"DEVICEGRANTD_USER_CODE_FAILURES_SIGNED_IN=1000000000/1ms",
		"DEVICEGRANTD_LOG_LEVEL=warn",
	}
	add := execCommand(ctx, bin, []string{"user", "add", benchUser, "--password-stdin"}, append(env, "DEVICEGRANTD_LISTEN="+addrs[0]), benchPass+"\n")
	if out, err := add.CombinedOutput(); err != nil {
		return fmt.Errorf("devicegrantd user add: %w\n%s", err, out)
	}
	for i, addr := range addrs {
		h.progress("starting devicegrantd %d of %d", i+1, len(addrs))
		logName := "devicegrantd.log"
		if i > 0 {
			logName = fmt.Sprintf("devicegrantd-%d.log", i+1)
		}
		d, err := start(ctx, bin, []string{"serve"}, append(env, "DEVICEGRANTD_LISTEN="+addr), addr, filepath.Join(dir, logName))
		if err != nil {
			return err
		}
		h.daemons = append(h.daemons, d)
		h.bases = append(h.bases, d.base)
	}
	h.daemon, rep.Ready = h.daemons[0], h.daemons[0].ready
	time.Sleep(500 * time.Millisecond)
	if rep.RSSIdle, err = h.daemon.rss("VmRSS"); err != nil {
		return err
	}
	if rep.RSSIdleAnon, err = h.daemon.rss("RssAnon"); err != nil {
		return err
	}
	rep.RSSIdleHuge, err = h.daemon.procSize("smaps_rollup", "FilePmdMapped")
	return err
}

// tokens is a token response.
type tokens struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
}

// deviceAuthorization is a device authorization response.
type deviceAuthorization struct {
	DeviceCode              string `json:"device_code"`
	VerificationURIComplete string `json:"verification_uri_complete"`
}

func post(u string, form url.Values, authorization string) *http.Request {
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	return req
}

// expect sends req and checks the status and a piece of the body.
func (h *harness) expect(ctx context.Context, req *http.Request, status int, contains string) error {
	got, body, err := call(ctx, h.client, req)
	if err != nil {
		return err
	}
	if got != status || !strings.Contains(string(body), contains) {
		return fmt.Errorf("%s: %d %s", req.URL.Path, got, body)
	}
	return nil
}

func (h *harness) register(ctx context.Context) (string, error) {
	req, _ := http.NewRequest(http.MethodPost, h.base()+"oauth2/registration", strings.NewReader(clientJSON))
	req.Header.Set("Content-Type", "application/json")
	status, body, err := call(ctx, h.client, req)
	if err != nil {
		return "", err
	}
	var m struct {
		ClientID string `json:"client_id"`
	}
	if status != http.StatusCreated || json.Unmarshal(body, &m) != nil || m.ClientID == "" {
		return "", fmt.Errorf("register: %d %s", status, body)
	}
	return m.ClientID, nil
}

func (h *harness) deviceAuth(ctx context.Context, clientID string) (deviceAuthorization, error) {
	device := fmt.Sprintf("BENCH%010d", h.devices.Add(1))
	status, body, err := call(ctx, h.client, post(h.base()+"oauth2/device", url.Values{"client_id": {clientID}, "scope": {apiScope + " urn:matrix:client:device:" + device}}, ""))
	var da deviceAuthorization
	switch {
	case err != nil:
		return da, err
	case status != http.StatusOK || json.Unmarshal(body, &da) != nil || da.DeviceCode == "":
		return da, fmt.Errorf("device authorization: %d %s", status, body)
	}
	return da, nil
}

func (h *harness) token(ctx context.Context, form url.Values) (tokens, error) {
	status, body, err := call(ctx, h.client, post(h.base()+"oauth2/token", form, ""))
	var t tokens
	switch {
	case err != nil:
		return t, err
	case status != http.StatusOK || json.Unmarshal(body, &t) != nil || t.AccessToken == "":
		return t, fmt.Errorf("token: %d %s", status, body)
	}
	return t, nil
}

// signIn runs one device flow: authorize, approve on ph, poll once.
func (h *harness) signIn(ctx context.Context, ph *phone, clientID string) (tokens, error) {
	da, err := h.deviceAuth(ctx, clientID)
	if err != nil {
		return tokens{}, err
	}
	if err := ph.approve(ctx, h.spread(da.VerificationURIComplete)); err != nil {
		return tokens{}, err
	}
	return h.token(ctx, url.Values{"grant_type": {grantType}, "device_code": {da.DeviceCode}, "client_id": {clientID}})
}

// spread sends a page link of the issuer to the next instance instead, as
// a balancer would. Cookies follow: a cookie jar keys them by host, not
// port, and every instance reads the same browser sessions.
func (h *harness) spread(link string) string {
	if len(h.bases) == 1 || !strings.HasPrefix(link, h.bases[0]) {
		return link
	}
	return h.base() + strings.TrimPrefix(link, h.bases[0])
}

func (h *harness) signInMany(ctx context.Context, clientID string, n int) ([]tokens, error) {
	out := make([]tokens, n)
	for i := range out {
		var err error
		// Round the phones, so each signs in here, one after the other:
		// sixteen first sign-ins at once from one address would spend
		// the address's password budget, which takes a try before the
		// argon2 work and gives it back only after.
		if out[i], err = h.signIn(ctx, h.phones[i%len(h.phones)], clientID); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// fillPending creates n pending pairings, in parallel, and returns their
// device codes.
func (h *harness) fillPending(ctx context.Context, clientID string, n int) ([]string, error) {
	var left atomic.Int64
	left.Store(int64(n))
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := make([]string, 0, n)
	errs := make(chan error, h.o.Conns)
	for range h.o.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				da, err := h.deviceAuth(ctx, clientID)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				codes = append(codes, da.DeviceCode)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	return codes, <-errs
}

func ratioRow(name string, r, b Result, goal float64) Row {
	ratio := 0.0
	if b.PerSecond() > 0 {
		ratio = r.PerSecond() / b.PerSecond()
	}
	return Row{Name: name, Result: r, Bare: &b, Goal: fmt.Sprintf("≥ %.1f× bare", goal), Met: r.Errors == 0 && ratio >= goal}
}
