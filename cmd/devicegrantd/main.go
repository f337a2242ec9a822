// Command devicegrantd is an OAuth 2.0 authorization server for a Matrix
// homeserver, built around the device authorization grant (RFC 8628) so
// that devices without a browser can sign in by QR code.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `devicegrantd: an OAuth 2.0 authorization server for Matrix, built so that
devices without a browser sign in by QR code (RFC 8628 device grant).

Usage:
  devicegrantd [serve] [--config FILE]     run the server (the default command)
  devicegrantd user add USERNAME [--password-stdin] [--display-name NAME] [--config FILE]
  devicegrantd user list [--config FILE]
  devicegrantd user deactivate USERNAME [--config FILE]
  devicegrantd user show USERNAME [--all] [--json] [--config FILE]
  devicegrantd user set-password USERNAME [--password-stdin] [--end-sessions] [--config FILE]
  devicegrantd session end SESSION_ID | --device DEVICE_ID --user USERNAME [--config FILE]
                                           sign a device out, as the account page does
  devicegrantd backup FILE [--config FILE]  a consistent copy of the live database
  devicegrantd doctor [--json] [--config FILE]
                                           check the deployment; says how to fix each problem
  devicegrantd pending [--all] [--config FILE]
                                           print devices waiting for approval, with their QR code
  devicegrantd outbox [retry] [--config FILE]
                                           show (or retry) calls waiting for the homeserver
  devicegrantd client trust|untrust CLIENT_ID [--config FILE]
                                           let a client skip the consent page, or not
  devicegrantd keys rotate [--config FILE]  new OpenID Connect signing key
  devicegrantd migrate [--check] [--config FILE]
                                           bring the database's schema up to date (serve does too);
                                           --check: exit 1 when migrations are pending
  devicegrantd migrate-data --from FILE.db --to postgres://...
                                           move a SQLite database into an empty PostgreSQL one
  devicegrantd help | --help               this text; "devicegrantd CMD --help" for one command

With no configuration it listens on 127.0.0.1:8080, uses issuer
http://127.0.0.1:8080/ and keeps its data in ./devicegrantd.db.

Configuration: a YAML file (--config FILE) with the keys below; every key can
also be set by its environment variable, which wins over the file.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "devicegrantd:", err)
		}
		os.Exit(exitCode(err))
	}
}

// errUsage marks errors whose message was already printed with usage;
// errHelp, a --help that was answered.
var (
	errUsage = errors.New("usage")
	errHelp  = errors.New("help")
)

func exitCode(err error) int {
	if errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		printUsage(stdout)
		return nil
	}
	cmd := "serve"
	if len(args) > 0 && (args[0] == "" || args[0][0] != '-') {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return helped(serve(ctx, args, stderr, getenv))
	case "user":
		return helped(userCmd(ctx, args, stdin, stdout, stderr, getenv))
	case "pending":
		return helped(pendingCmd(ctx, args, stdout, stderr, getenv))
	case "outbox":
		return helped(outboxCmd(ctx, args, stdout, stderr, getenv))
	case "session":
		return helped(sessionCmd(ctx, args, stdout, stderr, getenv))
	case "backup":
		return helped(backupCmd(ctx, args, stdout, stderr, getenv))
	case "doctor":
		return helped(doctorCmd(ctx, args, stdout, stderr, getenv))
	case "client":
		return helped(clientCmd(ctx, args, stdout, stderr, getenv))
	case "keys":
		return helped(keysCmd(ctx, args, stdout, stderr, getenv))
	case "migrate":
		return helped(migrateCmd(ctx, args, stdout, stderr, getenv))
	case "migrate-data":
		return helped(migrateDataCmd(ctx, args, stdout, stderr))
	case "help":
		printUsage(stdout)
		return nil
	default:
		fmt.Fprintf(stderr, "devicegrantd: unknown command %q\n\n", cmd)
		printUsage(stderr)
		return errUsage
	}
}

// helped turns an answered --help into success.
func helped(err error) error {
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, usage)
	printSettings(w)
}

func printSettings(w io.Writer) {
	fmt.Fprintln(w)
	for _, s := range settings() {
		fmt.Fprintf(w, "  %-40s %s\n", s.yaml, s.help)
		def := ""
		if s.def != "" {
			def = "  (default " + s.def + ")"
		}
		fmt.Fprintf(w, "  %-40s   $%s%s\n", "", s.env, def)
	}
	fmt.Fprintln(w, `
Durations are Go durations (90s, 5m, 1h); rate limits are BURST/EVERY (10/1m).`)
}
