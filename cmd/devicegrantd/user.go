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
  devicegrantd user show USERNAME [--all] [--json] [--config FILE]
      Show an account and its device sessions (session id, device id,
      client, how the client signs in, created, last active, last address);
      with --all ended sessions too. End one with "devicegrantd session end".
  devicegrantd user set-password USERNAME [--password-stdin] [--end-sessions] [--config FILE]
      Give an account a new password (asked for twice, or the first line of
      standard input). The person is signed out of every browser at once;
      with --end-sessions every device is signed out too (tokens stop
      working at once, and the homeserver is told to delete the devices).
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
	var passwordStdin, endSessions, all, asJSON bool
	var displayName string
	var extra func(*flag.FlagSet)
	switch sub {
	case "add":
		extra = func(fs *flag.FlagSet) {
			fs.BoolVar(&passwordStdin, "password-stdin", false, "read the password from the first line of standard input")
			fs.StringVar(&displayName, "display-name", "", "display `NAME`")
		}
	case "set-password":
		extra = func(fs *flag.FlagSet) {
			fs.BoolVar(&passwordStdin, "password-stdin", false, "read the password from the first line of standard input")
			fs.BoolVar(&endSessions, "end-sessions", false, "also sign every device out")
		}
	case "show":
		extra = func(fs *flag.FlagSet) {
			fs.BoolVar(&all, "all", false, "list ended sessions too")
			fs.BoolVar(&asJSON, "json", false, "print JSON instead of text")
		}
	case "list", "deactivate":
	default:
		fmt.Fprintf(stderr, "devicegrantd: unknown user command %q\n\n%s", sub, userUsage)
		return errUsage
	}
	return runAdmin(ctx, "user "+sub, userUsage, args, stderr, getenv, extra, func(a *admin) error {
		want := 1
		if sub == "list" {
			want = 0
		}
		if len(a.args) != want {
			fmt.Fprint(stderr, userUsage)
			return errUsage
		}
		switch sub {
		case "list":
			return listUsers(ctx, a, stdout)
		case "deactivate":
			u, err := a.st.UserByUsername(ctx, a.args[0])
			if err != nil {
				return fmt.Errorf("user %q: %w", a.args[0], err)
			}
			if err := a.srv.DeactivateUser(ctx, u.ID); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "deactivated @%s:%s\n", u.Username, a.cfg.ServerName)
			return nil
		case "show":
			return showUser(ctx, a, stdout, all, asJSON)
		case "set-password":
			u, err := a.st.UserByUsername(ctx, a.args[0])
			if err != nil {
				return fmt.Errorf("user %q: %w", a.args[0], err)
			}
			password, err := readPassword(stdin, stderr, passwordStdin)
			if err != nil {
				return err
			}
			if err := a.srv.SetPassword(ctx, u.ID, password, endSessions); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "new password for @%s:%s; signed out of every browser\n", u.Username, a.cfg.ServerName)
			if endSessions {
				fmt.Fprintln(stdout, "every device session ended")
			}
			return nil
		}
		password, err := readPassword(stdin, stderr, passwordStdin)
		if err != nil {
			return err
		}
		u, err := a.srv.CreateUser(ctx, a.args[0], password, displayName)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "created @%s:%s\n", u.Username, a.cfg.ServerName)
		return nil
	})
}

func listUsers(ctx context.Context, a *admin, stdout io.Writer) error {
	users, err := a.st.Users(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USERNAME\tMATRIX ID\tDISPLAY NAME\tCREATED\tSTATUS")
	for _, u := range users {
		status := "active"
		if !u.DeactivatedAt.IsZero() {
			status = "deactivated"
		}
		fmt.Fprintf(tw, "%s\t@%s:%s\t%s\t%s\t%s\n", u.Username, u.Username, a.cfg.ServerName, u.DisplayName,
			u.CreatedAt.UTC().Format("2006-01-02 15:04"), status)
	}
	return tw.Flush()
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
