package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/devicegrant/devicegrant/display"
)

const pendingUsage = `Usage: devicegrantd pending [--config FILE] [--all]

Prints the newest device waiting for approval with its QR code, for an
operator whose bot has no screen: scan it with a phone and approve. With
--all, every pending device. Uses the same configuration as serve (for the
database and issuer).
`

func pendingCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var all bool
	extra := func(fs *flag.FlagSet) { fs.BoolVar(&all, "all", false, "print every pending device, newest first") }
	return runAdmin(ctx, "pending", pendingUsage, args, stderr, getenv, extra, func(a *admin) error {
		if len(a.args) != 0 {
			fmt.Fprint(stderr, pendingUsage)
			return errUsage
		}
		limit := 1
		if all {
			limit = 100
		}
		pairings, err := a.srv.PendingPairings(ctx, limit)
		if err != nil {
			return err
		}
		if len(pairings) == 0 {
			fmt.Fprintln(stdout, "No device is waiting for approval.")
			return nil
		}
		mode := display.TermModeFor(stdout)
		for i, p := range pairings {
			if i > 0 {
				fmt.Fprint(stdout, "\n\n")
			}
			fmt.Fprintf(stdout, "%s asked %s ago from %s\n\n", p.ClientName,
				time.Since(p.RequestedAt).Round(time.Second), p.RequesterIP)
			if err := p.Card().WriteTerminal(stdout, display.TermOptions{Mode: mode}); err != nil {
				return err
			}
		}
		fmt.Fprintln(stdout)
		return nil
	})
}
