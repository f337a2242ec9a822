package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

const outboxUsage = `Usage: devicegrantd outbox [retry] [--config FILE]

Shows the calls waiting for the homeserver (/_synapse/mas/*), oldest first:
each user's calls are delivered in order, retried with backoff while the
homeserver is down. A call the homeserver refused 20 times is parked so
that the user's later calls can go, and a warning above the list says so;
"devicegrantd outbox retry" puts the parked calls back in line (a running
daemon picks them up within a second).
`

func outboxCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	return runAdmin(ctx, "outbox", outboxUsage, args, stderr, getenv, nil, func(a *admin) error {
		switch {
		case len(a.args) == 1 && a.args[0] == "retry":
			n, err := a.srv.RetryParked(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%d parked call(s) back in line\n", n)
			return nil
		case len(a.args) != 0:
			fmt.Fprint(stderr, outboxUsage)
			return errUsage
		}
		entries, err := a.srv.Outbox(ctx, 1000)
		if err != nil {
			return err
		}
		if a.cfg.Homeserver.Endpoint == "" {
			fmt.Fprintln(stdout, "No homeserver endpoint is configured: nothing is provisioned.")
		}
		if len(entries) == 0 {
			fmt.Fprintln(stdout, "Nothing is waiting for the homeserver.")
			return nil
		}
		parked, deletes := 0, 0
		for _, e := range entries {
			if !e.ParkedAt.IsZero() {
				parked++
				if e.Call == "delete_device" || e.Call == "delete_user" {
					deletes++
				}
			}
		}
		if parked > 0 {
			// Said first, so it is not lost above a long table.
			fmt.Fprintf(stdout, "WARNING: %d call(s) parked after repeated refusals", parked)
			if deletes > 0 {
				fmt.Fprintf(stdout, ", %d of them deletes: signed-out devices or deactivated users are still on the homeserver", deletes)
			}
			fmt.Fprint(stdout, ".\nFix what LAST ERROR shows, then run: devicegrantd outbox retry\n\n")
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tUSER\tCALL\tAGE\tATTEMPTS\tSTATE\tLAST ERROR")
		now := time.Now()
		for _, e := range entries {
			state := "next try in " + e.NextAttemptAt.Sub(now).Round(time.Second).String()
			switch {
			case !e.ParkedAt.IsZero():
				state = "parked"
			case !e.NextAttemptAt.After(now):
				state = "due"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", e.ID, e.UserKey, e.Call, now.Sub(e.CreatedAt).Round(time.Second),
				e.Attempts, state, e.LastError)
		}
		return tw.Flush()
	})
}
