package sqlite

import (
	"context"
	"time"
)

// The instances sharing the database and the places accounts signed in
// from (migration 0008), which the rate limits of package devicegrant
// read.

func (q queries) LiveInstances(ctx context.Context, since time.Time) (int, error) {
	var n int
	err := q.db.QueryRowContext(ctx, `SELECT count(*) FROM instances WHERE seen_at >= ?`, since.UnixMilli()).Scan(&n)
	return n, wrap("live instances", err)
}

func (t *tx) Heartbeat(ctx context.Context, id string, at time.Time) error {
	_, err := t.db.ExecContext(ctx, `INSERT INTO instances (id, seen_at) VALUES (?, ?)
		ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at`, id, at.UnixMilli())
	return wrap("heartbeat", err)
}

func (t *tx) DeleteInstance(ctx context.Context, id string) error {
	_, err := t.db.ExecContext(ctx, `DELETE FROM instances WHERE id = ?`, id)
	return wrap("delete instance", err)
}

func (t *tx) DeleteInstances(ctx context.Context, before time.Time) (int64, error) {
	res, err := t.db.ExecContext(ctx, `DELETE FROM instances WHERE seen_at < ?`, before.UnixMilli())
	if err != nil {
		return 0, wrap("delete instances", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

func (q queries) KnownPlace(ctx context.Context, userID, place string) (time.Time, error) {
	var seen time.Time
	err := q.db.QueryRowContext(ctx, `SELECT seen_at FROM known_places WHERE user_id = ? AND place = ?`,
		userID, place).Scan(nt(&seen))
	return seen, wrap("known place", err)
}

func (t *tx) RememberPlace(ctx context.Context, userID, place string, at time.Time, keep int) error {
	if _, err := t.db.ExecContext(ctx, `INSERT INTO known_places (user_id, place, seen_at) VALUES (?, ?, ?)
		ON CONFLICT (user_id, place) DO UPDATE SET seen_at = max(seen_at, excluded.seen_at)`,
		userID, place, at.UnixMilli()); err != nil {
		return wrap("remember place", err)
	}
	_, err := t.db.ExecContext(ctx, `DELETE FROM known_places WHERE user_id = ?1 AND place NOT IN (
		SELECT place FROM known_places WHERE user_id = ?1 ORDER BY seen_at DESC, place LIMIT ?2)`, userID, max(keep, 1))
	return wrap("remember place", err)
}

func (t *tx) ForgetPlaces(ctx context.Context, before time.Time) (int64, error) {
	res, err := t.db.ExecContext(ctx, `DELETE FROM known_places WHERE seen_at < ?`, before.UnixMilli())
	if err != nil {
		return 0, wrap("forget places", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}
