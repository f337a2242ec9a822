package postgres

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// CheckNotices tells whether a notification sent through one connection to
// the database at url reaches another that listens, as announcements
// between instances must (store.Watcher). It changes nothing: the channel
// is a fresh random one and nothing is written. A pooler in transaction
// mode between devicegrantd and PostgreSQL, which cannot carry LISTEN, is
// what this catches.
func CheckNotices(ctx context.Context, url string, wait time.Duration) error {
	cfg, err := parseURL(url)
	if err != nil {
		return err
	}
	listener, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return fmt.Errorf("postgres: connect: %w", err)
	}
	defer listener.Close(context.Background())
	sender, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return fmt.Errorf("postgres: connect: %w", err)
	}
	defer sender.Close(context.Background())
	channel := "devicegrant check " + rand.Text()
	if _, err := listener.Exec(ctx, `LISTEN `+pgx.Identifier{channel}.Sanitize()); err != nil {
		return fmt.Errorf("postgres: listen: %w", err)
	}
	if _, err := sender.Exec(ctx, `SELECT pg_notify($1, 'ping')`, channel); err != nil {
		return fmt.Errorf("postgres: notify: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		n, err := listener.WaitForNotification(wctx)
		if err != nil {
			if wctx.Err() != nil && ctx.Err() == nil {
				return fmt.Errorf("postgres: a notification sent on one connection did not reach another listening within %s (a pooler in transaction mode in between?)", wait)
			}
			return fmt.Errorf("postgres: wait for a notification: %w", err)
		}
		if n.Channel == channel && n.Payload == "ping" {
			return nil
		}
	}
}
