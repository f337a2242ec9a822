package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/devicegrant/devicegrant/store/sqlite"
)

// TableCount is how many rows of one table CopyFromSQLite moved, and how
// many of their text values it had to mend: SQLite keeps any bytes,
// PostgreSQL only UTF-8 text without NUL, so each byte that is not is
// stored as U+FFFD.
type TableCount struct {
	Table    string
	Rows     int
	Replaced int
}

// notCopied are tables that are not data: each backend keeps its own
// schema version, and the token epoch only tells caches of running
// processes that something changed (PostgreSQL's starts afresh, which no
// cache of the SQLite database can have seen), and the instances are the
// running processes' heartbeats, which the stopped SQLite one has none of
// worth keeping. (The places accounts signed in from are data: they move.)
// Leases, likewise, name processes that ran on SQLite: the instances on
// PostgreSQL start without them, so the first to start does the start-up
// sync.
var notCopied = []string{"schema_version", "token_epoch", "instances", "leases"}

// CopyFromSQLite moves the SQLite database at sqlitePath into the empty
// PostgreSQL database at pgURL, in one transaction on PostgreSQL. Both are
// first brought to the current schema, so their tables are the same. It
// refuses a target with any row in its tables, and before committing it
// reads every row back and compares it with the source, so that a move
// that would lose or change anything commits nothing; the one change it
// makes is to text PostgreSQL cannot store (TableCount.Replaced), which
// it compares as mended. The SQLite file is
// not changed (beyond its own migrations) and should not be in use.
func CopyFromSQLite(ctx context.Context, sqlitePath, pgURL string) ([]TableCount, error) {
	if _, err := os.Stat(sqlitePath); err != nil {
		return nil, fmt.Errorf("postgres: the SQLite database: %w", err)
	}
	lite, err := sqlite.Open(ctx, sqlitePath) // its migrations, so its tables match ours
	if err != nil {
		return nil, err
	}
	if err := lite.Close(); err != nil {
		return nil, fmt.Errorf("postgres: close the SQLite database: %w", err)
	}
	src, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: sqlitePath}).EscapedPath()+"?mode=ro&_query_only=1")
	if err != nil {
		return nil, fmt.Errorf("postgres: open %s: %w", sqlitePath, err)
	}
	defer src.Close()
	// A daemon left running on the file would go on writing, and what it
	// wrote after its table was read would be lost: SQLite's data_version,
	// read on one connection, changes when any other commits.
	watch, err := src.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("postgres: open %s: %w", sqlitePath, err)
	}
	defer watch.Close()
	dataVersion := func() (int64, error) {
		var v int64
		err := watch.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&v)
		return v, err
	}
	version, err := dataVersion()
	if err != nil {
		return nil, fmt.Errorf("postgres: read %s: %w", sqlitePath, err)
	}
	// changed returns an error if the file changed since the move began.
	changed := func() error {
		v, err := dataVersion()
		if err != nil {
			return fmt.Errorf("postgres: read %s: %w", sqlitePath, err)
		}
		if v != version {
			return fmt.Errorf("postgres: %s changed during the move: stop the daemon that uses it, then move again (nothing was committed)", sqlitePath)
		}
		return nil
	}
	st, err := Open(ctx, pgURL)
	if err != nil {
		return nil, err
	}
	defer st.Close()

	tables, err := sqliteTables(ctx, src)
	if err != nil {
		return nil, err
	}
	tx, err := st.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	if err != nil {
		return nil, fmt.Errorf("postgres: begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	var moved []TableCount
	for _, t := range tables {
		var nonEmpty bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+pgx.Identifier{t}.Sanitize()+`)`).Scan(&nonEmpty); err != nil {
			return nil, fmt.Errorf("postgres: table %s of the target: %w", t, err)
		}
		if nonEmpty {
			return nil, fmt.Errorf("postgres: the target database is not empty (table %s has rows); migrate-data moves into an empty database only", t)
		}
	}
	for _, t := range tables {
		n, mended, err := copyTable(ctx, src, tx, t)
		if err != nil {
			// A change under the move is the likelier cause.
			return nil, errors.Join(changed(), err)
		}
		moved = append(moved, TableCount{Table: t, Rows: n, Replaced: mended})
	}
	for _, t := range tables {
		if err := verifyTable(ctx, src, tx, t); err != nil {
			if c := changed(); c != nil {
				return nil, c
			}
			return nil, err
		}
	}
	if err := changed(); err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("postgres: commit the move: %w", err)
	}
	return moved, nil
}

