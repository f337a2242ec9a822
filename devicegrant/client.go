package devicegrant

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/devicegrant/clientmeta"
	"github.com/devicegrant/devicegrant/store"
)

// Grant types, as the token endpoint names them.
const (
	grantDeviceCode   = clientmeta.GrantDeviceCode
	grantRefreshToken = clientmeta.GrantRefreshToken
)

// client is a registered client with its metadata decoded. The stored
// bytes are dropped (Metadata is nil): meta is what they said.
type client struct {
	store.Client
	meta *clientmeta.Metadata
}

// clientCacheTTL bounds how long a client row is answered from memory,
// counted from the start of the read that learned it. A change made in
// this process is heard of when it commits (committing), and one made by
// another instance on PostgreSQL a moment later (watchOthers); the bound
// covers what sends no notice: an admin command on the SQLite file
// (devicegrantd client untrust) takes effect here within it. What a stale
// row can allow for that long: a client whose trust was removed still
// skips the consent page, introspects any token and gets errors redirected
// unasked; a client deleted by cleanup still passes authentication, but it
// has no grant, code or session left to use, and a row it tries to create
// is refused with invalid_client (clientGone). Its secret hash and
// metadata are never stale: both are fixed at registration (UpdateClient
// changes only trust and, for a shared public client, CreatedAt).
const clientCacheTTL = pollCacheTTL

// clientCacheSize bounds the client cache. An entry is the row without its
// metadata bytes, and the parsed metadata, shared with parsedMeta (which
// has the same bound).
const clientCacheSize = 1000

// cachedClient is a client as loadClient last read it, and when that read
// began.
type cachedClient struct {
	cl     client
	readAt time.Time
}

// loadClient reads a client for a request: every token request and poll
// does, so the row is kept in memory (clientCacheTTL says for how long and
// what that allows). The caller gets a copy of its own.
func (s *Server) loadClient(ctx context.Context, id string) (*client, error) {
	if id == legacyClientID {
		return legacyClient(), nil
	}
	if v, ok := s.clients.get(id); ok && s.now().Sub(v.readAt) < clientCacheTTL {
		cl := v.cl
		return &cl, nil
	}
	begun := s.clients.begin()
	// The age counts from before the read, as pollState's does: a slow
	// read must not stretch clientCacheTTL.
	readAt := s.now()
	sc, err := s.store.Client(ctx, id)
	if err != nil {
		return nil, err
	}
	// Parsing the metadata, which is never changed after registration, is
	// remembered by the metadata's bytes. Parsed metadata is never changed
	// after parsing.
	m, ok := s.parsedMeta.get(string(sc.Metadata))
	if !ok {
		if m, err = clientmeta.Parse(sc.Metadata); err != nil {
			return nil, fmt.Errorf("client %s: stored metadata: %w", id, err)
		}
		s.parsedMeta.put(string(sc.Metadata), m, s.parsedMeta.begin())
	}
	cl := client{Client: sc, meta: m}
	cl.Metadata = nil // kept parsed, in meta
	s.clients.put(id, cachedClient{cl: cl, readAt: readAt}, begun)
	return &cl, nil
}

// clientGone reports whether a write that failed with err, on behalf of
// the client id, failed because the client no longer exists: cleanup may
// have deleted it (DeleteUnusedClients) after loadClient read it, from
// memory or not, and the row naming it then fails its foreign key. Only
// after a failure is the client read again; the caller then answers
// invalid_client, as for an unknown client_id, rather than a server error.
func (s *Server) clientGone(ctx context.Context, id string, err error) bool {
	if err == nil || id == legacyClientID {
		return false
	}
	s.clients.forget(id)
	_, err = s.store.Client(ctx, id)
	return errors.Is(err, store.ErrNotFound)
}

// name is what people are shown for the client. The name is the client's
// own claim; pages show its client_uri host beside it.
func (cl *client) name() string {
	if cl.meta.ClientName == "" {
		return "An unnamed application"
	}
	return cl.meta.ClientName
}

// view is the client as pages show it.
func (cl *client) view() clientView {
	v := clientView{Name: cl.name(), URI: cl.meta.ClientURI, LogoURI: cl.meta.LogoURI}
	if u, err := url.Parse(v.URI); err == nil {
		v.Host = u.Host
	}
	return v
}

// authenticateClient identifies the client of a token, device, revocation
// or introspection request (RFC 6749 §2.3). Public clients send only
// client_id. Confidential clients send their secret in HTTP Basic or in
// the form, whichever they registered: both carry the same secret, and
// popular libraries (openid-client among them) send client_secret_post
// unless told otherwise, whatever was registered, so holding a client to
// its registered method would lock it out for no gain. The secret is
// compared by hash, in constant time.
func (s *Server) authenticateClient(c *gin.Context) (*client, *oauthError) {
	formID, formSecret := c.PostForm("client_id"), c.PostForm("client_secret")
	basicID, basicSecret, hasBasic := c.Request.BasicAuth()
	id, secret := formID, formSecret
	if hasBasic {
		// RFC 6749 §2.3.1: the Basic credentials are form-encoded first.
		var err1, err2 error
		basicID, err1 = url.QueryUnescape(basicID)
		basicSecret, err2 = url.QueryUnescape(basicSecret)
		if err1 != nil || err2 != nil {
			return nil, errInvalidClient("malformed HTTP Basic credentials")
		}
		if formSecret != "" || (formID != "" && formID != basicID) {
			return nil, errInvalidRequest("use one client authentication method, not both HTTP Basic and form fields")
		}
		id, secret = basicID, basicSecret
	}
	if id == "" {
		return nil, errInvalidClient("client_id is missing")
	}
	cl, err := s.loadClient(c.Request.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errInvalidClient("unknown client_id; register the client again")
	}
	if err != nil {
		s.log.ErrorContext(c.Request.Context(), "load client", "err", err)
		return nil, errServer()
	}
	registered := cl.meta.TokenEndpointAuthMethod
	if registered == clientmeta.AuthNone {
		// x/oauth2 and others send Basic with an empty password for
		// public clients; that carries no secret and is fine.
		if secret != "" {
			return nil, errInvalidClient("this client is public (token_endpoint_auth_method none) and must not send a secret")
		}
		return cl, nil
	}
	if secret == "" {
		return nil, errInvalidClient("client authentication failed: this client is confidential and must send its secret (it registered " + registered + ")")
	}
	if cl.SecretHash == nil || subtle.ConstantTimeCompare(hashSecret(secret), cl.SecretHash) != 1 {
		return nil, errInvalidClient("client authentication failed")
	}
	return cl, nil
}
