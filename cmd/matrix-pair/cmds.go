package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/devicegrant/devicegrant/matrixpair"
)

func tokenCommand() *command {
	return &command{
		synopsis: "matrix-pair token [flags]",
		noArgs:   true,
		help: `Print a valid access token on stdout, refreshing it first if it expires
within a minute. Parallel calls refresh once: they wait for each other on
a lock file beside the state. The rotated tokens are saved before the new
access token is printed.

Access tokens live a few minutes (5 on devicegrantd and MAS): call this
again rather than keeping a token.

With --json: {"access_token","expires_at","user_id","device_id","homeserver"}.`,
		run: func(ctx context.Context, e *env, c *common, fs *flag.FlagSet, args []string) error {
			s, t, err := loadToken(ctx, e, c)
			if err != nil {
				return err
			}
			if c.json {
				writeJSON(e.stdout, map[string]any{"access_token": t.AccessToken,
					"expires_at": t.Expiry.UTC().Format(time.RFC3339),
					"user_id":    s.UserID, "device_id": s.DeviceID, "homeserver": s.Homeserver})
				return nil
			}
			fmt.Fprintln(e.stdout, t.AccessToken)
			return nil
		},
	}
}

func execCommand() *command {
	return &command{
		synopsis: "matrix-pair exec [flags] -- CMD [ARG...]",
		help: `Run CMD in place of matrix-pair (exec(2): same process id, signals go to
CMD, its exit code is the exit code) with these variables set:

  MATRIX_HOMESERVER     the client-server API base URL
  MATRIX_USER_ID        e.g. @alice:example.org
  MATRIX_DEVICE_ID      the device id
  MATRIX_ACCESS_TOKEN   an access token, refreshed just before

The token expires after a few minutes (5 on devicegrantd and MAS). A bot
that runs longer must get new tokens: run "matrix-pair token" again when
the homeserver answers 401 M_UNKNOWN_TOKEN, or use the Go package
github.com/devicegrant/devicegrant/matrixpair, whose TokenSource refreshes
by itself. MATRIX_PAIR_PROFILE and MATRIX_PAIR_STATE_DIR are set too, so
that the bot can run "matrix-pair token" with the same profile.`,
		run: func(ctx context.Context, e *env, c *common, fs *flag.FlagSet, args []string) error {
			if len(args) == 0 {
				return usageErr("exec needs a command: matrix-pair exec -- CMD [ARG...]")
			}
			s, t, err := loadToken(ctx, e, c)
			if err != nil {
				return err
			}
			path, err := exec.LookPath(args[0])
			if err != nil {
				return &exitErr{127, err, false}
			}
			env := os.Environ()
			env = append(env,
				"MATRIX_HOMESERVER="+s.Homeserver,
				"MATRIX_USER_ID="+s.UserID,
				"MATRIX_DEVICE_ID="+s.DeviceID,
				"MATRIX_ACCESS_TOKEN="+t.AccessToken,
				"MATRIX_PAIR_PROFILE="+s.Profile,
				"MATRIX_PAIR_STATE_DIR="+s.Dir,
			)
			err = syscall.Exec(path, args, env)
			return fmt.Errorf("exec %s: %w", path, err)
		},
	}
}

