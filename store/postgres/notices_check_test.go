package postgres_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/devicegrant/devicegrant/store/postgres"
	"github.com/devicegrant/devicegrant/store/postgres/pgtest"
)

// CheckNotices passes against PostgreSQL itself, and fails, saying why,
// when what sits in between does not carry notifications to a listening
// session, as a pooler in transaction mode does not: here a proxy that
// drops PostgreSQL's NotificationResponse messages.
func TestCheckNotices(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.URL(t)
	if err := postgres.CheckNotices(ctx, dsn, 3*time.Second); err != nil {
		t.Fatalf("against PostgreSQL itself: %v", err)
	}
	via := dropNotifications(t, dsn)
	err := postgres.CheckNotices(ctx, via, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not reach") {
		t.Fatalf("through a proxy that drops notifications: %v, want a notification that did not reach", err)
	}
}

// dropNotifications starts a loopback proxy to the server of dsn that
// passes everything but the server's NotificationResponse ('A') messages,
// and returns dsn pointing at it.
func dropNotifications(t *testing.T, dsn string) string {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	network, addr := "tcp", net.JoinHostPort(cfg.Host, itoa(int(cfg.Port)))
	if strings.HasPrefix(cfg.Host, "/") {
		network, addr = "unix", cfg.Host+"/.s.PGSQL."+itoa(int(cfg.Port))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial(network, addr)
			if err != nil {
				client.Close()
				continue
			}
			go func() { _, _ = io.Copy(server, client); server.Close() }()
			go func() { filterNotifications(client, server); client.Close() }()
		}
	}()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Del("host")
	q.Set("sslmode", "disable")
	u.RawQuery = q.Encode()
	u.Host = ln.Addr().String()
	return u.String()
}

// filterNotifications copies the server's messages (a type byte and a
// length that counts itself) to the client, leaving out notifications.
func filterNotifications(dst io.Writer, src io.Reader) {
	var head [5]byte
	for {
		if _, err := io.ReadFull(src, head[:]); err != nil {
			return
		}
		n := int64(binary.BigEndian.Uint32(head[1:])) - 4
		if head[0] == 'A' {
			if _, err := io.CopyN(io.Discard, src, n); err != nil {
				return
			}
			continue
		}
		if _, err := dst.Write(head[:]); err != nil {
			return
		}
		if _, err := io.CopyN(dst, src, n); err != nil {
			return
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
