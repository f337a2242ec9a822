package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

const outboxUsage = `Usage: devicegrantd outbox [retry] [--config FILE]

Shows the calls waiting for the homeserver (/_synapse/mas/*), oldest first:
each user's calls are delivered in order, retried with backoff while the
homeserver is down. A call the homeserver refused 20 times is parked so
that the user's later calls can go; "devicegrantd outbox retry" puts the
parked calls back in line (a running daemon picks them up within a second).
`

func outboxCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	retry := false
	if len(args) > 0 && args[0] == "retry" {
		retry, args = true, args[1:]
	}
	fs := flag.NewFlagSet("outbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, outboxUsage, "\nFlags:\n"); fs.PrintDefaults() }
	configPath := fs.String("config", "", "YAML configuration `FILE`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return errUsage
	}
	cfg, err := loadConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	st, err := sqlite.Open(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer st.Close()
	srv, err := devicegrant.New(cfg.server(), st)
	if err != nil {
		return err
	}
	if retry {
		n, err := srv.RetryParked(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%d parked call(s) back in line\n", n)
		return nil
	}
	entries, err := srv.Outbox(ctx, 1000)
	if err != nil {
		return err
	}
	if cfg.Homeserver.Endpoint == "" {
		fmt.Fprintln(stdout, "No homeserver endpoint is configured: nothing is provisioned.")
	}
	if len(entries) == 0 {
		fmt.Fprintln(stdout, "Nothing is waiting for the homeserver.")
		return nil
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
}
