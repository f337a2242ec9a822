package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/devicegrant/devicegrant/display"
	"github.com/devicegrant/devicegrant/display/panel"
	"github.com/devicegrant/devicegrant/matrixpair"
)

type loginFlags struct {
	homeserver, deviceID, display, clientURI, clientName string
	replace                                              bool
}

func loginCommand() *command {
	var lf loginFlags
	return &command{
		synopsis: "matrix-pair login [flags] [@user:server]",
		help: `Sign this device in to Matrix. matrix-pair finds the homeserver (from the
user id's server name or --homeserver), registers itself with the
homeserver's authorization server, and shows a QR code and a user code:
scan the code with a phone that is signed in to the account (or open the
short URL and type the code) and approve. The tokens are saved for
"matrix-pair token", "matrix-pair exec" and the Go package.

--homeserver takes a server name (example.org), found through
/.well-known/matrix/client, or a base URL (https://matrix.example.org),
used as it is. Plain http is accepted only for loopback addresses.

--display shows the card on a panel instead of the terminal:
  ssd1306:/dev/i2c-1:0x3c   SSD1306 128x64 OLED on I2C (also :128x32, SPI)
  sh1106:/dev/i2c-1:0x3c    SH1106 OLED
  epd[:/dev/spidev0.0:v2]   Waveshare 2.13" e-paper HAT
  fb:/dev/fb1               Linux framebuffer
  png:FILE[:WxH]            a PNG file, rewritten every second
The user code and URL are printed on stderr as well.

With --json, stdout gets one JSON object per line: first
{"event":"authorization","verification_uri","verification_uri_complete",
"user_code","expires_at"}, then {"event":"login","user_id","device_id",
"homeserver","issuer","profile","expires_at"}, or an error object
{"error","message","exit_code"}. The card is then drawn on stderr.

Ctrl-C cancels the sign-in (exit code 130); nothing is saved.`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&lf.homeserver, "homeserver", "", "server `name or base URL` (instead of a user id)")
			fs.StringVar(&lf.deviceID, "device-id", "", "Matrix device `id` to ask for (default: 10 random characters A-Z0-9)")
			fs.StringVar(&lf.display, "display", "", "show the card on a panel `spec` (default: this terminal)")
			fs.StringVar(&lf.clientURI, "client-uri", matrixpair.DefaultClientURI, "client_uri to register: an https `URL` on a real domain (not localhost, an IP or a public suffix)")
			fs.StringVar(&lf.clientName, "client-name", "", "client_name to register (default \"matrix-pair on HOSTNAME\")")
			fs.BoolVar(&lf.replace, "replace", false, "replace an existing session of this profile (the old one is revoked after the new login)")
		},
		run: func(ctx context.Context, e *env, c *common, fs *flag.FlagSet, args []string) error {
			return runLogin(ctx, e, c, &lf, args)
		},
	}
}

