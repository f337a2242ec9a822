package main

import (
	"context"
	"net/url"
	"strings"

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
// a URL's password is masked, before the host and in the query too
// (?password=, ?sslpassword=, which libpq and pgx take as well;
// TestPasswordInTheURLQueryNotShown).
func shownDatabase(database string) string {
	if !postgres.IsURL(database) {
		return database
	}
	u, err := url.Parse(database)
	if err != nil {
		return "(a PostgreSQL URL that does not parse)"
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return "(a PostgreSQL URL whose query does not parse)"
	}
	for k := range q {
		if strings.Contains(strings.ToLower(k), "password") {
			q.Set(k, "xxxxx")
		}
	}
	u.RawQuery = q.Encode()
	return u.Redacted()
}
