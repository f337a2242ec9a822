package bench

import (
	"context"
	"crypto/subtle"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// bareSecret is the Bearer secret the bare introspection handler checks.
const bareSecret = "bench-homeserver-secret"

// BareHandler is the yardstick: gin handlers of the same shape as
// devicegrantd's hot paths (parse the form, check the caller, answer JSON)
// with no storage and no rules behind them. A row's ratio is devicegrantd's
// throughput over this handler's, served the same way in the same run.
func BareHandler() http.Handler {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.Recovery())
	r.POST("/oauth2/introspect", func(c *gin.Context) {
		h := c.GetHeader("Authorization")
		if !strings.HasPrefix(h, "Bearer ") || subtle.ConstantTimeCompare([]byte(h[7:]), []byte(bareSecret)) != 1 {
			c.JSON(http.StatusUnauthorized, gin.H{"error": "invalid_client"})
			return
		}
		tok := c.PostForm("token")
		if tok == "" {
			c.JSON(http.StatusBadRequest, gin.H{"error": "invalid_request"})
			return
		}
		c.Header("Cache-Control", "no-store")
		now := time.Now()
		c.JSON(http.StatusOK, gin.H{
			"active": true, "scope": "urn:matrix:client:api:* urn:matrix:client:device:BENCHDEVICE",
			"client_id": "client", "sub": "user", "username": "alice", "device_id": "BENCHDEVICE",
			"token_type": "Bearer", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "expires_in": 3600,
		})
	})
	r.POST("/oauth2/token", func(c *gin.Context) {
		if c.PostForm("grant_type") == "" || c.PostForm("device_code") == "" || c.PostForm("client_id") == "" {
			c.JSON(http.StatusBadRequest, gin.H{"error": "invalid_request"})
			return
		}
		c.Header("Cache-Control", "no-store")
		c.Header("Pragma", "no-cache")
		c.JSON(http.StatusBadRequest, gin.H{"error": "authorization_pending", "error_description": "waiting for the user to approve"})
	})
	r.GET("/healthz", func(c *gin.Context) { c.String(http.StatusOK, "ok") })
	return r
}

// ServeBare serves BareHandler on addr until ctx ends. The harness runs it
// in a process of its own, as devicegrantd runs in one.
func ServeBare(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: BareHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
