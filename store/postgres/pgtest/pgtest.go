// Package pgtest gives tests an empty PostgreSQL schema of their own in
// the database that DEVICEGRANT_POSTGRES_URL names (test.sh starts one).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// URL returns a postgres:// URL whose search_path is a new, empty schema,
// dropped when the test ends, so tests sharing the database never see
// each other's rows. Without DEVICEGRANT_POSTGRES_URL the test is skipped,
// unless DEVICEGRANT_POSTGRES_TESTS=1 (as test.sh sets), when it fails:
// CI must not pass without PostgreSQL.
func URL(t testing.TB) string {
	t.Helper()
	base := os.Getenv("DEVICEGRANT_POSTGRES_URL")
	if base == "" {
		if os.Getenv("DEVICEGRANT_POSTGRES_TESTS") == "1" {
			t.Fatal("DEVICEGRANT_POSTGRES_TESTS=1 but DEVICEGRANT_POSTGRES_URL is not set")
		}
		t.Skip("DEVICEGRANT_POSTGRES_URL not set; test.sh starts a PostgreSQL and sets it")
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal("DEVICEGRANT_POSTGRES_URL does not parse as a URL")
	}
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(base) // it knows pool_max_conns and the like
	if err != nil {
		t.Fatal("DEVICEGRANT_POSTGRES_URL does not parse")
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		t.Fatalf("connect to DEVICEGRANT_POSTGRES_URL: %v", err)
	}
	defer conn.Close(ctx)
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	schema := "dgtest_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
		if err != nil {
			t.Errorf("connect to drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// SilentServer listens on loopback, accepts TCP connections and never
// says a word, as a hung PostgreSQL or half of a failover does, and
// returns its address (host:port), for URLs of a database that never
// answers. It needs no PostgreSQL.
func SilentServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	return ln.Addr().String()
}
