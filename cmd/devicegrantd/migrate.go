package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/devicegrant/devicegrant/store/postgres"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

const migrateUsage = `Usage: devicegrantd migrate [--check] [--config FILE]

Brings the configured database (database: or $DEVICEGRANTD_DATABASE, a
SQLite file or a postgres:// URL) to the schema of this version of
devicegrantd, and reports its schema version before and after. serve does
the same when it starts; this command lets an upgrade migrate first, once,
and then restart the instances one at a time.

Processes that migrate at once are safe: on PostgreSQL they take turns
under an advisory lock, on SQLite under the database's write lock, and
none applies a migration another has applied. A SQLite file that does not
exist is created (mode 0600).

With --check nothing is changed: it reports the versions and exits 1 when
migrations are pending (or the database is newer than this program), 0
when the schema is current.
`

// errPending is --check's answer when migrations are pending.
var errPending = errors.New("migrations pending")

func migrateCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var check *bool
	a, err := parseAdmin("migrate", migrateUsage, args, stderr, getenv, func(fs *flag.FlagSet) {
		check = fs.Bool("check", false, "change nothing; exit 1 when migrations are pending")
	})
	if err != nil {
		return err
	}
	if len(a.args) != 0 {
		fmt.Fprint(stderr, migrateUsage)
		return errUsage
	}
	db := a.cfg.Database
	shown := shownDatabase(db)
	if !*check {
		before, after, err := migrateDatabase(ctx, db)
		if err != nil {
			return err
		}
		if before == after {
			fmt.Fprintf(stdout, "%s: schema version %d, up to date; nothing to apply\n", shown, after)
		} else {
			fmt.Fprintf(stdout, "%s: schema version %d before, %d after\n", shown, before, after)
		}
		return nil
	}
	current, latest, err := schemaVersion(ctx, db)
	if err != nil {
		return err
	}
	switch {
	case current == latest:
		fmt.Fprintf(stdout, "%s: schema version %d, up to date\n", shown, current)
		return nil
	case current > latest:
		return fmt.Errorf("%s: schema version %d is newer than this program's (%d); upgrade devicegrantd", shown, current, latest)
	case current == 0:
		fmt.Fprintf(stdout, "%s: no schema yet, this program's is version %d: migrations pending (devicegrantd migrate, or serve, applies them)\n", shown, latest)
	default:
		fmt.Fprintf(stdout, "%s: schema version %d, this program's %d: migrations pending (devicegrantd migrate, or serve, applies them)\n", shown, current, latest)
	}
	return errPending
}

// schemaVersion reads the configured database's schema version and the
// latest this program knows, changing nothing.
func schemaVersion(ctx context.Context, database string) (current, latest int, err error) {
	if postgres.IsURL(database) {
		return postgres.SchemaVersion(ctx, database)
	}
	return sqlite.SchemaVersion(ctx, database)
}

// migrateDatabase brings the configured database's schema up to date and
// returns its version before and after.
func migrateDatabase(ctx context.Context, database string) (before, after int, err error) {
	if postgres.IsURL(database) {
		return postgres.Migrate(ctx, database)
	}
	return sqlite.Migrate(ctx, database)
}
