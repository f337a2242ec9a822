package devicegrant

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/devicegrant/devicegrant/store"
)

// OpenID Connect (P-OIDC-1): RS256 id_tokens signed with keys kept in the
// store, published at jwks_uri, and rotatable: a new key signs from the
// moment it is created, and retired keys stay published long enough for
// every id_token they signed to expire.

const (
	idTokenTTL = time.Hour
	// keepRetired is how long a retired key stays in the JWKS: longer than
	// any id_token lives, plus caches of the JWKS at relying parties.
	keepRetired = 7 * 24 * time.Hour
)

// RotateSigningKey creates a new signing key, which signs every id_token
// from now on, and retires the previous ones (still published, so tokens
// they signed keep verifying). It returns the new key's id.
func (s *Server) RotateSigningKey(ctx context.Context) (string, error) {
	return s.newSigningKey(ctx, true)
}

// newSigningKey creates a signing key and retires the signing one. Unless
// always, it does nothing when a key already signs: that is the first
// key's creation, which several instances starting on one empty database
// may attempt at once, and only one of them must win rather than each
// retiring the key the one before it just made.
func (s *Server) newSigningKey(ctx context.Context, always bool) (string, error) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", fmt.Errorf("devicegrant: generate signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", fmt.Errorf("devicegrant: encode signing key: %w", err)
	}
	now := s.now()
	k := store.SigningKey{ID: newID(), Alg: string(jose.RS256), CreatedAt: now,
		PrivatePEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})}
	var id string
	err = s.store.Update(ctx, func(tx store.Tx) error {
		id = ""
		keys, err := tx.SigningKeys(ctx)
		if err != nil {
			return err
		}
		if !always && len(keys) > 0 && keys[0].RetiredAt.IsZero() {
			id = keys[0].ID
			return nil
		}
		for _, old := range keys {
			if old.RetiredAt.IsZero() {
				old.RetiredAt = now
				if err := tx.UpdateSigningKey(ctx, old); err != nil {
					return err
				}
			}
		}
		id = k.ID
		return tx.CreateSigningKey(ctx, k)
	})
	if err != nil {
		return "", fmt.Errorf("devicegrant: rotate signing key: %w", err)
	}
	return id, nil
}

// signingKeys returns the published keys, the signing one first, creating
// the first key when there is none. Keys are read from the store each
// time: rotation by another process (the "devicegrantd keys rotate"
// command) takes effect at once, and id_tokens are issued far less often
// than this costs.
func (s *Server) signingKeys(ctx context.Context) ([]jose.JSONWebKey, error) {
	keys, err := s.store.SigningKeys(ctx)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 || !keys[0].RetiredAt.IsZero() {
		if _, err := s.newSigningKey(ctx, false); err != nil {
			return nil, err
		}
		if keys, err = s.store.SigningKeys(ctx); err != nil {
			return nil, err
		}
	}
	now := s.now()
	var out []jose.JSONWebKey
	for _, k := range keys {
		if !k.RetiredAt.IsZero() && now.Sub(k.RetiredAt) > keepRetired {
			continue
		}
		priv, err := s.parseKey(k)
		if err != nil {
			return nil, err
		}
		out = append(out, jose.JSONWebKey{Key: priv, KeyID: k.ID, Algorithm: k.Alg, Use: "sig"})
	}
	if len(out) == 0 {
		return nil, errors.New("no signing key")
	}
	return out, nil
}

func (s *Server) parseKey(k store.SigningKey) (crypto.Signer, error) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	if priv, ok := s.keyCache[k.ID]; ok {
		return priv, nil
	}
	block, _ := pem.Decode(k.PrivatePEM)
	if block == nil {
		return nil, fmt.Errorf("signing key %s: not PEM", k.ID)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", k.ID, err)
	}
	priv, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("signing key %s: not a signing key", k.ID)
	}
	s.keyCache[k.ID] = priv
	return priv, nil
}

// jwks serves the public signing keys.
func (s *Server) jwks(c *gin.Context) {
	keys, err := s.signingKeys(c.Request.Context())
	if err != nil {
		s.fail(c, "jwks", err)
		return
	}
	set := jose.JSONWebKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.Public())
	}
	c.Header("Cache-Control", "public, max-age=600")
	c.JSON(http.StatusOK, set)
}

// idTokenClaims are the claims of an id_token beyond the registered ones.
type idTokenClaims struct {
	jwt.Claims
	AuthTime          int64  `json:"auth_time,omitempty"`
	Nonce             string `json:"nonce,omitempty"`
	AccessTokenHash   string `json:"at_hash,omitempty"`
	PreferredUsername string `json:"preferred_username,omitempty"`
	Name              string `json:"name,omitempty"`
}

// idToken signs an id_token for user and client with key.
func (s *Server) idToken(key jose.JSONWebKey, user store.User, clientID, scope, nonce, accessToken string, authTime time.Time) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	now := s.now()
	sum := sha256.Sum256([]byte(accessToken))
	claims := idTokenClaims{
		Claims: jwt.Claims{Issuer: s.issuer, Subject: user.ID, Audience: jwt.Audience{clientID},
			IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(idTokenTTL))},
		Nonce: nonce,
		// OpenID Connect Core §3.1.3.6: the left half of the hash.
		AccessTokenHash: base64.RawURLEncoding.EncodeToString(sum[:len(sum)/2]),
	}
	if !authTime.IsZero() {
		claims.AuthTime = authTime.Unix()
	}
	if hasScope(scope, "profile") {
		claims.PreferredUsername, claims.Name = user.Username, user.DisplayName
	}
	return jwt.Signed(signer).Claims(claims).Serialize()
}

// userinfo is OpenID Connect's UserInfo endpoint: the access token's
// subject, when it was granted openid.
func (s *Server) userinfo(c *gin.Context) {
	h := c.GetHeader("Authorization")
	bearerErr := func(code, desc string) {
		c.Header("WWW-Authenticate", `Bearer error="`+code+`", error_description="`+desc+`"`)
		c.JSON(http.StatusUnauthorized, gin.H{"error": code, "error_description": desc})
	}
	if !isBearer(h) {
		bearerErr("invalid_request", "send the access token as a Bearer token")
		return
	}
	tok := strings.TrimSpace(h[len(bearerPrefix):])
	if !wellFormed(tok, prefixAccess) {
		bearerErr("invalid_token", "unknown access token")
		return
	}
	at, err := s.store.AccessToken(c.Request.Context(), hashSecret(tok))
	if errors.Is(err, store.ErrNotFound) {
		bearerErr("invalid_token", "unknown access token")
		return
	}
	if err != nil {
		s.fail(c, "userinfo", err)
		return
	}
	if !s.accessActive(at) {
		bearerErr("invalid_token", "the access token expired or was revoked")
		return
	}
	if !hasScope(at.Session.Scope, "openid") {
		c.Header("WWW-Authenticate", `Bearer error="insufficient_scope", scope="openid"`)
		c.JSON(http.StatusForbidden, gin.H{"error": "insufficient_scope", "error_description": "the token was not granted openid"})
		return
	}
	out := gin.H{"sub": at.User.ID}
	if hasScope(at.Session.Scope, "profile") {
		out["preferred_username"] = at.User.Username
		if at.User.DisplayName != "" {
			out["name"] = at.User.DisplayName
		}
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, out)
}

func hasScope(scope, want string) bool {
	for _, s := range strings.Fields(scope) {
		if s == want {
			return true
		}
	}
	return false
}
