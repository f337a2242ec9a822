package fakesynapse

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// statusRecorder remembers the status written, for Calls.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// apiError is a Matrix error answer.
type apiError struct {
	status  int
	errcode string
	msg     string
}

func (e *apiError) Error() string { return e.errcode + ": " + e.msg }

func badJSON(msg string) *apiError { return &apiError{http.StatusBadRequest, "M_BAD_JSON", msg} }

var errUserNotFound = &apiError{http.StatusNotFound, "M_NOT_FOUND", "User not found"}

// serveMAS serves /_synapse/mas/*, Synapse's endpoints for its auth server.
func (h *Homeserver) serveMAS(w http.ResponseWriter, r *http.Request) {
	received := time.Now()
	body, _ := io.ReadAll(io.LimitReader(r.Body, 10<<20))
	rec := &statusRecorder{ResponseWriter: w}
	defer func() {
		c := Call{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Status: rec.status,
			Received: received, Answered: time.Now()}
		if len(body) > 0 {
			c.Body = json.RawMessage(body)
		}
		h.mu.Lock()
		h.calls = append(h.calls, c)
		h.mu.Unlock()
	}()

	name := strings.TrimPrefix(r.URL.Path, masPrefix)
	type endpoint struct {
		method string
		fn     func(*http.Request, []byte) (int, any, error)
	}
	endpoints := map[string]endpoint{
		"query_user":                 {http.MethodGet, h.masQueryUser},
		"is_localpart_available":     {http.MethodGet, h.masIsLocalpartAvailable},
		"provision_user":             {http.MethodPost, h.masProvisionUser},
		"delete_user":                {http.MethodPost, h.masDeleteUser},
		"reactivate_user":            {http.MethodPost, h.masReactivateUser},
		"set_displayname":            {http.MethodPost, h.masSetDisplayName},
		"unset_displayname":          {http.MethodPost, h.masUnsetDisplayName},
		"allow_cross_signing_reset":  {http.MethodPost, h.masAllowCrossSigningReset},
		"upsert_device":              {http.MethodPost, h.masUpsertDevice},
		"delete_device":              {http.MethodPost, h.masDeleteDevice},
		"update_device_display_name": {http.MethodPost, h.masUpdateDeviceDisplayName},
		"sync_devices":               {http.MethodPost, h.masSyncDevices},
	}
	ep, ok := endpoints[name]
	if !ok {
		// Twisted's own "No Such Resource" page.
		http.Error(rec, "No Such Resource", http.StatusNotFound)
		return
	}
	if r.Method != ep.method && !(ep.method == http.MethodGet && r.Method == http.MethodHead) {
		unrecognized(rec, http.StatusMethodNotAllowed)
		return
	}
	tok, msg := accessToken(r)
	if msg != "" {
		matrixError(rec, http.StatusUnauthorized, "M_MISSING_TOKEN", msg)
		return
	}
	if h.secret == "" || tok != h.secret {
		matrixError(rec, http.StatusForbidden, "M_UNKNOWN", "This endpoint must only be called by MAS")
		return
	}
	if h.masDelay > 0 {
		t := time.NewTimer(h.masDelay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	status, v, err := ep.fn(r, body)
	if err != nil {
		var ae *apiError
		if !errors.As(err, &ae) {
			ae = &apiError{http.StatusInternalServerError, "M_UNKNOWN", "Internal server error"}
		}
		matrixError(rec, ae.status, ae.errcode, ae.msg)
		return
	}
	if status == http.StatusNoContent {
		rec.WriteHeader(status)
		return
	}
	writeJSON(rec, status, v)
}

// ---- request body parsing, with Synapse's error codes ----

type jsonBody map[string]json.RawMessage

// parseBody: not JSON → 400 M_NOT_JSON; not an object → 400 M_BAD_JSON.
func parseBody(b []byte) (jsonBody, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, &apiError{http.StatusBadRequest, "M_NOT_JSON", "Content not JSON."}
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, badJSON("Content must be a JSON object.")
	}
	var m jsonBody
	_ = json.Unmarshal(b, &m)
	return m, nil
}

func (m jsonBody) has(k string) bool { _, ok := m[k]; return ok }

// str reads a required string field.
func (m jsonBody) str(k string) (string, error) {
	var s string
	if err := strictJSON(m[k], &s); err != nil {
		if !m.has(k) {
			return "", badJSON(k + ": Field required")
		}
		return "", badJSON(k + ": Input should be a valid string")
	}
	return s, nil
}

// optStr reads an optional string field (absent or null → nil).
func (m jsonBody) optStr(k string) (*string, error) {
	if !m.has(k) || isNull(m[k]) {
		return nil, nil
	}
	s, err := m.str(k)
	return &s, err
}

// optBool reads an optional boolean field (absent → def; null is refused,
// as a pydantic StrictBool with a default refuses it).
func (m jsonBody) optBool(k string, def bool) (bool, error) {
	if !m.has(k) {
		return def, nil
	}
	var b bool
	if err := strictJSON(m[k], &b); err != nil {
		return false, badJSON(k + ": Input should be a valid boolean")
	}
	return b, nil
}

func (m jsonBody) strList(k string) ([]string, error) {
	var raw []json.RawMessage
	if err := strictJSON(m[k], &raw); err != nil {
		if !m.has(k) {
			return nil, badJSON(k + ": Field required")
		}
		return nil, badJSON(k + ": Input should be a valid list")
	}
	out := make([]string, 0, len(raw))
	for _, v := range raw {
		var s string
		if err := strictJSON(v, &s); err != nil {
			return nil, badJSON(k + ": Input should be a valid string")
		}
		out = append(out, s)
	}
	return out, nil
}

// ---- localpart rules (Synapse's RegistrationHandler.check_username) ----

var validLocalpart = regexp.MustCompile(`^[a-z0-9._=\-/+]+$`)

func (h *Homeserver) checkUsername(localpart string) error {
	if localpart == "" {
		return &apiError{http.StatusBadRequest, "M_INVALID_USERNAME", "User ID cannot be empty"}
	}
	if !validLocalpart.MatchString(localpart) {
		return &apiError{http.StatusBadRequest, "M_INVALID_USERNAME", "User ID can only contain characters a-z, 0-9, or '=_-./+'"}
	}
	if localpart[0] == '_' {
		return &apiError{http.StatusBadRequest, "M_INVALID_USERNAME", "User ID may not begin with _"}
	}
	if len("@"+localpart+":"+h.serverName) > 255 {
		return &apiError{http.StatusBadRequest, "M_INVALID_USERNAME", "User ID may not be longer than 255 characters"}
	}
	h.mu.Lock()
	_, taken := h.accounts[localpart]
	if !taken {
		for lp := range h.accounts {
			if strings.EqualFold(lp, localpart) {
				taken = true
				break
			}
		}
	}
	h.mu.Unlock()
	if taken {
		return &apiError{http.StatusBadRequest, "M_USER_IN_USE", "User ID already taken."}
	}
	if _, err := strconv.Atoi(localpart); err == nil {
		return &apiError{http.StatusBadRequest, "M_INVALID_USERNAME", "Numeric user IDs are reserved for guest users."}
	}
	return nil
}

// ---- users ----

func (h *Homeserver) masQueryUser(r *http.Request, _ []byte) (int, any, error) {
	lps, ok := r.URL.Query()["localpart"]
	if !ok {
		return 0, nil, &apiError{http.StatusBadRequest, "M_MISSING_PARAM", "Missing string query parameter 'localpart'"}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	a := h.accounts[lps[0]]
	if a == nil {
		return 0, nil, errUserNotFound
	}
	return http.StatusOK, map[string]any{
		"user_id":        "@" + a.Localpart + ":" + h.serverName,
		"display_name":   nullable(a.DisplayName),
		"avatar_url":     nullable(a.AvatarURL),
		"is_suspended":   false,
		"is_deactivated": a.Deactivated,
	}, nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (h *Homeserver) masIsLocalpartAvailable(r *http.Request, _ []byte) (int, any, error) {
	lps, ok := r.URL.Query()["localpart"]
	if !ok {
		return 0, nil, &apiError{http.StatusBadRequest, "M_UNKNOWN", "Missing localpart"}
	}
	if err := h.checkUsername(lps[0]); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, struct{}{}, nil
}

func (h *Homeserver) masProvisionUser(_ *http.Request, b []byte) (int, any, error) {
	m, err := parseBody(b)
	if err != nil {
		return 0, nil, err
	}
	for _, f := range []string{"displayname", "avatar_url", "emails"} {
		if m.has("set_"+f) && m.has("unset_"+f) {
			return 0, nil, badJSON("Value error, Cannot specify both unset_" + f + " and set_" + f)
		}
	}
	lp, err := m.str("localpart")
	if err != nil {
		return 0, nil, err
	}
	setDN, err := m.optStr("set_displayname")
	if err != nil {
		return 0, nil, err
	}
	setAv, err := m.optStr("set_avatar_url")
	if err != nil {
		return 0, nil, err
	}
	unsetDN, err := m.optBool("unset_displayname", false)
	if err != nil {
		return 0, nil, err
	}
	unsetAv, err := m.optBool("unset_avatar_url", false)
	if err != nil {
		return 0, nil, err
	}
	unsetEm, err := m.optBool("unset_emails", false)
	if err != nil {
		return 0, nil, err
	}
	var setEm []string
	if m.has("set_emails") && !isNull(m["set_emails"]) {
		if setEm, err = m.strList("set_emails"); err != nil {
			return 0, nil, err
		}
		setEm = dedupe(setEm)
	}
	var locked *bool
	if m.has("locked") && !isNull(m["locked"]) {
		l, err := m.optBool("locked", false)
		if err != nil {
			return 0, nil, err
		}
		locked = &l
	}

	h.mu.Lock()
	a := h.accounts[lp]
	h.mu.Unlock()
	created := a == nil
	if created {
		// Registration validates the localpart like is_localpart_available.
		if err := h.checkUsername(lp); err != nil {
			return 0, nil, err
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if created {
		// Synapse's registration defaults the display name to the localpart.
		dn := lp
		if setDN != nil {
			dn = *setDN
		}
		a = &account{User: User{Localpart: lp, DisplayName: dn, Emails: setEm}, devices: map[string]string{}}
		if a.Emails == nil {
			a.Emails = []string{}
		}
		h.accounts[lp] = a
	} else {
		if unsetDN {
			a.DisplayName = ""
		} else if setDN != nil {
			a.DisplayName = *setDN
		}
		if unsetEm {
			a.Emails = []string{}
		} else if m.has("set_emails") && !isNull(m["set_emails"]) {
			a.Emails = setEm
		}
	}
	if unsetAv {
		a.AvatarURL = ""
	} else if setAv != nil {
		a.AvatarURL = *setAv
	}
	if locked != nil {
		a.Locked = *locked
	}
	if created {
		return http.StatusCreated, struct{}{}, nil
	}
	return http.StatusOK, struct{}{}, nil
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	out := []string{}
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// withUser parses the body, reads localpart, and runs fn on the existing
// account under the lock (404 M_NOT_FOUND if there is none).
func (h *Homeserver) withUser(b []byte, fn func(m jsonBody, a *account) (int, error)) (int, any, error) {
	m, err := parseBody(b)
	if err != nil {
		return 0, nil, err
	}
	lp, err := m.str("localpart")
	if err != nil {
		return 0, nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	a := h.accounts[lp]
	if a == nil {
		// Field validation happens before the lookup in Synapse.
		if _, err := fn(m, nil); err != nil {
			return 0, nil, err
		}
		return 0, nil, errUserNotFound
	}
	status, err := fn(m, a)
	if err != nil {
		return 0, nil, err
	}
	return status, struct{}{}, nil
}

func (h *Homeserver) masDeleteUser(_ *http.Request, b []byte) (int, any, error) {
	return h.withUser(b, func(m jsonBody, a *account) (int, error) {
		var erase bool
		if err := strictJSON(m["erase"], &erase); err != nil {
			if !m.has("erase") {
				return 0, badJSON("erase: Field required")
			}
			return 0, badJSON("erase: Input should be a valid boolean")
		}
		if a == nil {
			return 0, nil
		}
		// Synapse's deactivation deletes devices (and so their tokens)
		// and threepids; erasure also clears the profile.
		a.devices = map[string]string{}
		a.Emails = []string{}
		if erase {
			a.DisplayName, a.AvatarURL, a.Erased = "", "", true
		}
		a.Deactivated = true
		return http.StatusOK, nil
	})
}

func (h *Homeserver) masReactivateUser(_ *http.Request, b []byte) (int, any, error) {
	return h.withUser(b, func(_ jsonBody, a *account) (int, error) {
		if a != nil {
			a.Deactivated, a.Erased = false, false
		}
		return http.StatusOK, nil
	})
}

func (h *Homeserver) masSetDisplayName(_ *http.Request, b []byte) (int, any, error) {
	return h.withUser(b, func(m jsonBody, a *account) (int, error) {
		dn, err := m.str("displayname")
		if err != nil {
			return 0, err
		}
		if a != nil {
			a.DisplayName = dn
		}
		return http.StatusOK, nil
	})
}

func (h *Homeserver) masUnsetDisplayName(_ *http.Request, b []byte) (int, any, error) {
	return h.withUser(b, func(_ jsonBody, a *account) (int, error) {
		if a != nil {
			a.DisplayName = ""
		}
		return http.StatusOK, nil
	})
}

func (h *Homeserver) masAllowCrossSigningReset(_ *http.Request, b []byte) (int, any, error) {
	return h.withUser(b, func(jsonBody, *account) (int, error) { return http.StatusOK, nil })
}

// ---- devices ----

const maxDeviceDisplayNameLen = 100

func (h *Homeserver) masUpsertDevice(_ *http.Request, b []byte) (int, any, error) {
	return h.withUser(b, func(m jsonBody, a *account) (int, error) {
		id, err := m.str("device_id")
		if err != nil {
			return 0, err
		}
		dn, err := m.optStr("display_name")
		if err != nil {
			return 0, err
		}
		if a == nil {
			return 0, nil
		}
		old, exists := a.devices[id]
		if dn != nil {
			old = *dn
		}
		a.devices[id] = old
		if exists {
			return http.StatusOK, nil
		}
		return http.StatusCreated, nil
	})
}

func (h *Homeserver) masDeleteDevice(_ *http.Request, b []byte) (int, any, error) {
	return h.withUser(b, func(m jsonBody, a *account) (int, error) {
		id, err := m.str("device_id")
		if err != nil {
			return 0, err
		}
		if a != nil {
			delete(a.devices, id)
		}
		return http.StatusNoContent, nil
	})
}

func (h *Homeserver) masUpdateDeviceDisplayName(_ *http.Request, b []byte) (int, any, error) {
	return h.withUser(b, func(m jsonBody, a *account) (int, error) {
		id, err := m.str("device_id")
		if err != nil {
			return 0, err
		}
		dn, err := m.str("display_name")
		if err != nil {
			return 0, err
		}
		if a == nil {
			return 0, nil
		}
		if _, ok := a.devices[id]; !ok {
			return 0, &apiError{http.StatusNotFound, "M_NOT_FOUND", "Unknown device"}
		}
		if len(dn) > maxDeviceDisplayNameLen {
			return 0, &apiError{http.StatusBadRequest, "M_TOO_LARGE", "Device display name is too long (max 100)"}
		}
		a.devices[id] = dn
		return http.StatusOK, nil
	})
}

func (h *Homeserver) masSyncDevices(_ *http.Request, b []byte) (int, any, error) {
	return h.withUser(b, func(m jsonBody, a *account) (int, error) {
		ids, err := m.strList("devices")
		if err != nil {
			return 0, err
		}
		if a == nil {
			return 0, nil
		}
		want := map[string]bool{}
		for _, id := range ids {
			want[id] = true
		}
		for id := range a.devices {
			if !want[id] {
				delete(a.devices, id)
			}
		}
		for id := range want {
			if _, ok := a.devices[id]; !ok {
				a.devices[id] = ""
			}
		}
		return http.StatusOK, nil
	})
}
