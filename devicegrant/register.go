package devicegrant

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/devicegrant/clientmeta"
	"github.com/devicegrant/devicegrant/store"
)

const maxRegistrationBody = 64 << 10

// errNeedSlot rolls back a registration that would add a client row
// before it took a slot of the server-wide budget for them.
var errNeedSlot = errors.New("devicegrant: a new client needs a slot of the budget")

// register is RFC 7591 dynamic client registration (P-DCR-1…7).
func (s *Server) register(c *gin.Context) {
	ctx := c.Request.Context()
	if s.overLimit(c, s.dcrLimit) {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxRegistrationBody))
	if err != nil {
		writeRegError(c, &clientmeta.Error{Code: clientmeta.CodeInvalidClientMetadata, Description: "request body is unreadable or larger than 64 KiB"})
		return
	}
	meta, err := clientmeta.Parse(body)
	if err != nil {
		var me *clientmeta.Error
		if errors.As(err, &me) {
			writeRegError(c, me)
			return
		}
		writeRegError(c, &clientmeta.Error{Code: clientmeta.CodeInvalidClientMetadata, Description: err.Error()})
		return
	}
	stored, err := json.Marshal(meta)
	if err != nil {
		s.fail(c, "encode client metadata", err)
		return
	}
	cl := store.Client{ID: newID(), Metadata: stored, CreatedAt: s.now()}
	var secret string
	if meta.Public() {
		// P-DCR-6: a public client holds no secret, so identical
		// registrations (every copy of one app, every login of one
		// device) can share one client instead of piling up.
		cl.MetadataHash = hashSecret(string(stored))
	} else {
		secret = newToken(prefixSecret)
		cl.SecretHash = hashSecret(secret)
	}
	// A new client row spends the server-wide budget; reusing one does
	// not. Which it is shows only inside the transaction, and the budget
	// lives outside it, so the transaction asks for a slot (errNeedSlot)
	// and runs again holding one; a slot it did not use is given back.
	reused := false
	registered := cl
	var slot *try
	for {
		err = s.store.Update(ctx, func(tx store.Tx) error {
			reused, registered = false, cl
			if cl.MetadataHash != nil {
				existing, err := tx.ClientByMetadataHash(ctx, cl.MetadataHash)
				if err == nil {
					// Registered again: it counts as new for the
					// deletion of unused clients, so it cannot vanish
					// mid-login.
					existing.CreatedAt = cl.CreatedAt
					reused, registered = true, existing
					return tx.UpdateClient(ctx, existing)
				}
				if !errors.Is(err, store.ErrNotFound) {
					return err
				}
			}
			if slot == nil {
				return errNeedSlot
			}
			return tx.CreateClient(ctx, cl)
		})
		if !errors.Is(err, errNeedSlot) {
			break
		}
		var wait time.Duration
		if slot, wait = s.newClients.take("all", s.now(), true); wait > 0 {
			c.Header("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
			c.Header("Cache-Control", "no-store")
			c.JSON(http.StatusTooManyRequests, gin.H{"error": "temporarily_unavailable",
				"error_description": "too many new clients were registered recently; retry after " + fmt.Sprint(int(wait.Seconds())+1) + " s"})
			return
		}
	}
	if slot != nil && (reused || err != nil) {
		slot.succeeded(s.now())
	}
	if err != nil {
		s.fail(c, "store client", err)
		return
	}
	cl = registered
	s.log.InfoContext(ctx, "client registered", "client_id", cl.ID, "client_name", meta.ClientName, "public", meta.Public(), "reused", reused)

	// Echo what was registered (unknown fields dropped, defaults filled),
	// plus the credentials.
	var out map[string]any
	if err := json.Unmarshal(stored, &out); err != nil {
		s.fail(c, "decode client metadata", err)
		return
	}
	out["client_id"] = cl.ID
	out["client_id_issued_at"] = cl.CreatedAt.Unix()
	if secret != "" {
		out["client_secret"] = secret
		out["client_secret_expires_at"] = 0
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, out)
}

func writeRegError(c *gin.Context, e *clientmeta.Error) {
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusBadRequest, gin.H{"error": e.Code, "error_description": e.Description})
}
