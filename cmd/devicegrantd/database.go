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
// a URL's password is masked, both in the user information and in the
// query parameters that pgx also reads (password, sslpassword;
// TestPasswordInTheURLQueryNotShown).
func shownDatabase(database string) string {
	if !postgres.IsURL(database) {
		return database
	}
	u, err := url.Parse(database)
	if err != nil {
		return "(a PostgreSQL URL that does not parse)"
	}
	if u.RawQuery != "" {
		// Parameter by parameter rather than through url.Values, which
		// would reorder the others and change how they read.
		params := strings.Split(u.RawQuery, "&")
		for i, p := range params {
			key, _, _ := strings.Cut(p, "=")
			if k, err := url.QueryUnescape(key); err == nil && strings.Contains(strings.ToLower(k), "password") {
				params[i] = key + "=xxxxx"
			}
		}
		u.RawQuery = strings.Join(params, "&")
	}
	return u.Redacted()
}