// sqliteTables lists the data tables of the SQLite database, each after
// the tables its foreign keys point to, so rows can be inserted in order.
func sqliteTables(ctx context.Context, src *sql.DB) ([]string, error) {
	rows, err := src.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("postgres: list the SQLite tables: %w", err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("postgres: list the SQLite tables: %w", err)
		}
		if !slices.Contains(notCopied, n) {
			names = append(names, n)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list the SQLite tables: %w", err)
	}
	deps := map[string][]string{}
	for _, n := range names {
		fk, err := src.QueryContext(ctx, `SELECT "table" FROM pragma_foreign_key_list(?)`, n)
		if err != nil {
			return nil, fmt.Errorf("postgres: foreign keys of %s: %w", n, err)
		}
		for fk.Next() {
			var to string
			if err := fk.Scan(&to); err != nil {
				fk.Close()
				return nil, fmt.Errorf("postgres: foreign keys of %s: %w", n, err)
			}
			if to != n {
				deps[n] = append(deps[n], to)
			}
		}
		fk.Close()
		if err := fk.Err(); err != nil {
			return nil, fmt.Errorf("postgres: foreign keys of %s: %w", n, err)
		}
	}
	var order []string
	done := map[string]bool{}
	var visit func(n string, depth int) error
	visit = func(n string, depth int) error {
		if done[n] {
			return nil
		}
		if depth > len(names) {
			return fmt.Errorf("postgres: the SQLite tables' foreign keys form a cycle at %s", n)
		}
		for _, d := range deps[n] {
			if err := visit(d, depth+1); err != nil {
				return err
			}
		}
		done[n] = true
		order = append(order, n)
		return nil
	}
	for _, n := range names {
		if err := visit(n, 0); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// columns returns the table's column names as SQLite has them, each with
// its PostgreSQL type, and fails unless both have the same columns.
func columns(ctx context.Context, src *sql.DB, tx pgx.Tx, table string) ([]string, []string, error) {
	rows, err := src.QueryContext(ctx, `SELECT name FROM pragma_table_info(?) ORDER BY cid`, table)
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: columns of %s in SQLite: %w", table, err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("postgres: columns of %s in SQLite: %w", table, err)
		}
		names = append(names, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("postgres: columns of %s in SQLite: %w", table, err)
	}
	pgRows, err := tx.Query(ctx, `SELECT column_name, data_type FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1`, table)
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: columns of %s: %w", table, err)
	}
	pgTypes := map[string]string{}
	for pgRows.Next() {
		var n, typ string
		if err := pgRows.Scan(&n, &typ); err != nil {
			pgRows.Close()
			return nil, nil, fmt.Errorf("postgres: columns of %s: %w", table, err)
		}
		pgTypes[n] = typ
	}
	pgRows.Close()
	if err := pgRows.Err(); err != nil {
		return nil, nil, fmt.Errorf("postgres: columns of %s: %w", table, err)
	}
	if len(pgTypes) != len(names) {
		return nil, nil, fmt.Errorf("postgres: table %s has %d columns in SQLite and %d in PostgreSQL", table, len(names), len(pgTypes))
	}
	types := make([]string, len(names))
	for i, n := range names {
		if types[i] = pgTypes[n]; types[i] == "" {
			return nil, nil, fmt.Errorf("postgres: column %s.%s is missing in PostgreSQL", table, n)
		}
	}
	return names, types, nil
}

// sqliteRows reads every row of a SQLite table as PostgreSQL values of
// the given types, and counts the text values it mended (mendText).
func sqliteRows(ctx context.Context, src *sql.DB, table string, cols, types []string) ([][]any, int, error) {
	quoted := make([]string, len(cols))
	for i, c := range cols {
		quoted[i] = `"` + c + `"`
	}
	rows, err := src.QueryContext(ctx, `SELECT `+strings.Join(quoted, ", ")+` FROM "`+table+`"`)
	if err != nil {
		return nil, 0, fmt.Errorf("postgres: read %s from SQLite: %w", table, err)
	}
	defer rows.Close()
	var out [][]any
	mended := 0
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, 0, fmt.Errorf("postgres: read %s from SQLite: %w", table, err)
		}
		for i, v := range vals {
			if vals[i], err = asType(v, types[i]); err != nil {
				return nil, 0, fmt.Errorf("postgres: %s.%s: %w", table, cols[i], err)
			}
			if t, ok := vals[i].(string); ok && !isText(t) {
				vals[i] = mendText(t)
				mended++
			}
		}
		out = append(out, vals)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("postgres: read %s from SQLite: %w", table, err)
	}
	return out, mended, nil
}

// isText tells whether PostgreSQL can store s as text: UTF-8, without NUL.
func isText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

