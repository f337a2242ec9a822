// Command matrix-pair signs a headless device or bot in to Matrix by QR
// code (the OAuth 2.0 device authorization grant) and keeps its tokens
// fresh. Run "matrix-pair help" for the commands and docs/matrix-pair.md
// for the whole story.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/devicegrant/devicegrant/matrixpair"
	"golang.org/x/oauth2"
)

// Exit codes.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitNotLoggedIn = 3
	exitDenied      = 4
	exitExpired     = 5
	exitUnsupported = 6
	exitInterrupted = 130
)

const exitCodesHelp = `Exit codes:
  0    success
  1    error (network, server, file system)
  2    usage error
  3    not logged in, or the session has ended (run matrix-pair login)
  4    the sign-in was denied on the phone
  5    the sign-in request expired before anyone approved it
  6    the homeserver has no Matrix OAuth 2.0 API or no device grant
  127  exec: the command was not found
  130  interrupted (Ctrl-C or SIGTERM)
`

const mainHelp = `matrix-pair signs a headless device or bot in to Matrix by QR code and
keeps its tokens fresh.

Usage:
  matrix-pair login [flags] [@user:server]   sign in (scan the QR code with a phone)
  matrix-pair token [flags]                  print a valid access token
  matrix-pair exec [flags] -- CMD [ARG...]   run CMD with MATRIX_* variables set
  matrix-pair status [flags]                 show who is signed in and whether it works
  matrix-pair logout [flags]                 end the session and remove local state
  matrix-pair help [COMMAND]                 show help

Every command takes --profile NAME (default "default") to keep several
accounts, --state-dir DIR (default $XDG_STATE_HOME/matrix-pair or
~/.local/state/matrix-pair), --json for machine-readable output and -v for
progress logs on stderr. Run "matrix-pair COMMAND --help" for its flags.

` + exitCodesHelp

// env is what commands need from the outside world; tests replace nothing
// here, they run the real binary.
type env struct {
	stdout, stderr io.Writer
	log            *slog.Logger
}

// exitErr carries an exit code and the message to print.
type exitErr struct {
	code int
	err  error
	// reported: the command already wrote its JSON answer.
	reported bool
}

func (e *exitErr) Error() string { return e.err.Error() }
func (e *exitErr) Unwrap() error { return e.err }

func usageErr(format string, a ...any) error {
	return &exitErr{exitUsage, fmt.Errorf(format, a...), false}
}

// common are the flags every command has.
type common struct {
	profile  string
	stateDir string
	json     bool
	verbose  bool
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.profile, "profile", matrixpair.DefaultProfile, "the account `name` to use; several profiles keep several accounts")
	fs.StringVar(&c.stateDir, "state-dir", "", "state `directory` (default $XDG_STATE_HOME/matrix-pair or ~/.local/state/matrix-pair)")
	fs.BoolVar(&c.json, "json", false, "print machine-readable JSON on stdout")
	fs.BoolVar(&c.verbose, "v", false, "log progress to stderr")
}

