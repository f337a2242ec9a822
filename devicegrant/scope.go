package devicegrant

import (
	"fmt"
	"strings"
)

// Matrix scopes (P-SCOPE-1). The msc2967 forms are what clients written
// before Matrix v1.15 still send.
const (
	scopeAPI                 = "urn:matrix:client:api:*"
	scopeDevicePrefix        = "urn:matrix:client:device:"
	scopeAPIUnstable         = "urn:matrix:org.matrix.msc2967.client:api:*"
	scopeDevicePrefixUnstabl = "urn:matrix:org.matrix.msc2967.client:device:"
)

// deviceIDChars are the characters P-SCOPE-2 allows in a device id.
const deviceIDChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~!$&'()*+,;=:@/-"

// scopes is a parsed, checked scope request.
type scopes struct {
	list     []string // de-duplicated, in request order
	deviceID string   // "" when no device scope was asked for
}

func (s scopes) String() string { return strings.Join(s.list, " ") }

// scopeError is an RFC 6749 invalid_scope error.
type scopeError struct{ msg string }

func (e *scopeError) Error() string { return e.msg }

// parseScopes checks a space-separated scope request against P-SCOPE-1…3.
// The API scope is required unless openid is asked for: a token with
// neither is useless to a homeserver (P-HS-2) and to OpenID, so refusing
// early gives the client a clear error. The API scope needs exactly one
// device scope: the Matrix spec says so, and a homeserver cannot serve a
// token that names no device (Synapse answers every request made with one
// with a 500).
func parseScopes(raw string) (scopes, error) {
	var out scopes
	if len(raw) > 2048 {
		return out, &scopeError{"scope is longer than 2048 bytes"}
	}
	seen := map[string]bool{}
	stable, unstable, api, openid := false, false, false, false
	for _, s := range strings.Fields(raw) {
		if seen[s] {
			continue
		}
		seen[s] = true
		switch {
		case s == scopeAPI:
			stable, api = true, true
		case s == scopeAPIUnstable:
			unstable, api = true, true
		case s == "openid":
			openid = true
		case s == "profile" || s == "email":
		case strings.HasPrefix(s, scopeDevicePrefix), strings.HasPrefix(s, scopeDevicePrefixUnstabl):
			id := strings.TrimPrefix(strings.TrimPrefix(s, scopeDevicePrefix), scopeDevicePrefixUnstabl)
			if strings.HasPrefix(s, scopeDevicePrefix) {
				stable = true
			} else {
				unstable = true
			}
			if out.deviceID != "" {
				return out, &scopeError{"exactly one device scope may be requested, not two"}
			}
			if err := checkDeviceID(id); err != nil {
				return out, err
			}
			out.deviceID = id
		default:
			return out, &scopeError{fmt.Sprintf("unknown scope %q", s)}
		}
		out.list = append(out.list, s)
	}
	switch {
	case len(out.list) == 0:
		return out, &scopeError{"scope is required; ask for " + scopeAPI + " and " + scopeDevicePrefix + "<device id>"}
	case stable && unstable:
		return out, &scopeError{"stable and unstable (msc2967) Matrix scopes cannot be mixed in one request"}
	case !api && !openid:
		return out, &scopeError{"ask for the Matrix API scope " + scopeAPI + " (or openid)"}
	case !api && out.deviceID != "":
		return out, &scopeError{"a device scope needs the Matrix API scope " + scopeAPI}
	case api && out.deviceID == "":
		return out, &scopeError{"the Matrix API scope needs exactly one device scope: add " + scopeDevicePrefix + "<device id>, a random id of 10 or more characters from A-Z a-z 0-9 - . _ ~"}
	}
	return out, nil
}

func checkDeviceID(id string) error {
	if len(id) < 10 || len(id) > 255 {
		return &scopeError{fmt.Sprintf("device id %q must be 10 to 255 characters long", id)}
	}
	for _, r := range id {
		if !strings.ContainsRune(deviceIDChars, r) {
			return &scopeError{fmt.Sprintf("device id %q has a character outside A-Z a-z 0-9 and ._~!$&'()*+,;=:@/-", id)}
		}
	}
	return nil
}

// describeScopes puts a scope list into words for the consent page.
func describeScopes(raw string) []string {
	var out []string
	for _, s := range strings.Fields(raw) {
		switch {
		case s == scopeAPI || s == scopeAPIUnstable:
			out = append(out, "Full access to your Matrix account: read and send messages, join and leave rooms, change settings")
		case strings.HasPrefix(s, scopeDevicePrefix):
			out = append(out, "Sign in as the Matrix device "+strings.TrimPrefix(s, scopeDevicePrefix))
		case strings.HasPrefix(s, scopeDevicePrefixUnstabl):
			out = append(out, "Sign in as the Matrix device "+strings.TrimPrefix(s, scopeDevicePrefixUnstabl))
		case s == "openid":
			out = append(out, "Confirm your identity (your Matrix ID) to the application")
		case s == "profile":
			out = append(out, "See your display name")
		case s == "email":
			out = append(out, "See your email address, if one is stored")
		default:
			out = append(out, s)
		}
	}
	return out
}

// grantsMatrixAPI reports whether a scope string includes the Matrix API
// scope, stable or unstable.
func grantsMatrixAPI(scope string) bool {
	return hasScope(scope, scopeAPI) || hasScope(scope, scopeAPIUnstable)
}

// deviceOf returns the device id of a checked scope string, or "".
func deviceOf(scope string) string {
	sc, err := parseScopes(scope)
	if err != nil {
		return ""
	}
	return sc.deviceID
}
