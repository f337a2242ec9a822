package devtest

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// Phone is a person's browser: it keeps cookies and submits the forms it
// is shown, without JavaScript, as a phone would.
type Phone struct {
	t      testing.TB
	Client *http.Client
}

// NewPhone returns a browser with an empty cookie jar.
func NewPhone(t testing.TB) *Phone {
	jar, _ := cookiejar.New(nil)
	return &Phone{t: t, Client: &http.Client{Jar: jar}}
}

// Page is a fetched HTML page.
type Page struct {
	Status int
	URL    *url.URL
	Body   string
	Header http.Header
	doc    *html.Node
}

// Get fetches a page, following redirects.
func (p *Phone) Get(u string) *Page {
	p.t.Helper()
	resp, err := p.Client.Get(u)
	if err != nil {
		p.t.Fatal(err)
	}
	return readPage(p.t, resp)
}

// Submit fills the form whose action ends with actionSuffix with its
// hidden fields plus values, and posts it.
func (p *Phone) Submit(pg *Page, actionSuffix string, values url.Values) *Page {
	p.t.Helper()
	form := pg.Form(actionSuffix)
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
	req, err := http.NewRequest(http.MethodPost, target.String(), strings.NewReader(data.Encode()))
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	// A form on the server's page posting to the server: browsers say so
	// (Fetch Metadata), and keep saying it through the redirects after.
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := p.Client.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	return readPage(p.t, resp)
}

// Decide walks the approval pages from a verification URI: it signs in as
// the test account when asked, ticks the confirmation and presses action
// ("approve" or "deny"). It fails the test unless the consent page shows.
func (p *Phone) Decide(verificationURIComplete, action string) *Page {
	p.t.Helper()
	pg := p.Get(verificationURIComplete)
	if pg.Form("/login") != nil {
		pg = p.Submit(pg, "/login", url.Values{"username": {Username}, "password": {Password}})
	}
	if pg.Status != http.StatusOK || !strings.Contains(pg.Text(), "Allow this device?") {
		p.t.Fatalf("expected the consent page, got %d:\n%s", pg.Status, pg.Text())
	}
	return p.Submit(pg, pg.URL.Path, url.Values{"action": {action}, "confirm": {"yes"}})
}

func readPage(t testing.TB, resp *http.Response) *Page {
	t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	doc, err := html.Parse(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return &Page{Status: resp.StatusCode, URL: resp.Request.URL, Body: string(b), doc: doc, Header: resp.Header}
}

// Form returns the form whose action ends with actionSuffix, or nil.
func (pg *Page) Form(actionSuffix string) *html.Node {
	for _, f := range findAll(pg.doc, "form") {
		if strings.HasSuffix(attr(f, "action"), actionSuffix) {
			return f
		}
	}
	return nil
}

// Text returns the page's visible text, whitespace folded.
func (pg *Page) Text() string {
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

// Find returns the elements with the given tag.
func (pg *Page) Find(tag string) []*html.Node { return findAll(pg.doc, tag) }

// Attr returns an element's attribute, or "".
func Attr(n *html.Node, key string) string { return attr(n, key) }

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