func (c *common) dir() (string, error) {
	if c.stateDir != "" {
		return c.stateDir, nil
	}
	return matrixpair.DefaultDir()
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// command is one subcommand.
type command struct {
	synopsis, help string
	run            func(ctx context.Context, e *env, c *common, fs *flag.FlagSet, args []string) error
	flags          func(fs *flag.FlagSet)
	// noArgs: the command takes no positional arguments.
	noArgs bool
}

func commands() map[string]*command {
	return map[string]*command{
		"login":  loginCommand(),
		"token":  tokenCommand(),
		"exec":   execCommand(),
		"status": statusCommand(),
		"logout": logoutCommand(),
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, mainHelp)
		return exitUsage
	}
	cmds := commands()
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			if c, ok := cmds[args[1]]; ok {
				fs := newFlagSet(args[1], c, new(common), stdout)
				fs.SetOutput(stdout)
				fs.Usage()
				return exitOK
			}
		}
		fmt.Fprint(stdout, mainHelp)
		return exitOK
	}
	c, ok := cmds[name]
	if !ok {
		fmt.Fprintf(stderr, "matrix-pair: unknown command %q\n\n%s", name, mainHelp)
		return exitUsage
	}
	var cf common
	fs := newFlagSet(name, c, &cf, stderr)
	positional, err := parseInterspersed(fs, args[1:], name != "exec")
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	level := slog.LevelWarn
	if cf.verbose {
		level = slog.LevelInfo
	}
	e := &env{stdout: stdout, stderr: stderr,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))}
	if c.noArgs && len(positional) != 0 {
		err = usageErr("%s takes no arguments", name)
	} else {
		err = c.run(ctx, e, &cf, fs, positional)
	}
	if err == nil {
		return exitOK
	}
	code := exitCode(ctx, err)
	msg := err.Error()
	if code == exitInterrupted {
		msg = "interrupted"
	}
	fmt.Fprintf(stderr, "matrix-pair %s: %s\n", name, msg)
	var ee *exitErr
	if cf.json && !(errors.As(err, &ee) && ee.reported) {
		writeJSON(stdout, map[string]any{"error": errorName(code), "message": msg, "exit_code": code})
	}
	return code
}

// parseInterspersed parses flags anywhere among the arguments when
// interspersed is true (login @alice:example.org --display ...); "--" ends
// the flags. Otherwise flags stop at the first argument, as for exec.
func parseInterspersed(fs *flag.FlagSet, args []string, interspersed bool) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if !interspersed || len(args) == 0 {
			return append(positional, args...), nil
		}
		// flag stops at "--" (consumed) or a non-flag argument.
		if n := len(args); n > 0 && args[0] != "" && args[0][0] != '-' {
			positional = append(positional, args[0])
			args = args[1:]
			continue
		}
		return append(positional, args...), nil
	}
}

func newFlagSet(name string, c *command, cf *common, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	cf.register(fs)
	if c.flags != nil {
		c.flags(fs)
	}
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage:\n  %s\n\n%s\nFlags:\n", c.synopsis, strings.TrimSpace(c.help)+"\n")
		fs.PrintDefaults()
		fmt.Fprintf(w, "\n%s", exitCodesHelp)
	}
	return fs
}

// exitCode maps an error to the documented exit codes.
func exitCode(ctx context.Context, err error) int {
	var ee *exitErr
	switch {
	case errors.As(err, &ee):
		return ee.code
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return exitInterrupted
	case errors.Is(err, matrixpair.ErrNotLoggedIn), errors.Is(err, matrixpair.ErrSessionEnded):
		return exitNotLoggedIn
	case errors.Is(err, matrixpair.ErrDenied):
		return exitDenied
	case errors.Is(err, matrixpair.ErrExpired):
		return exitExpired
	case errors.Is(err, matrixpair.ErrNoOAuth), errors.Is(err, matrixpair.ErrNoDeviceGrant):
		return exitUnsupported
	}
	return exitError
}

func errorName(code int) string {
	switch code {
	case exitUsage:
		return "usage"
	case exitNotLoggedIn:
		return "not_logged_in"
	case exitDenied:
		return "denied"
	case exitExpired:
		return "expired"
	case exitUnsupported:
		return "unsupported_homeserver"
	case exitInterrupted:
		return "interrupted"
	}
	return "error"
}

func writeJSON(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(w, "%s\n", b)
}

// load reads the profile's session and attaches the logger.
func load(e *env, c *common) (*matrixpair.Session, error) {
	dir, err := c.dir()
	if err != nil {
		return nil, err
	}
	s, err := matrixpair.LoadDir(dir, c.profile)
	if err != nil {
		return nil, err
	}
	s.Logger = e.log
	return s, nil
}

// loadToken reads the profile's session and returns it with a valid access
// token, refreshed first if it is about to expire.
func loadToken(ctx context.Context, e *env, c *common) (*matrixpair.Session, *oauth2.Token, error) {
	s, err := load(e, c)
	if err != nil {
		return nil, nil, err
	}
	t, err := s.Token(ctx)
	if err != nil {
		return nil, nil, err
	}
	return s, t, nil
}
