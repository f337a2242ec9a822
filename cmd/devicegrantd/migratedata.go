package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/devicegrant/devicegrant/store/postgres"
)

const migrateDataUsage = `Usage: devicegrantd migrate-data --from FILE.db --to postgres://USER:PASS@HOST/DB?sslmode=...

Moves a SQLite database (FILE.db) into an empty PostgreSQL database, to
run devicegrantd on PostgreSQL from then on. Stop the daemon first: the
SQLite file must not change during the move (a move that sees it change
commits nothing and says so), nor after it, which no move can see.

Both databases are first brought to the current schema. The copy is one
transaction on PostgreSQL; before it commits, every row of every table is
read back and compared with SQLite, so a move that would lose or change
anything leaves PostgreSQL empty. The one change it makes is to text
that is not UTF-8 or holds NUL, which SQLite keeps and PostgreSQL cannot:
each such byte becomes U+FFFD, and the values so mended are counted per
table. A target whose tables hold any row is refused. SQLite is only brought up to date (keep it until the move has proved
itself). Then set database: postgres://... (or DEVICEGRANTD_DATABASE) and
start devicegrantd: tokens, sessions, accounts, clients, signing keys and
undelivered homeserver calls carry on.
`

func migrateDataCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate-data", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, migrateDataUsage, "\nFlags:\n"); fs.PrintDefaults() }
	from := fs.String("from", "", "the SQLite database `FILE` to move")
	to := fs.String("to", "", "the empty PostgreSQL database, a postgres:// `URL`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 || *from == "" || *to == "" {
		fmt.Fprint(stderr, migrateDataUsage)
		return errUsage
	}
	if postgres.IsURL(*from) {
		return errors.New("--from names a PostgreSQL database; it takes a SQLite file")
	}
	if !postgres.IsURL(*to) {
		// Not quoted back: a mistyped URL may still hold the password.
		return errors.New("--to is not a postgres:// or postgresql:// URL")
	}
	moved, err := postgres.CopyFromSQLite(ctx, *from, *to)
	if err != nil {
		return fmt.Errorf("migrate-data: %w", err)
	}
	total := 0
	parts := make([]string, 0, len(moved))
	for _, m := range moved {
		total += m.Rows
		parts = append(parts, fmt.Sprintf("%s %d", m.Table, m.Rows))
	}
	fmt.Fprintf(stdout, "moved %s to %s: %d rows in %d tables, every row verified\n  %s\n",
		*from, shownDatabase(*to), total, len(moved), strings.Join(parts, ", "))
	var mended []string
	for _, m := range moved {
		if m.Replaced > 0 {
			mended = append(mended, fmt.Sprintf("%s %d", m.Table, m.Replaced))
		}
	}
	if len(mended) > 0 {
		fmt.Fprintf(stdout, "text values that were not UTF-8 or held NUL, which PostgreSQL cannot store, have U+FFFD for each bad byte:\n  %s\n",
			strings.Join(mended, ", "))
	}
	fmt.Fprintf(stdout, "next: set database: %s (or DEVICEGRANTD_DATABASE) and start devicegrantd\n", shownDatabase(*to))
	return nil
}
