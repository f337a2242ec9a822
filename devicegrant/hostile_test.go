package devicegrant_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/internal/devtest"
)

// endpoint is one route, with a form that gets as far into its handler as
// a stranger can (valid client, CSRF token and session where it takes
// one), and the parameter the value attacks go into (on API routes the
// client_id, which every one of them must check).
type endpoint struct {
	method, path string
	page         bool // a browser route: errors are HTML pages
	form         url.Values
	key          string
}

// TestHostileInput sends malformed requests to every endpoint: wrong
// methods and content types, repeated parameters, invalid UTF-8, NUL
// bytes, huge values and bodies, deeply nested JSON, percent garbage.
// Each must get a 4xx: an RFC 6749-style JSON error on API routes, an
// HTML page on browser routes (where a huge but well-formed value may
// instead show the form again with its message); never a 5xx or a panic
// (issue 10).
func TestHostileInput(t *testing.T) {
	e := newEnv(t, devtest.WithConfig(func(c *devicegrant.Config) {
		lots := devicegrant.RateLimit{Burst: 100000, Every: time.Millisecond}
		c.ClientRegistrations, c.DeviceAuthorizations = lots, lots
		c.UserCodeFailures, c.UserCodeFailuresGlobal = lots, lots
		c.LoginFailures, c.AccountLoginFailures = lots, lots
	}))
	clientID, _ := e.Register(deviceClientJSON)
	da := e.deviceAuth(clientID, "HOSTILEDEV")
	phone, _ := signedInPhone(t, e, "account")
	base, _ := url.Parse(e.URL)
	var cookies []string
	csrf := ""
	for _, c := range phone.Client.Jar.Cookies(base) {
		cookies = append(cookies, c.Name+"="+c.Value)
		if c.Name == "dg_csrf" {
			csrf = c.Value
		}
	}
	if csrf == "" {
		t.Fatal("no CSRF cookie after signing in")
	}
	code := strings.TrimPrefix(da["verification_uri_complete"].(string), strings.ToUpper(e.URL)+"D/")
	api := func(path, key string, kv ...string) endpoint {
		f := url.Values{"client_id": {clientID}}
		for i := 0; i+1 < len(kv); i += 2 {
			f.Set(kv[i], kv[i+1])
		}
		return endpoint{http.MethodPost, path, false, f, key}
	}
	page := func(path, key string, kv ...string) endpoint {
		f := url.Values{"csrf": {csrf}}
		for i := 0; i+1 < len(kv); i += 2 {
			f.Set(kv[i], kv[i+1])
		}
		return endpoint{http.MethodPost, path, true, f, key}
	}
	endpoints := []endpoint{
		api("oauth2/device", "client_id", "scope", apiScope),
		api("oauth2/device/card", "client_id", "device_code", da["device_code"].(string), "format", "text"),
		api("oauth2/token", "client_id", "grant_type", deviceGrant, "device_code", da["device_code"].(string)),
		api("oauth2/token", "client_id", "grant_type", "refresh_token", "refresh_token", "dgr_x"),
		api("oauth2/token", "client_id", "grant_type", "authorization_code", "code", "x", "code_verifier", "x", "redirect_uri", "https://x.example/"),
		api("oauth2/revoke", "client_id", "token", "dga_x"),
		api("oauth2/introspect", "client_id", "token", "dga_x"),
		api("oauth2/userinfo", "client_id", "access_token", "dga_x"),
		page("device", "user_code", "user_code", code),
		page("D/"+code, "action", "action", "approve"),
		page("login", "username", "username", testUser, "password", "wrong password"),
		page("logout", "csrf"),
		page("oauth2/authorize", "client_id", "client_id", clientID, "response_type", "code", "action", "approve"),
		page("register", "username", "username", "mallory", "password", "x", "repeat", "y"),
		page("account/profile", "display_name", "display_name", strings.Repeat("x", 300)),
		page("account/password", "current", "current", "wrong", "new", "a", "repeat", "b"),
		page("account/sessions/end", "session_id", "session_id", "nope"),
		page("account/deactivate", "password", "password", "wrong", "confirm_text", "nope"),
		page("account/cross-signing-reset", "password", "password", "wrong"),
		page("legacy/sso", "redirectUrl", "redirectUrl", "https://app.example.org/cb", "action", "continue"),
	}

	type request struct {
		name, method, path, ctype, body string
		page                            bool
		hdr                             []string
		lenient                         bool // may answer 2xx: a page showing its form again with a message, or revocation
	}
	var reqs []request
	huge := strings.Repeat("A", 60<<10)
	for _, ep := range endpoints {
		form := ep.form.Encode()
		with := func(k, v string) string {
			f := url.Values{}
			for kk, vv := range ep.form {
				f[kk] = vv
			}
			f.Set(k, v)
			return f.Encode()
		}
		add := func(name, ctype, body string, hdr ...string) {
			reqs = append(reqs, request{ep.path + ": " + name, ep.method, ep.path, ctype, body, ep.page, hdr, false})
		}
		const formCT = "application/x-www-form-urlencoded"
		add("JSON body", "application/json", `{"client_id":"`+clientID+`"}`)
		add("multipart body", "multipart/form-data; boundary=B", "--B\r\nContent-Disposition: form-data; name=\"client_id\"\r\n\r\n"+clientID+"\r\n--B--\r\n")
		add("text/plain body", "text/plain", form)
		add("no content type", "", form)
		add("malformed content type", "application/x-www-form-urlencoded; charset", form)
		add("repeated parameter", formCT, form+"&"+form)
		add("invalid UTF-8", formCT, with(ep.key, "\xff\xfe\xc0\xaf"))
		add("invalid UTF-8 name", formCT, form+"&%ff=1")
		add("NUL byte", formCT, with(ep.key, "a\x00b"))
		add("raw NUL and control bytes", formCT, "\x00\x01\x02="+form)
		// Revocation answers 200 whatever the client_id or token (RFC 7009
		// §2.2, and the Matrix spec's leaked-token revocation).
		reqs = append(reqs, request{ep.path + ": huge value", ep.method, ep.path, formCT, with(ep.key, huge), ep.page, nil,
			ep.page || ep.path == "oauth2/revoke"})
		add("body over 64 KiB", formCT, with(ep.key, huge+huge))
		add("percent garbage", formCT, form+"&%zz=%")
		add("lone percent", formCT, ep.key+"=%")
		add("percent garbage in the query", formCT, form, "?", "a=%zz&b=%")
		if ep.page {
			add("cookie garbage", formCT, form, "Cookie", "dg_csrf=%ff%00; dg_session="+huge[:4000])
		} else {
			add("garbage Basic credentials", formCT, form, "Authorization", "Basic %%%")
			add("Basic credentials without a colon", formCT, form, "Authorization", "Basic AP8A")
			// RFC 6749 §2.3.1 form-encodes the id and secret inside Basic:
			// decoded, they may be bytes no form field could carry.
			add("Basic client id not UTF-8", formCT, "", "Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("%ff%fe:secret")))
			add("Basic client id with NUL", formCT, "", "Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("a%00b:secret")))
		}
		for _, m := range []string{http.MethodPut, http.MethodDelete, http.MethodPatch} {
			reqs = append(reqs, request{ep.path + ": method " + m, m, ep.path, formCT, form, ep.page, nil, false})
		}
	}
	// GET routes: queries and paths that cannot be right.
	for _, g := range []struct {
		path string
		page bool
	}{
		{"oauth2/authorize?client_id=%ff&response_type=code", true},
		{"oauth2/authorize?client_id=" + clientID + "&client_id=x&response_type=code", true},
		{"oauth2/authorize?client_id=" + clientID + "&redirect_uri=%00&response_type=%zz", true},
		{"oauth2/authorize/continue?id=%ff%fe", true},
		{"oauth2/authorize/continue?id=" + huge[:8000], true},
		{"device?user_code=%00%ff", true},
		{"D/%FF%FE%00", true},
		{"d/" + huge[:8000], true},
		{"account?device_id=%ff&action=%00", true},
		{"register?next=%zz", true},
		{"legacy/sso?redirectUrl=%ff", true},
		{"legacy/sso?redirectUrl=javascript:alert(1)", true},
		{"oauth2/userinfo", false},
		{"oauth2/token", false},
		{".well-known/openid-configuration?x=%ff", false},
	} {
		reqs = append(reqs, request{"GET " + g.path[:min(len(g.path), 60)], http.MethodGet, g.path, "", "", g.page, nil, false})
	}
	// Registration takes JSON: attack the JSON.
	for name, body := range map[string]string{
		"nested arrays":    `{"client_uri":"https://a.example/","redirect_uris":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`,
		"nested objects":   strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000),
		"invalid UTF-8":    "{\"client_name\":\"\xff\",\"client_uri\":\"https://a.example/\"}",
		"NUL in a string":  `{"client_name":"a\u0000b","client_uri":"https://a.example/","token_endpoint_auth_method":"none","grant_types":["urn:ietf:params:oauth:grant-type:device_code"]}`,
		"huge string":      `{"client_name":"` + huge + `","client_uri":"https://a.example/"}`,
		"over 64 KiB":      `{"client_name":"` + huge + huge + `"}`,
		"form body":        url.Values{"client_uri": {"https://a.example/"}}.Encode(),
		"empty":            "",
		"number":           "1e999999",
		"duplicate member": `{"client_uri":"https://a.example/","client_uri":"https://b.example/"}`,
		"percent garbage":  `{"client_uri":"https://a.example/%zz%","redirect_uris":["https://a.example/%"]}`,
	} {
		reqs = append(reqs, request{"oauth2/registration: " + name, http.MethodPost, "oauth2/registration", "application/json", body, false, nil, false})
	}

	for _, r := range reqs {
		t.Run(r.name, func(t *testing.T) {
			target := e.URL + r.path
			hdr := r.hdr
			if len(hdr) >= 2 && hdr[0] == "?" {
				target += "?" + hdr[1]
				hdr = hdr[2:]
			}
			req, err := http.NewRequest(r.method, target, strings.NewReader(r.body))
			if err != nil {
				t.Fatal(err)
			}
			if r.ctype != "" {
				req.Header.Set("Content-Type", r.ctype)
			}
			req.Header.Set("Cookie", strings.Join(cookies, "; "))
			if r.page {
				req.Header.Set("Accept", "text/html")
			}
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if (resp.StatusCode < 400 && !r.lenient) || resp.StatusCode < 200 || resp.StatusCode >= 500 {
				t.Fatalf("status %d, want 4xx: %.100q", resp.StatusCode, b)
			}
			ct := resp.Header.Get("Content-Type")
			if resp.StatusCode < 400 && !r.page {
				return // revocation's empty 200
			}
			if r.page {
				if !strings.HasPrefix(ct, "text/html") || !strings.Contains(string(b), "</html>") {
					t.Errorf("browser route answered %d %s: %.200s", resp.StatusCode, ct, b)
				}
				return
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("API route answered %d %s, not JSON: %.200s", resp.StatusCode, ct, b)
			}
			if s, _ := m["error"].(string); s == "" || strings.ContainsAny(s, " \"\\") {
				t.Errorf("no RFC 6749 error code: %v", m)
			}
			if _, ok := m["error_description"].(string); !ok {
				t.Errorf("no error_description: %v", m)
			}
		})
	}
}

// TestHostileInputMatrix: the same for the legacy Matrix login API, whose
// errors are in the Matrix format ({"errcode": "M_…", "error": "…"}), and
// its SSO confirmation page (P-LEG-1…4, issue 10).
func TestHostileInputMatrix(t *testing.T) {
	e := newEnv(t)
	huge := strings.Repeat("A", 60<<10)
	login := `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"wrong"}`
	bodies := map[string][2]string{
		"nested arrays":     {"application/json", `{"type":"m.login.password","identifier":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`},
		"nested objects":    {"application/json", strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000)},
		"invalid UTF-8":     {"application/json", "{\"type\":\"m.login.password\",\"password\":\"\xff\xfe\"}"},
		"NUL":               {"application/json", strings.Replace(login, "alice", `a\u0000lice`, 1)},
		"huge value":        {"application/json", strings.Replace(login, "wrong", huge, 1)},
		"over 64 KiB":       {"application/json", strings.Replace(login, "wrong", huge+huge, 1)},
		"form body":         {"application/x-www-form-urlencoded", "type=m.login.password&user=alice&password=x"},
		"multipart body":    {"multipart/form-data; boundary=B", "--B\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\nm.login.password\r\n--B--\r\n"},
		"empty":             {"application/json", ""},
		"array":             {"application/json", "[" + login + "]"},
		"wrong types":       {"application/json", `{"type":7,"identifier":"alice","password":["x"]}`},
		"duplicate members": {"application/json", `{"type":"m.login.password","password":"a","password":"b"}`},
	}
	type request struct{ name, method, path, ctype, body, auth string }
	var reqs []request
	for _, v := range []string{"v3", "r0"} {
		for _, p := range []string{"login", "refresh", "logout", "logout/all"} {
			path := "_matrix/client/" + v + "/" + p
			for name, b := range bodies {
				reqs = append(reqs, request{path + ": " + name, http.MethodPost, path, b[0], b[1], ""})
			}
			for _, m := range []string{http.MethodPut, http.MethodDelete, http.MethodPatch} {
				reqs = append(reqs, request{path + ": method " + m, m, path, "application/json", login, ""})
			}
			for name, auth := range map[string]string{"garbage bearer": "Bearer %%%", "invalid UTF-8 bearer": "Bearer a\xffb", "huge bearer": "Bearer " + huge[:6000], "basic": "Basic AP8A"} {
				reqs = append(reqs, request{path + ": " + name, http.MethodPost, path, "application/json", `{}`, auth})
			}
		}
		for _, q := range []string{"", "?redirectUrl=%ff", "?redirectUrl=javascript:alert(1)", "?redirectUrl=" + huge[:6000], "?redirectUrl=%zz"} {
			path := "_matrix/client/" + v + "/login/sso/redirect" + q
			reqs = append(reqs, request{"GET " + path[:min(len(path), 70)], http.MethodGet, path, "", "", ""})
		}
	}
	for _, r := range reqs {
		t.Run(r.name, func(t *testing.T) {
			req, err := http.NewRequest(r.method, e.URL+r.path, strings.NewReader(r.body))
			if err != nil {
				t.Fatal(err)
			}
			if r.ctype != "" {
				req.Header.Set("Content-Type", r.ctype)
			}
			if r.auth != "" {
				req.Header["Authorization"] = []string{r.auth}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode < 400 || resp.StatusCode >= 500 {
				t.Fatalf("status %d, want 4xx: %.100q", resp.StatusCode, b)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("answered %d, not JSON: %.200q", resp.StatusCode, b)
			}
			if code, _ := m["errcode"].(string); !strings.HasPrefix(code, "M_") {
				t.Errorf("no Matrix errcode: %v", m)
			}
			if _, ok := m["error"].(string); !ok {
				t.Errorf("no error message: %v", m)
			}
		})
	}
}
