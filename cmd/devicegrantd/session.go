package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/store"
)

const sessionUsage = `Usage:
  devicegrantd session end SESSION_ID [--config FILE]
  devicegrantd session end --device DEVICE_ID --user USERNAME [--config FILE]
      Sign a device out, as its owner can on the account page: its tokens
      stop working at once (introspection answers inactive) and, with a
      homeserver configured, the Matrix device is deleted through the
      outbox (see "devicegrantd outbox"). "devicegrantd user show USERNAME"
      lists a person's sessions with their ids.
`

func sessionCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 || args[0] != "end" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, sessionUsage)
			return nil
		}
		fmt.Fprint(stderr, sessionUsage)
		return errUsage
	}
	var deviceID, username string
	extra := func(fs *flag.FlagSet) {
		fs.StringVar(&deviceID, "device", "", "the Matrix `DEVICE_ID` to sign out (with --user)")
		fs.StringVar(&username, "user", "", "the `USERNAME` owning the device")
	}
	return runAdmin(ctx, "session end", sessionUsage, args[1:], stderr, getenv, extra, func(a *admin) error {
		byDevice := deviceID != "" || username != ""
		if byDevice && (deviceID == "" || username == "" || len(a.args) != 0) || !byDevice && len(a.args) != 1 {
			fmt.Fprint(stderr, sessionUsage)
			return errUsage
		}
		if !byDevice {
			if err := a.srv.EndSession(ctx, a.args[0]); err != nil {
				if errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("no session has the id %q (\"devicegrantd user show USERNAME\" lists them)", a.args[0])
				}
				return err
			}
			fmt.Fprintf(stdout, "session %s ended\n", a.args[0])
			return nil
		}
		u, err := a.st.UserByUsername(ctx, username)
		if err != nil {
			return fmt.Errorf("user %q: %w", username, err)
		}
		live, err := a.st.SessionsByDevice(ctx, u.ID, deviceID)
		if err != nil {
			return err
		}
		if len(live) == 0 {
			return fmt.Errorf("@%s:%s has no live session on device %q", u.Username, a.cfg.ServerName, deviceID)
		}
		for _, x := range live {
			// A session that ended between the lookup and now is fine:
			// the device is signed out either way.
			if err := a.srv.EndSession(ctx, x.ID); err != nil && !errors.Is(err, devicegrant.ErrSessionEnded) {
				return err
			}
			fmt.Fprintf(stdout, "session %s ended (device %s of @%s:%s)\n", x.ID, deviceID, u.Username, a.cfg.ServerName)
		}
		return nil
	})
}

// userJSON is "user show --json".
type userJSON struct {
	Username    string        `json:"username"`
	MatrixID    string        `json:"matrix_id"`
	DisplayName string        `json:"display_name"`
	Created     time.Time     `json:"created"`
	Deactivated *time.Time    `json:"deactivated,omitempty"`
	Sessions    []sessionJSON `json:"sessions"`
}

type sessionJSON struct {
	ID         string     `json:"id"`
	DeviceID   string     `json:"device_id"`
	DeviceName string     `json:"device_name,omitempty"`
	ClientID   string     `json:"client_id"`
	Client     string     `json:"client"`
	SignIn     string     `json:"sign_in"`
	Created    time.Time  `json:"created"`
	LastActive time.Time  `json:"last_active"`
	LastIP     string     `json:"last_ip"`
	Ended      *time.Time `json:"ended,omitempty"`
	EndReason  string     `json:"end_reason,omitempty"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func showUser(ctx context.Context, a *admin, stdout io.Writer, all, asJSON bool) error {
	u, err := a.st.UserByUsername(ctx, a.args[0])
	if err != nil {
		return fmt.Errorf("user %q: %w", a.args[0], err)
	}
	sessions, err := a.srv.UserSessions(ctx, u.ID, all)
	if err != nil {
		return err
	}
	out := userJSON{Username: u.Username, MatrixID: "@" + u.Username + ":" + a.cfg.ServerName, DisplayName: u.DisplayName,
		Created: u.CreatedAt.UTC(), Deactivated: optTime(u.DeactivatedAt), Sessions: []sessionJSON{}}
	for _, x := range sessions {
		out.Sessions = append(out.Sessions, sessionJSON{ID: x.ID, DeviceID: x.DeviceID, DeviceName: x.DeviceName, ClientID: x.ClientID, Client: x.ClientName,
			SignIn: x.SignIn, Created: x.CreatedAt.UTC(), LastActive: x.LastActiveAt.UTC(), LastIP: x.LastIP,
			Ended: optTime(x.EndedAt), EndReason: x.EndReason})
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	const day = "2006-01-02 15:04"
	status := "active"
	if out.Deactivated != nil {
		status = "deactivated " + out.Deactivated.Format(day)
	}
	fmt.Fprintf(stdout, "%s\n  display name  %s\n  created       %s UTC\n  status        %s\n\n",
		out.MatrixID, out.DisplayName, out.Created.Format(day), status)
	if len(out.Sessions) == 0 {
		fmt.Fprintln(stdout, "No device is signed in.")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	head := "SESSION\tDEVICE\tCLIENT\tSIGNS IN BY\tCREATED (UTC)\tLAST ACTIVE (UTC)\tLAST IP"
	if all {
		head += "\tENDED"
	}
	fmt.Fprintln(tw, head)
	for _, x := range out.Sessions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s", x.ID, x.DeviceID, x.Client, x.SignIn, x.Created.Format(day),
			x.LastActive.Format(day), x.LastIP)
		if all {
			ended := "-"
			if x.Ended != nil {
				ended = x.Ended.Format(day) + " (" + x.EndReason + ")"
			}
			fmt.Fprintf(tw, "\t%s", ended)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}