func statusCommand() *command {
	var offline, checkRefresh bool
	return &command{
		synopsis: "matrix-pair status [flags]",
		noArgs:   true,
		help: `Show who this profile is signed in as, the device, the homeserver, the
authorization server and when the access token expires, and check that
the session works: it refreshes the access token if it is about to expire
(--refresh: always) and asks the homeserver who the token belongs to.
Tokens are never printed. --offline reads the state file only.

With --json: {"profile","user_id","device_id","homeserver","issuer",
"client_id","expires_at","refreshed","refresh_ok","whoami_ok","error"}.`,
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&offline, "offline", false, "do not contact any server")
			fs.BoolVar(&checkRefresh, "refresh", false, "refresh the access token even if it is still valid, to check that refreshing works")
		},
		run: func(ctx context.Context, e *env, c *common, fs *flag.FlagSet, args []string) error {
			s, err := load(e, c)
			if err != nil {
				return err
			}
			before := s.Expiry()
			out := map[string]any{"profile": s.Profile, "user_id": s.UserID, "device_id": s.DeviceID,
				"homeserver": s.Homeserver, "issuer": s.Issuer, "client_id": s.ClientID}
			var failure error
			refreshState := "not checked (--offline)"
			whoState := "not checked (--offline)"
			if !offline {
				var terr error
				if checkRefresh {
					_, terr = s.Refresh(ctx)
				} else {
					_, terr = s.Token(ctx)
				}
				refreshed := !s.Expiry().Equal(before)
				out["refreshed"] = refreshed
				out["refresh_ok"] = terr == nil
				switch {
				case terr != nil:
					refreshState = "FAILED: " + terr.Error()
					failure = terr
				case refreshed:
					refreshState = "ok (refreshed just now)"
				default:
					refreshState = "not needed (the access token is still valid; --refresh to check)"
				}
				if terr == nil {
					w, werr := s.WhoAmI(ctx)
					out["whoami_ok"] = werr == nil
					switch {
					case werr != nil:
						whoState = "FAILED: " + werr.Error()
						failure = werr
					case w.UserID != s.UserID || (w.DeviceID != "" && w.DeviceID != s.DeviceID):
						whoState = fmt.Sprintf("MISMATCH: the homeserver says %s device %s", w.UserID, w.DeviceID)
						failure = errors.New(whoState)
					default:
						whoState = "ok"
					}
				}
			}
			exp := s.Expiry()
			out["expires_at"] = exp.UTC().Format(time.RFC3339)
			if failure != nil {
				out["error"] = failure.Error()
			}
			if c.json {
				writeJSON(e.stdout, out)
			} else {
				left := time.Until(exp).Round(time.Second)
				expState := fmt.Sprintf("%s (in %s)", exp.Local().Format(time.RFC3339), left)
				if left <= 0 {
					expState = fmt.Sprintf("%s (expired; the next token call refreshes it)", exp.Local().Format(time.RFC3339))
				}
				var b strings.Builder
				for _, kv := range [][2]string{
					{"profile", s.Profile}, {"user", s.UserID}, {"device", s.DeviceID},
					{"homeserver", s.Homeserver}, {"issuer", s.Issuer}, {"client id", s.ClientID},
					{"access token", "expires " + expState}, {"refresh", refreshState}, {"homeserver check", whoState},
				} {
					fmt.Fprintf(&b, "%-17s %s\n", kv[0]+":", kv[1])
				}
				fmt.Fprint(e.stdout, b.String())
			}
			if failure != nil {
				// Print the detail once: the table (or JSON) already has it.
				return &exitErr{exitCode(ctx, failure), errors.New("the session does not work"), c.json}
			}
			return nil
		},
	}
}

func logoutCommand() *command {
	var force bool
	return &command{
		synopsis: "matrix-pair logout [flags]",
		noArgs:   true,
		help: `End the session: revoke it at the authorization server's revocation
endpoint (which also removes the Matrix device), then delete the local
state. If the server cannot be reached or refuses, the state is kept so
that you can try again, unless --force is given.

With --json: {"profile","revoked","removed","error"}.`,
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&force, "force", false, "remove the local state even if the server could not revoke the session")
		},
		run: func(ctx context.Context, e *env, c *common, fs *flag.FlagSet, args []string) error {
			s, err := load(e, c)
			if err != nil {
				return err
			}
			rerr := s.Revoke(ctx)
			out := map[string]any{"profile": s.Profile, "revoked": rerr == nil, "removed": false}
			if rerr != nil {
				var he *matrixpair.HTTPError
				if !errors.As(rerr, &he) && !errors.Is(rerr, matrixpair.ErrNoRevocation) {
					rerr = fmt.Errorf("the authorization server could not be reached: %w", rerr)
				}
				out["error"] = rerr.Error()
				if !force {
					if c.json {
						writeJSON(e.stdout, out)
					}
					return &exitErr{exitError, fmt.Errorf("%w; the local state is kept (use --force to remove it anyway)", rerr), c.json}
				}
				fmt.Fprintf(e.stderr, "matrix-pair logout: %v; removing the local state anyway (--force)\n", rerr)
			}
			if err := s.Remove(); err != nil {
				return err
			}
			out["removed"] = true
			if c.json {
				writeJSON(e.stdout, out)
			} else if rerr == nil {
				fmt.Fprintf(e.stdout, "Signed out %s (device %s); profile %q removed.\n", s.UserID, s.DeviceID, s.Profile)
			} else {
				fmt.Fprintf(e.stdout, "Profile %q removed; the session may still be live at the server.\n", s.Profile)
			}
			return nil
		},
	}
}
