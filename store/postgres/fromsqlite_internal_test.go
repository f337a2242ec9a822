package postgres

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/postgres/pgtest"
	"github.com/devicegrant/devicegrant/store/sqlite"
)

// TestVerifyTableSeesEveryDifference: the row-by-row check that
// CopyFromSQLite runs before committing fails when one value of one row
// differs, when a row is missing and when one is extra, so a faulty copy
// cannot commit.
func TestVerifyTableSeesEveryDifference(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "src.db")
	lite, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	err = lite.Update(ctx, func(tx store.Tx) error {
		for _, name := range []string{"alice", "bob", "carol"} {
			if err := tx.CreateUser(ctx, store.User{ID: "id-" + name, Username: name, PasswordHash: "h",
				DisplayName: strings.ToUpper(name), CreatedAt: time.UnixMilli(1_700_000_000_000)}); err != nil {
				return err
			}
		}
		return nil
	})
	lite.Close()
	if err != nil {
		t.Fatal(err)
	}
	src, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	st, err := Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	for _, c := range []struct {
		name   string
		change string // run on PostgreSQL after the copy
		want   string // in the error; "" for none
	}{
		{"an exact copy", ``, ``},
		{"one value changed", `UPDATE users SET display_name = 'Bob!' WHERE id = 'id-bob'`, "differs"},
		{"a NULL turned into a value", `UPDATE users SET deactivated_at = 1 WHERE id = 'id-carol'`, "differs"},
		{"a row missing", `DELETE FROM users WHERE id = 'id-alice'`, "3 rows in SQLite, 2 in PostgreSQL"},
		{"a row extra", `INSERT INTO users (id, username, password_hash, created_at) VALUES ('id-dave', 'dave', 'h', 1)`, "differs"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tx, err := st.pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx) //nolint:errcheck
			if n, _, err := copyTable(ctx, src, tx, "users"); err != nil || n != 3 {
				t.Fatalf("copyTable: %d rows, %v", n, err)
			}
			if c.change != "" {
				if _, err := tx.Exec(ctx, c.change); err != nil {
					t.Fatal(err)
				}
			}
			err = verifyTable(ctx, src, tx, "users")
			if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Errorf("verifyTable = %v, want an error containing %q", err, c.want)
			}
		})
	}
}
