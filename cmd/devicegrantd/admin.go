package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

const clientUsage = `Usage:
  devicegrantd client trust CLIENT_ID [--config FILE]
      Let a registered client skip the consent page (for an application you
      run yourself). Use sparingly: anyone can register a client claiming
      any name, so trust a client id only after checking its redirect URIs.
  devicegrantd client untrust CLIENT_ID [--config FILE]
`

const keysUsage = `Usage:
  devicegrantd keys rotate [--config FILE]
      Create a new OpenID Connect signing key; it signs every id_token from
      now on. Older keys stay published for 7 days, so tokens they signed
      keep verifying. A running daemon uses the new key at once.
`

// withServer opens the configured store and builds a server on it for an
// administrative command.
func withServer(ctx context.Context, name, usage string, args []string, stderr io.Writer, getenv func(string) string,
	fn func(srv *devicegrant.Server, args []string) error) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage, "\nFlags:\n"); fs.PrintDefaults() }
	configPath := fs.String("config", "", "YAML configuration `FILE`")
	var positional []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
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
	return fn(srv, positional)
}

func clientCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	return withServer(ctx, "client", clientUsage, args, stderr, getenv, func(srv *devicegrant.Server, pos []string) error {
		if len(pos) != 2 || (pos[0] != "trust" && pos[0] != "untrust") {
			fmt.Fprint(stderr, clientUsage)
			return errUsage
		}
		if err := srv.TrustClient(ctx, pos[1], pos[0] == "trust"); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "client %s: %sed\n", pos[1], pos[0])
		return nil
	})
}

func keysCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	return withServer(ctx, "keys", keysUsage, args, stderr, getenv, func(srv *devicegrant.Server, pos []string) error {
		if len(pos) != 1 || pos[0] != "rotate" {
			fmt.Fprint(stderr, keysUsage)
			return errUsage
		}
		kid, err := srv.RotateSigningKey(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "new signing key %s\n", kid)
		return nil
	})
}
