package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"golang.org/x/term"

	"github.com/devicegrant/devicegrant/devicegrant"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

const userUsage = `Usage:
  devicegrantd user add USERNAME [--password-stdin] [--display-name NAME] [--config FILE]
      Create a local account. USERNAME is the Matrix localpart (alice for
      @alice:example.org): 1-255 of a-z 0-9 . _ = - / +. Usernames are never
      reused. The password (8 characters or more) is asked for twice on a
      terminal, or read as the first line of standard input with
      --password-stdin.
  devicegrantd user list [--config FILE]
      List accounts.
  devicegrantd user deactivate USERNAME [--config FILE]
      Deactivate an account for good: its sessions end at once, the
      homeserver (when configured) deactivates the Matrix user, and the
      username is never given to anyone again.
`

func userCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, userUsage)
		return errUsage
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, userUsage)
		return nil
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("user "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, userUsage, "\nFlags:\n"); fs.PrintDefaults() }
	configPath := fs.String("config", "", "YAML configuration `FILE` (for the database path)")
	var passwordStdin *bool
	var displayName *string
	switch sub {
	case "add":
		passwordStdin = fs.Bool("password-stdin", false, "read the password from the first line of standard input")
		displayName = fs.String("display-name", "", "display `NAME`")
	case "list", "deactivate":
	default:
		fmt.Fprintf(stderr, "devicegrantd: unknown user command %q\n\n%s", sub, userUsage)
		return errUsage
	}
	// Allow flags after the username: "user add alice --password-stdin".
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

	if sub == "list" {
		if len(positional) != 0 {
			return fmt.Errorf("user list takes no arguments")
		}
		users, err := st.Users(ctx)
		if err != nil {
			return err
		}
		server := cfg.ServerName
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "USERNAME\tMATRIX ID\tDISPLAY NAME\tCREATED\tSTATUS")
		for _, u := range users {
			status := "active"
			if !u.DeactivatedAt.IsZero() {
				status = "deactivated"
			}
			fmt.Fprintf(tw, "%s\t@%s:%s\t%s\t%s\t%s\n", u.Username, u.Username, server, u.DisplayName,
				u.CreatedAt.UTC().Format("2006-01-02 15:04"), status)
		}
		return tw.Flush()
	}

	if len(positional) != 1 {
		fmt.Fprint(stderr, userUsage)
		return errUsage
	}
	srv, err := devicegrant.New(cfg.server(), st)
	if err != nil {
		return err
	}
	if sub == "deactivate" {
		u, err := st.UserByUsername(ctx, positional[0])
		if err != nil {
			return fmt.Errorf("user %q: %w", positional[0], err)
		}
		if err := srv.DeactivateUser(ctx, u.ID); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deactivated @%s:%s\n", u.Username, cfg.ServerName)
		return nil
	}
	password, err := readPassword(stdin, stderr, *passwordStdin)
	if err != nil {
		return err
	}
	u, err := srv.CreateUser(ctx, positional[0], password, *displayName)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "created @%s:%s\n", u.Username, cfg.ServerName)
	return nil
}

func readPassword(stdin io.Reader, stderr io.Writer, fromStdin bool) (string, error) {
	if fromStdin {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read password: %w", err)
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	f, ok := stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", errors.New("no terminal to ask for the password on; use --password-stdin")
	}
	fmt.Fprint(stderr, "Password: ")
	p1, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(stderr)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	fmt.Fprint(stderr, "Again: ")
	p2, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(stderr)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if string(p1) != string(p2) {
		return "", errors.New("the passwords differ")
	}
	return string(p1), nil
}
