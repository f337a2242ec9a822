package devicegrant

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// metadata serves RFC 8414 / OpenID discovery (P-DISC-1…4). It lists only
// what this server implements today; the authorization-code grant, JWKS and
// userinfo join when they are built.
func (s *Server) metadata(c *gin.Context) {
	c.Header("Cache-Control", "public, max-age=3600")
	c.JSON(http.StatusOK, gin.H{
		"issuer":                                     s.issuer,
		"registration_endpoint":                      s.url(pathRegister),
		"device_authorization_endpoint":              s.url(pathDevice),
		"token_endpoint":                             s.url(pathToken),
		"revocation_endpoint":                        s.url(pathRevoke),
		"introspection_endpoint":                     s.url(pathIntrospect),
		"grant_types_supported":                      []string{grantDeviceCode, grantRefreshToken},
		"response_types_supported":                   []string{},
		"scopes_supported":                           []string{scopeAPI, scopeDevicePrefix + "*"},
		"token_endpoint_auth_methods_supported":      []string{"none", "client_secret_basic", "client_secret_post"},
		"revocation_endpoint_auth_methods_supported": []string{"none", "client_secret_basic", "client_secret_post"},
		// The homeserver may also present its shared secret as a Bearer
		// token; that is not a registered method name, so it is not listed.
		"introspection_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		"code_challenge_methods_supported":              []string{"S256"},
		"account_management_uri":                        s.url(pathAccount),
		"account_management_actions_supported":          s.accountActions(),
		// Not a registered name: a device fetches its own pairing card
		// here (POST client_id, device_code, format) when it cannot
		// draw a QR code itself. See firmware-notes.
		cardEndpointKey: s.url(pathCard),
	})
}

// cardEndpointKey is the metadata key of the pairing-card endpoint,
// prefixed with this project's name so it can clash with nothing standard.
const cardEndpointKey = "io.github.devicegrant.pairing_card_endpoint"
