package devicegrant_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/net/html"
	"golang.org/x/oauth2"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	os.Exit(m.Run())
}

const (
	testUser         = "alice"
	testPassword     = "correct horse battery"
	homeserverSecret = "hs-secret-for-tests"
	apiScope         = "urn:matrix:client:api:*"
	deviceGrant      = "urn:ietf:params:oauth:grant-type:device_code"
)

// clock is a settable clock for tests that need time to pass.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is a real devicegrantd core on loopback HTTP with a real SQLite file.
type env struct {
	t      *testing.T
	URL    string // issuer, with trailing slash
	Server *devicegrant.Server
	Store  *sqlite.Store
	Clock  *clock // nil unless asked for
	DBPath string
}

type option func(*devicegrant.Config, *env)

// withClock makes the server use a settable clock.
func withClock() option {
	return func(c *devicegrant.Config, e *env) {
		e.Clock = &clock{t: time.Now().Truncate(time.Millisecond)}
		c.Now = e.Clock.Now
	}
}

func newEnv(t *testing.T, opts ...option) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, DBPath: filepath.Join(t.TempDir(), "devicegrantd.db")}
	st, err := sqlite.Open(ctx, e.DBPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.Store = st
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.URL = "http://" + ln.Addr().String() + "/"
	cfg := devicegrant.Config{
		Issuer:           e.URL,
		ServerName:       "example.org",
		HomeserverSecret: homeserverSecret,
		PollInterval:     time.Second,
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, o := range opts {
		o(&cfg, e)
	}
	srv, err := devicegrant.New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	e.Server = srv
	hs := &httptest.Server{Listener: ln, Config: &http.Server{Handler: srv}}
	hs.Start()
	t.Cleanup(hs.Close)
	if _, err := devicegrant.CreateUser(ctx, st, testUser, testPassword, "Alice", nil); err != nil {
		t.Fatal(err)
	}
	return e
}

// post sends a form and decodes a JSON answer.
func (e *env) post(path string, form url.Values, hdr ...string) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return do(e.t, req)
}

func (e *env) postJSON(path, body string) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return do(e.t, req)
}

func do(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: not JSON (%d): %s", req.Method, req.URL.Path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, m
}

const deviceClientJSON = `{
	"client_name": "Kitchen display",
	"client_uri": "https://kitchen.example.org/",
	"logo_uri": "https://kitchen.example.org/logo.png",
	"application_type": "native",
	"token_endpoint_auth_method": "none",
	"grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]
}`

// register registers a client and returns its id and secret.
func (e *env) register(body string) (id, secret string) {
	e.t.Helper()
	status, m := e.postJSON("oauth2/registration", body)
	if status != http.StatusCreated {
		e.t.Fatalf("register: %d %v", status, m)
	}
	id, _ = m["client_id"].(string)
	secret, _ = m["client_secret"].(string)
	return id, secret
}

// oauthConfig is the device's x/oauth2 configuration.
func (e *env) oauthConfig(clientID, deviceID string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: clientID,
		Endpoint: oauth2.Endpoint{
			DeviceAuthURL: e.URL + "oauth2/device",
			TokenURL:      e.URL + "oauth2/token",
			AuthStyle:     oauth2.AuthStyleInParams,
		},
		Scopes: []string{apiScope, "urn:matrix:client:device:" + deviceID},
	}
}

func (e *env) introspect(token string) map[string]any {
	e.t.Helper()
	status, m := e.post("oauth2/introspect", url.Values{"token": {token}, "token_type_hint": {"access_token"}},
		"Authorization", "Bearer "+homeserverSecret, "X-MAS-Supports-Device-Id", "1")
	if status != http.StatusOK {
		e.t.Fatalf("introspect: %d %v", status, m)
	}
	return m
}

// phone is a person's browser: it keeps cookies and submits the forms it
// is shown, as a phone would.
type phone struct {
	t      *testing.T
	client *http.Client
}

func newPhone(t *testing.T) *phone {
	jar, _ := cookiejar.New(nil)
	return &phone{t: t, client: &http.Client{Jar: jar}}
}

// page is a fetched HTML page.
type page struct {
	Status int
	URL    *url.URL
	Body   string
	doc    *html.Node
	Header http.Header
}

func (p *phone) get(u string) *page {
	p.t.Helper()
	resp, err := p.client.Get(u)
	if err != nil {
		p.t.Fatal(err)
	}
	return readPage(p.t, resp)
}

// submit fills the form whose action ends with actionSuffix with the page's
// hidden fields plus values, and posts it.
func (p *phone) submit(pg *page, actionSuffix string, values url.Values) *page {
	p.t.Helper()
	form := pg.form(actionSuffix)
	if form == nil {
		p.t.Fatalf("no form with action *%s on %s:\n%s", actionSuffix, pg.URL, pg.Body)
	}
	data := url.Values{}
	for _, in := range findAll(form, "input") {
		if attr(in, "type") == "hidden" {
			data.Set(attr(in, "name"), attr(in, "value"))
		}
	}
	for k, v := range values {
		data[k] = v
	}
	target, err := pg.URL.Parse(attr(form, "action"))
	if err != nil {
		p.t.Fatal(err)
	}
	resp, err := p.client.PostForm(target.String(), data)
	if err != nil {
		p.t.Fatal(err)
	}
	return readPage(p.t, resp)
}

func readPage(t *testing.T, resp *http.Response) *page {
	t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	doc, err := html.Parse(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return &page{Status: resp.StatusCode, URL: resp.Request.URL, Body: string(b), doc: doc, Header: resp.Header}
}

func (pg *page) form(actionSuffix string) *html.Node {
	for _, f := range findAll(pg.doc, "form") {
		if strings.HasSuffix(attr(f, "action"), actionSuffix) {
			return f
		}
	}
	return nil
}

// text returns the page's visible text, whitespace folded.
func (pg *page) text() string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
			b.WriteByte(' ')
		}
		if n.Type == html.ElementNode && (n.Data == "style" || n.Data == "script" || n.Data == "head") {
			return
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(pg.doc)
	return strings.Join(strings.Fields(b.String()), " ")
}

func findAll(n *html.Node, tag string) []*html.Node {
	var out []*html.Node
	if n.Type == html.ElementNode && n.Data == tag {
		out = append(out, n)
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		out = append(out, findAll(c, tag)...)
	}
	return out
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// approve walks the phone pages from the QR link: sign in when asked,
// tick the confirmation and press Approve (or Deny).
func (p *phone) decide(verificationURIComplete, action string) *page {
	p.t.Helper()
	pg := p.get(verificationURIComplete)
	if pg.form("/login") != nil {
		pg = p.submit(pg, "/login", url.Values{"username": {testUser}, "password": {testPassword}})
	}
	if pg.Status != http.StatusOK || !strings.Contains(pg.text(), "Allow this device?") {
		p.t.Fatalf("expected the consent page, got %d:\n%s", pg.Status, pg.text())
	}
	return p.submit(pg, pg.URL.Path, url.Values{"action": {action}, "confirm": {"yes"}})
}

func basicAuth(id, secret string) string {
	return base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(secret)))
}
