package main

import (
	"context"
	"net/url"

	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/postgres"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

// openStore opens the configured database: PostgreSQL when it is a
// postgres:// or postgresql:// URL, which several instances may share, and
// otherwise the SQLite file at that path.
func openStore(ctx context.Context, database string) (store.Store, error) {
	if postgres.IsURL(database) {
		return postgres.Open(ctx, database)
	}
	return sqlite.Open(ctx, database)
}

// shownDatabase is the database setting as logs and messages may show it:
// a URL's password is masked.
func shownDatabase(database string) string {
	if !postgres.IsURL(database) {
		return database
	}
	u, err := url.Parse(database)
	if err != nil {
		return "(a PostgreSQL URL that does not parse)"
	}
	return u.Redacted()
}
