package devicegrant

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/display"
	"github.com/devicegrant/devicegrant/store"
)

// Pairing is a device waiting for a person: what a screen beside the
// server (appliance mode, "devicegrantd pending") shows.
type Pairing struct {
	UserCode    string // XXXX-XXXX
	URI         string // verification_uri_complete, for the QR code
	ShortURI    string // verification_uri, for people who type
	Expires     time.Time
	RequestedAt time.Time
	ClientName  string
	RequesterIP string
}

// Card is the pairing card of p.
func (p Pairing) Card() display.Card {
	return display.Card{URI: p.URI, UserCode: p.UserCode, ShortURI: p.ShortURI, Expires: p.Expires}
}

// PendingPairings lists the newest grants still waiting for approval, at
// most limit.
func (s *Server) PendingPairings(ctx context.Context, limit int) ([]Pairing, error) {
	grants, err := s.store.PendingDeviceGrants(ctx, s.now(), limit)
	if err != nil {
		return nil, fmt.Errorf("devicegrant: pending pairings: %w", err)
	}
	out := make([]Pairing, 0, len(grants))
	for _, g := range grants {
		name := ""
		if cl, err := s.loadClient(ctx, g.ClientID); err == nil {
			name = cl.name()
		}
		out = append(out, s.pairing(g, name))
	}
	return out, nil
}

func (s *Server) pairing(g store.DeviceGrant, clientName string) Pairing {
	return Pairing{
		UserCode: displayUserCode(g.UserCode), URI: s.completeURI(g.UserCode), ShortURI: s.url(pathVerify),
		Expires: g.ExpiresAt, RequestedAt: g.CreatedAt, ClientName: clientName, RequesterIP: g.RequesterIP,
	}
}

// cardMediaType returns the media type of a pairing-card format.
func cardMediaType(format string) (string, bool) {
	switch format {
	case "png":
		return "image/png", true
	case "svg":
		return "image/svg+xml", true
	case "pbm":
		return "image/x-portable-bitmap", true
	case "ansi", "text":
		return "text/plain; charset=utf-8", true
	case "ssd1306-128x64", "ssd1306-128x32":
		return "application/octet-stream", true
	}
	return "", false
}

// pairingCard renders a device's own pairing card, for firmware that has a
// screen but no QR encoder. The device proves it is the device by its
// client_id (and secret, for confidential clients) and its device_code, so
// the request is a POST: a device code must not travel in a URL.
func (s *Server) pairingCard(c *gin.Context) {
	cl, oe := s.authenticateClient(c)
	if oe != nil {
		writeError(c, oe)
		return
	}
	format := c.DefaultPostForm("format", "png")
	mediaType, ok := cardMediaType(format)
	if !ok {
		writeError(c, errInvalidRequest("unknown format "+format+"; use png, svg, pbm, ansi, text, ssd1306-128x64 or ssd1306-128x32"))
		return
	}
	code := c.PostForm("device_code")
	if code == "" {
		writeError(c, errInvalidRequest("device_code is missing"))
		return
	}
	var g store.DeviceGrant
	var err error
	if wellFormed(code, prefixDeviceCode) {
		g, err = s.store.DeviceGrantByDeviceCode(c.Request.Context(), hashSecret(code))
	} else {
		err = store.ErrNotFound
	}
	switch {
	case errors.Is(err, store.ErrNotFound) || (err == nil && g.ClientID != cl.ID):
		writeError(c, errInvalidGrant("unknown device_code"))
		return
	case err != nil:
		s.fail(c, "pairing card", err)
		return
	case !s.now().Before(g.ExpiresAt):
		writeError(c, &oauthError{http.StatusBadRequest, "expired_token", "the device_code expired; start again"})
		return
	case g.State != store.GrantPending:
		writeError(c, errInvalidGrant("this device_code was already answered; there is nothing to show"))
		return
	}
	card := s.pairing(g, "").Card()
	var buf bytes.Buffer
	switch format {
	case "png":
		err = card.WritePNG(&buf, display.ImageOptions{})
	case "svg":
		err = card.WriteSVG(&buf, display.ImageOptions{})
	case "pbm":
		err = card.WritePBM(&buf, display.ImageOptions{})
	case "ansi", "text":
		mode := display.TermColor
		if format == "text" {
			mode = display.TermPlain
		}
		err = card.WriteTerminal(&buf, display.TermOptions{Mode: mode, Now: s.now})
	default:
		var b []byte
		h := 64
		if format == "ssd1306-128x32" {
			h = 32
		}
		// No clock: a frame fetched once would show a frozen one.
		b, _, err = card.Pages(128, h, display.LayoutOptions{})
		buf.Write(b)
	}
	if errors.Is(err, display.ErrTooLong) {
		writeError(c, errInvalidRequest("the card does not fit the "+format+" format; the issuer URL is too long for it"))
		return
	}
	if err != nil {
		s.fail(c, "render pairing card", err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.Header("X-Content-Type-Options", "nosniff")
	c.Data(http.StatusOK, mediaType, buf.Bytes())
}
