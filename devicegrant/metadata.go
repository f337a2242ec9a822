package devicegrant

import (
	"encoding/json"
	"net/http"

	"github.com/gin-gonic/gin"
)

// metadata serves RFC 8414 / OpenID discovery (P-DISC-1…4). The document
// never changes while the server runs, so it is encoded once.
func (s *Server) metadata(c *gin.Context) {
	c.Header("Cache-Control", "public, max-age=3600")
	c.Data(http.StatusOK, "application/json; charset=utf-8", s.metadataJSON)
}

func (s *Server) buildMetadata() ([]byte, error) {
	authMethods := []string{"none", "client_secret_basic", "client_secret_post"}
	m := map[string]any{
		"issuer":                        s.issuer,
		"authorization_endpoint":        s.url(pathAuthorize),
		"token_endpoint":                s.url(pathToken),
		"registration_endpoint":         s.url(pathRegister),
		"device_authorization_endpoint": s.url(pathDevice),
		"revocation_endpoint":           s.url(pathRevoke),
		"introspection_endpoint":        s.url(pathIntrospect),
		"jwks_uri":                      s.url(pathJWKS),
		"userinfo_endpoint":             s.url(pathUserinfo),
		"account_management_uri":        s.url(pathAccount),

		"account_management_actions_supported": s.accountActions(),
		"grant_types_supported":                []string{grantAuthorizationCode, grantRefreshToken, grantDeviceCode},
		"response_types_supported":             []string{"code"},
		"response_modes_supported":             []string{"query", "fragment"},
		"code_challenge_methods_supported":     []string{"S256"},
		"prompt_values_supported":              s.promptValues(),
		"scopes_supported":                     []string{scopeAPI, scopeDevicePrefix + "*", "openid", "profile"},
		"subject_types_supported":              []string{"public"},
		"claims_supported":                     []string{"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "preferred_username", "name"},

		"id_token_signing_alg_values_supported":          []string{"RS256"},
		"authorization_response_iss_parameter_supported": true,
		"token_endpoint_auth_methods_supported":          authMethods,
		"revocation_endpoint_auth_methods_supported":     authMethods,
		// The homeserver may also present its shared secret as a Bearer
		// token; that is not a registered method name, so it is not listed.
		"introspection_endpoint_auth_methods_supported": authMethods[1:],
		// Not a registered name: a device fetches its own pairing card
		// here (POST client_id, device_code, format) when it cannot draw
		// a QR code itself. See firmware-notes.
		cardEndpointKey: s.url(pathCard),
	}
	// Not a registered name either: the legacy Matrix login types served
	// (see legacy.go), absent while the legacy API is off.
	if flows := legacyFlows(s.cfg.LegacyLogin); flows != nil {
		m[legacyFlowsKey] = flows
	}
	return json.Marshal(m)
}

// legacyFlowsKey is the metadata key listing the legacy login types.
const legacyFlowsKey = "io.github.devicegrant.legacy_login_flows"

// cardEndpointKey is the metadata key of the pairing-card endpoint,
// prefixed with this project's name so it can clash with nothing standard.
const cardEndpointKey = "io.github.devicegrant.pairing_card_endpoint"

func (s *Server) promptValues() []string {
	p := []string{"none", "login", "consent"}
	if s.cfg.Registration.Enabled {
		p = append(p, "create")
	}
	return p
}
