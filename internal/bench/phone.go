package bench

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
)

// phone is a person's browser approving device codes: it keeps its
// cookies, so it signs in once and then approves each code with two
// requests (the consent page, the approval).
type phone struct {
	client             *http.Client
	username, password string
}

func newPhone(tr http.RoundTripper, username, password string) *phone {
	jar, _ := cookiejar.New(nil)
	return &phone{client: &http.Client{Transport: tr, Jar: jar}, username: username, password: password}
}

var (
	formRE   = regexp.MustCompile(`(?s)<form method="post" action="([^"]*)">(.*?)</form>`)
	hiddenRE = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
)

// page fetches or posts and returns the final URL and body.
func (p *phone) page(ctx context.Context, method, u string, form url.Values) (*url.URL, string, error) {
	var body *strings.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	} else {
		body = strings.NewReader("")
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, "", err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	status, b, err := call(ctx, p.client, req)
	if err != nil {
		return nil, "", err
	}
	if status != http.StatusOK {
		return nil, "", fmt.Errorf("%s %s: status %d", method, u, status)
	}
	return req.URL, string(b), nil
}

// submit posts the form whose action ends with suffix, with its hidden
// fields and extra.
func (p *phone) submit(ctx context.Context, at *url.URL, body, suffix string, extra url.Values) (string, error) {
	for _, f := range formRE.FindAllStringSubmatch(body, -1) {
		action := html.UnescapeString(f[1])
		if !strings.HasSuffix(action, suffix) {
			continue
		}
		form := url.Values{}
		for _, h := range hiddenRE.FindAllStringSubmatch(f[2], -1) {
			form.Set(h[1], html.UnescapeString(h[2]))
		}
		for k, v := range extra {
			form[k] = v
		}
		target, err := at.Parse(action)
		if err != nil {
			return "", err
		}
		_, b, err := p.page(ctx, http.MethodPost, target.String(), form)
		return b, err
	}
	return "", fmt.Errorf("no form with action *%s on %s", suffix, at)
}

// approve opens a verification_uri_complete, signs in when asked and
// approves.
func (p *phone) approve(ctx context.Context, verificationURIComplete string) error {
	at, body, err := p.page(ctx, http.MethodGet, verificationURIComplete, nil)
	if err != nil {
		return err
	}
	if strings.Contains(body, `name="password"`) {
		if body, err = p.submit(ctx, at, body, "/login", url.Values{"username": {p.username}, "password": {p.password}}); err != nil {
			return fmt.Errorf("sign in: %w", err)
		}
	}
	body, err = p.submit(ctx, at, body, "/D/"+strings.ToUpper(at.Path[strings.LastIndexByte(at.Path, '/')+1:]), url.Values{"action": {"approve"}, "confirm": {"yes"}})
	if err != nil {
		return fmt.Errorf("approve: %w", err)
	}
	if !strings.Contains(body, "signing in to your account") {
		return fmt.Errorf("the page after approving does not say the device is signing in")
	}
	return nil
}