// mendText makes s text PostgreSQL can store: each byte that is not part
// of a UTF-8 character, and each NUL, becomes U+FFFD.
func mendText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// asType converts a value as SQLite returned it to the Go type pgx uses
// for a PostgreSQL column of type typ (SQLite's types are per value).
func asType(v any, typ string) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch typ {
	case "bigint", "integer":
		switch x := v.(type) {
		case int64:
			return x, nil
		case int32:
			return int64(x), nil
		}
	case "boolean":
		switch x := v.(type) {
		case bool:
			return x, nil
		case int64:
			return x != 0, nil
		}
	case "bytea":
		switch x := v.(type) {
		case []byte:
			return slices.Clone(x), nil
		case string:
			return []byte(x), nil
		}
	case "text":
		switch x := v.(type) {
		case string:
			return x, nil
		case []byte:
			return string(x), nil
		}
	default:
		return nil, fmt.Errorf("column type %s is not handled", typ)
	}
	return nil, fmt.Errorf("a %T value for a %s column", v, typ)
}

// copyTable copies every row of a table and moves the identity sequence
// (the outbox's ids) past the copied ids. It returns how many rows it
// copied, and how many text values it mended on the way.
func copyTable(ctx context.Context, src *sql.DB, tx pgx.Tx, table string) (int, int, error) {
	cols, types, err := columns(ctx, src, tx, table)
	if err != nil {
		return 0, 0, err
	}
	rows, mended, err := sqliteRows(ctx, src, table, cols, types)
	if err != nil {
		return 0, 0, err
	}
	n, err := tx.CopyFrom(ctx, pgx.Identifier{table}, cols, pgx.CopyFromRows(rows))
	if err != nil {
		return 0, 0, fmt.Errorf("postgres: copy %s: %w", table, err)
	}
	idRows, err := tx.Query(ctx, `SELECT column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1 AND is_identity = 'YES'`, table)
	if err != nil {
		return 0, 0, fmt.Errorf("postgres: identity columns of %s: %w", table, err)
	}
	ids, err := pgx.CollectRows(idRows, pgx.RowTo[string])
	if err != nil {
		return 0, 0, fmt.Errorf("postgres: identity columns of %s: %w", table, err)
	}
	for _, c := range ids {
		if _, err := tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence($1, $2), max(`+pgx.Identifier{c}.Sanitize()+`))
			FROM `+pgx.Identifier{table}.Sanitize()+` HAVING max(`+pgx.Identifier{c}.Sanitize()+`) IS NOT NULL`,
			pgx.Identifier{table}.Sanitize(), c); err != nil {
			return 0, 0, fmt.Errorf("postgres: move the sequence of %s.%s: %w", table, c, err)
		}
	}
	return int(n), mended, nil
}

// verifyTable reads the table back from PostgreSQL and from SQLite and
// fails unless both hold the same rows, each as many times.
func verifyTable(ctx context.Context, src *sql.DB, tx pgx.Tx, table string) error {
	cols, types, err := columns(ctx, src, tx, table)
	if err != nil {
		return err
	}
	want, _, err := sqliteRows(ctx, src, table, cols, types)
	if err != nil {
		return err
	}
	left := map[string]int{}
	for _, r := range want {
		left[rowKey(r)]++
	}
	rows, err := tx.Query(ctx, `SELECT `+strings.Join(quoteAll(cols), ", ")+` FROM `+pgx.Identifier{table}.Sanitize())
	if err != nil {
		return fmt.Errorf("postgres: read %s back: %w", table, err)
	}
	defer rows.Close()
	got := 0
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return fmt.Errorf("postgres: read %s back: %w", table, err)
		}
		for i, v := range vals {
			if vals[i], err = asType(v, types[i]); err != nil {
				return fmt.Errorf("postgres: read %s.%s back: %w", table, cols[i], err)
			}
		}
		k := rowKey(vals)
		if left[k] == 0 {
			return fmt.Errorf("postgres: verify %s: a row in PostgreSQL differs from every row in SQLite", table)
		}
		left[k]--
		got++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("postgres: read %s back: %w", table, err)
	}
	if got != len(want) {
		return fmt.Errorf("postgres: verify %s: %d rows in SQLite, %d in PostgreSQL", table, len(want), got)
	}
	return nil
}

func quoteAll(cols []string) []string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = pgx.Identifier{c}.Sanitize()
	}
	return q
}

// rowKey encodes a row's values (as asType returns them) unambiguously.
func rowKey(vals []any) string {
	var b strings.Builder
	for _, v := range vals {
		switch x := v.(type) {
		case nil:
			b.WriteString("n,")
		case bool:
			b.WriteString("t" + strconv.FormatBool(x) + ",")
		case int64:
			b.WriteString("i" + strconv.FormatInt(x, 10) + ",")
		case string:
			b.WriteString("s" + strconv.Quote(x) + ",")
		case []byte:
			b.WriteString("b" + strconv.Quote(string(x)) + ",")
		default:
			panic(errors.New("rowKey: unexpected type"))
		}
	}
	return b.String()
}