func runLogin(ctx context.Context, e *env, c *common, lf *loginFlags, args []string) error {
	target := lf.homeserver
	switch {
	case len(args) > 1:
		return usageErr("login takes at most one user id, got %d arguments", len(args))
	case len(args) == 1 && target != "":
		return usageErr("give a user id or --homeserver, not both")
	case len(args) == 1:
		target = args[0]
		if len(target) < 2 || target[0] != '@' {
			return usageErr("%q is not a user id (@user:server); use --homeserver for a server name", target)
		}
	case target == "":
		return usageErr("give a user id (@alice:example.org) or --homeserver")
	}
	dir, err := c.dir()
	if err != nil {
		return err
	}
	old, err := matrixpair.LoadDir(dir, c.profile)
	switch {
	case err == nil && !lf.replace:
		return fmt.Errorf("profile %q is already signed in as %s (device %s); use --replace, another --profile, or logout first", c.profile, old.UserID, old.DeviceID)
	case err != nil && !errors.Is(err, matrixpair.ErrNotLoggedIn):
		if !lf.replace {
			return err
		}
		old = nil
	}
	hs, err := matrixpair.Discover(ctx, target)
	if err != nil {
		return err
	}
	e.log.Info("discovered", "homeserver", hs.BaseURL, "issuer", hs.Metadata.Issuer, "source", hs.Source)
	opts := matrixpair.LoginOptions{
		Homeserver: hs, Profile: c.profile, Dir: dir, DeviceID: lf.deviceID,
		ClientName: lf.clientName, ClientURI: lf.clientURI, Logger: e.log,
	}
	if old != nil && old.Issuer == hs.Metadata.Issuer {
		opts.ClientID = old.ClientID
	}

	var pan panel.Panel
	if lf.display != "" {
		if pan, err = panel.Open(ctx, lf.display); err != nil {
			return err
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			pan.Clear(cctx)
			pan.Close()
		}()
	}
	showCtx, stopShow := context.WithCancel(ctx)
	var shown sync.WaitGroup
	stopDisplay := func() { stopShow(); shown.Wait() }
	defer stopDisplay()
	opts.Show = func(a matrixpair.Authorization) {
		stopDisplay() // a previous card, if the login started over
		showCtx, stopShow = context.WithCancel(ctx)
		if c.json {
			writeJSON(e.stdout, map[string]any{"event": "authorization",
				"verification_uri": a.VerificationURI, "verification_uri_complete": a.VerificationURIComplete,
				"user_code": a.UserCode, "expires_at": a.Expires.UTC().Format(time.RFC3339)})
		}
		card := display.Card{URI: a.VerificationURIComplete, UserCode: a.UserCode,
			ShortURI: a.VerificationURI, Expires: a.Expires}
		shown.Add(1)
		go func(ctx context.Context) {
			defer shown.Done()
			if pan != nil {
				fmt.Fprintf(e.stderr, "Open %s and enter %s (or scan the code on the display)\n", a.VerificationURI, a.UserCode)
				showPanel(ctx, e, pan, card)
				return
			}
			cols := 80
			if w, _, err := term.GetSize(int(os.Stderr.Fd())); err == nil && w > 0 {
				cols = w
			}
			if err := card.Live(ctx, e.stderr, display.TermOptions{Columns: cols}); err != nil && ctx.Err() == nil {
				e.log.Warn("drawing the card", "err", err)
			}
		}(showCtx)
	}
	sess, err := matrixpair.Login(ctx, opts)
	stopDisplay()
	if err != nil {
		return err
	}
	if old != nil {
		if err := old.Revoke(ctx); err != nil {
			e.log.Warn("could not revoke the replaced session", "device_id", old.DeviceID, "err", err)
		}
	}
	if c.json {
		writeJSON(e.stdout, map[string]any{"event": "login", "user_id": sess.UserID, "device_id": sess.DeviceID,
			"homeserver": sess.Homeserver, "issuer": sess.Issuer, "profile": sess.Profile,
			"expires_at": sess.Expiry().UTC().Format(time.RFC3339)})
		return nil
	}
	fmt.Fprintf(e.stdout, "Signed in as %s, device %s, on %s (profile %q).\n", sess.UserID, sess.DeviceID, sess.Homeserver, sess.Profile)
	return nil
}

// showPanel redraws the card once a second for the countdown until ctx is
// done or the card expires.
func showPanel(ctx context.Context, e *env, pan panel.Panel, card display.Card) {
	b := pan.Bounds()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		now := time.Now()
		frame, _, err := card.Layout(b.Dx(), b.Dy(), display.LayoutOptions{Now: now})
		if err != nil {
			e.log.Warn("laying out the card", "err", err)
			return
		}
		if err := pan.Show(ctx, frame); err != nil && ctx.Err() == nil {
			e.log.Warn("showing the card", "err", err)
		}
		if card.Remaining(now) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
