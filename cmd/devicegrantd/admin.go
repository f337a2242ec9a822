package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/gin-gonic/gin"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/store"
)

const clientUsage = `Usage:
  devicegrantd client trust CLIENT_ID [--config FILE]
      Let a registered client skip the consent page and introspect every
      client's tokens (for an application you run yourself). Use sparingly:
      anyone can register a client claiming any name, so trust a client id
      only after checking its redirect URIs.
  devicegrantd client untrust CLIENT_ID [--config FILE]
      Take that back. A running daemon on SQLite sees either change within
      10 seconds (it keeps client rows in memory that long); on PostgreSQL
      it is told at once.
`

const keysUsage = `Usage:
  devicegrantd keys rotate [--config FILE]
      Create a new OpenID Connect signing key; it signs every id_token from
      now on. Older keys stay published for 7 days, so tokens they signed
      keep verifying. A running daemon uses the new key at once.
`

// admin is what an administrative command works with.
type admin struct {
	cfg  *config
	st   store.Store
	srv  *devicegrant.Server
	args []string // positional arguments
}

// runAdmin parses --config and the flags extra adds (flags may also come
// after positional arguments: "user add alice --password-stdin"), opens
// the configured store, builds a server on it and runs fn.
func runAdmin(ctx context.Context, name, usage string, args []string, stderr io.Writer, getenv func(string) string,
	extra func(*flag.FlagSet), fn func(*admin) error) error {
	a, err := parseAdmin(name, usage, args, stderr, getenv, extra)
	if err != nil {
		return err
	}
	if a.st, err = openStore(ctx, a.cfg.Database); err != nil {
		return err
	}
	defer a.st.Close()
	// Building a server registers its routes; in gin's default debug mode
	// that lists them all on standard output, in the middle of ours.
	gin.SetMode(gin.ReleaseMode)
	if a.srv, err = devicegrant.New(a.cfg.server(), a.st); err != nil {
		return err
	}
	return fn(a)
}

// parseAdmin is runAdmin's flag parsing and configuration loading, for
// commands that must not open (and so create) the database first.
func parseAdmin(name, usage string, args []string, stderr io.Writer, getenv func(string) string,
	extra func(*flag.FlagSet)) (*admin, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage, "\nFlags:\n"); fs.PrintDefaults() }
	configPath := fs.String("config", "", "YAML configuration `FILE`")
	if extra != nil {
		extra(fs)
	}
	a := &admin{}
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		a.args = append(a.args, fs.Arg(0))
		args = fs.Args()[1:]
	}
	var err error
	if a.cfg, err = loadConfig(*configPath, getenv); err != nil {
		return nil, err
	}
	return a, nil
}

func clientCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	return runAdmin(ctx, "client", clientUsage, args, stderr, getenv, nil, func(a *admin) error {
		pos := a.args
		if len(pos) != 2 || (pos[0] != "trust" && pos[0] != "untrust") {
			fmt.Fprint(stderr, clientUsage)
			return errUsage
		}
		if err := a.srv.TrustClient(ctx, pos[1], pos[0] == "trust"); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "client %s: %sed\n", pos[1], pos[0])
		return nil
	})
}

func keysCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	return runAdmin(ctx, "keys", keysUsage, args, stderr, getenv, nil, func(a *admin) error {
		if len(a.args) != 1 || a.args[0] != "rotate" {
			fmt.Fprint(stderr, keysUsage)
			return errUsage
		}
		kid, err := a.srv.RotateSigningKey(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "new signing key %s\n", kid)
		return nil
	})
}
