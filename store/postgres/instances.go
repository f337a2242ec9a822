package postgres

import (
	"context"
	"errors"
	"time"
)

// The instances sharing the database and the places accounts signed in
// from (migration 0008), which the rate limits of package devicegrant
// read.

// LiveInstances counts on its own, not in a transaction that also writes:
// instances that each wrote their heartbeat and read all the others' in
// one SERIALIZABLE transaction would abort one another at every beat.
func (q queries) LiveInstances(ctx context.Context, since time.Time) (int, error) {
	var n int
	err := q.db.QueryRow(ctx, `SELECT count(*) FROM instances WHERE seen_at >= $1`, since.UnixMilli()).Scan(&n)
	return n, wrap("live instances", err)
}

func (t *tx) Heartbeat(ctx context.Context, id string, at time.Time) error {
	if notText(id) {
		return errors.New("postgres: heartbeat: the instance id is not text")
	}
	_, err := t.execN(ctx, "heartbeat", `INSERT INTO instances (id, seen_at) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at`, id, at.UnixMilli())
	return err
}

func (t *tx) DeleteInstance(ctx context.Context, id string) error {
	if notText(id) {
		return nil // there is no such row
	}
	_, err := t.execN(ctx, "delete instance", `DELETE FROM instances WHERE id = $1`, id)
	return err
}

func (t *tx) DeleteInstances(ctx context.Context, before time.Time) (int64, error) {
	return t.execN(ctx, "delete instances", `DELETE FROM instances WHERE seen_at < $1`, before.UnixMilli())
}

func (q queries) KnownPlace(ctx context.Context, userID, place string) (time.Time, error) {
	if notText(userID, place) {
		return time.Time{}, notFound("known place")
	}
	var seen time.Time
	err := q.db.QueryRow(ctx, `SELECT seen_at FROM known_places WHERE user_id = $1 AND place = $2`,
		userID, place).Scan(nt(&seen))
	return seen, wrap("known place", err)
}

func (t *tx) RememberPlace(ctx context.Context, userID, place string, at time.Time, keep int) error {
	if notText(userID, place) {
		return errors.New("postgres: remember place: the key is not text")
	}
	if _, err := t.execN(ctx, "remember place", `INSERT INTO known_places (user_id, place, seen_at) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, place) DO UPDATE SET seen_at = GREATEST(known_places.seen_at, excluded.seen_at)`,
		userID, place, at.UnixMilli()); err != nil {
		return err
	}
	_, err := t.execN(ctx, "remember place", `DELETE FROM known_places WHERE user_id = $1 AND place NOT IN (
		SELECT place FROM known_places WHERE user_id = $1 ORDER BY seen_at DESC, place COLLATE "C" LIMIT $2)`,
		userID, max(keep, 1))
	return err
}

func (t *tx) ForgetPlaces(ctx context.Context, before time.Time) (int64, error) {
	return t.execN(ctx, "forget places", `DELETE FROM known_places WHERE seen_at < $1`, before.UnixMilli())
}
