package postgres

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/devicegrant/devicegrant/store"
)

// Announcements (store.Announcer, store.Watcher) travel by NOTIFY on one
// channel per schema, so that deployments, and tests, sharing a database
// in different schemas do not hear each other. A transaction collects
// what it announces and sends it just before its commit: PostgreSQL
// delivers a notification only if the transaction that sent it commits,
// so a run of Update that rolls back, to run again or for good, tells
// nobody anything. Each Watch holds a connection of its own outside the
// pool (LISTEN belongs to a session, so it cannot go through a pooler in
// transaction mode such as PgBouncer's), reconnects after a loss, and then
// reports a resync, since what was sent meanwhile is gone.
//
// Any session of the database may LISTEN on any channel and NOTIFY on
// it: the payloads are as public as the database's list of sessions, and
// one could be forged. Callers announce keys that are not secret, and
// treat a notice as a reason to forget, never to believe (store.Notice).

// notifier is a Store's end of the channel.
type notifier struct {
	channel string          // the schema's channel
	origin  string          // this Store's id in its payloads, so Watch skips its own
	conn    *pgx.ConnConfig // for the listening connection
	idle    time.Duration   // listenIdle, shorter in a test
	wait    time.Duration   // pingTimeout, shorter in a test
}

// payload is one notification: keys of one topic, from one Store.
type payload struct {
	Origin string   `json:"o"`
	Topic  string   `json:"t"`
	Keys   []string `json:"k"`
}

// announcement is one Announce call, kept until the commit.
type announcement struct{ topic, key string }

const (
	// maxPayload is below NOTIFY's limit (a payload must be shorter than
	// 8000 bytes in a default build), with room to spare.
	maxPayload = 7900
	// maxChannel is the longest identifier PostgreSQL keeps (NAMEDATALEN-1).
	maxChannel = 63
	// listenIdle is how long the listener waits for a notification before
	// it checks its connection: a connection that died without a word (a
	// host gone, a half-open TCP connection) is found this late at worst,
	// plus pingTimeout. pingTimeout also bounds connecting and LISTEN, so
	// that a server that accepts and then says nothing cannot hold the
	// listener until TCP gives up, minutes after the database is back.
	listenIdle  = 30 * time.Second
	pingTimeout = 10 * time.Second
	// The pause before reconnecting doubles from minPause to maxPause, and
	// starts over once a connection has lasted stablePeriod.
	minPause     = 100 * time.Millisecond
	maxPause     = 10 * time.Second
	stablePeriod = time.Minute
)

func newNotifier(ctx context.Context, pool *pgxpool.Pool) (notifier, error) {
	var schema pgtype.Text
	if err := pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return notifier{}, fmt.Errorf("postgres: read current schema: %w", err)
	}
	channel := "devicegrant " + schema.String
	if len(channel) > maxChannel {
		sum := sha256.Sum256([]byte(schema.String))
		channel = "devicegrant " + hex.EncodeToString(sum[:16])
	}
	b := make([]byte, 8)
	rand.Read(b)
	conn := pool.Config().ConnConfig.Copy()
	// So that an operator sees in pg_stat_activity which session listens
	// for which schema.
	conn.RuntimeParams["application_name"] = "listen " + channel
	return notifier{channel: channel, origin: hex.EncodeToString(b), conn: conn, idle: listenIdle, wait: pingTimeout}, nil
}

// Announce implements store.Announcer: the announcement goes out with the
// commit (Store.updateOnce).
func (t *tx) Announce(topic, key string) {
	t.announced = append(t.announced, announcement{topic, key})
}

// send notifies, in tx, what a transaction announced: one payload per
// topic, or more when the keys do not fit in one; a key too long for any
// payload, or not valid UTF-8 (JSON would change it, and the change would
// make a listener forget the wrong key), turns into every key of its
// topic.
func (n notifier) send(ctx context.Context, tx pgx.Tx, announced []announcement) error {
	if len(announced) == 0 {
		return nil
	}
	payloads, err := n.pack(announced)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p`, n.channel, payloads); err != nil {
		return fmt.Errorf("postgres: notify: %w", err)
	}
	return nil
}

// pack groups announcements into payloads of at most maxPayload bytes.
func (n notifier) pack(announced []announcement) ([]string, error) {
	var topics []string
	keys := map[string][]string{}
	seen := map[announcement]bool{}
	for _, a := range announced {
		if !utf8.ValidString(a.topic) {
			return nil, fmt.Errorf("postgres: topic %q is not UTF-8", a.topic)
		}
		if !utf8.ValidString(a.key) {
			a.key = ""
		}
		if _, ok := keys[a.topic]; !ok {
			topics = append(topics, a.topic)
		}
		if !seen[a] {
			seen[a] = true
			keys[a.topic] = append(keys[a.topic], a.key)
		}
	}
	var out []string
	for _, topic := range topics {
		ks := keys[topic]
		for _, k := range ks {
			if k == "" {
				ks = []string{""} // everything covers the rest
				break
			}
		}
		encode := func(ks []string) (string, error) {
			b, err := json.Marshal(payload{Origin: n.origin, Topic: topic, Keys: ks})
			return string(b), err
		}
		for len(ks) > 0 {
			// Take as many keys as fit; one at least, or the topic as a
			// whole if even one does not.
			take := len(ks)
			p, err := encode(ks[:take])
			for err == nil && len(p) > maxPayload && take > 1 {
				take = max(1, take/2)
				p, err = encode(ks[:take])
			}
			if err != nil {
				return nil, fmt.Errorf("postgres: encode notification: %w", err)
			}
			if len(p) > maxPayload {
				if p, err = encode([]string{""}); err != nil || len(p) > maxPayload {
					return nil, fmt.Errorf("postgres: topic %.40q too long to announce", topic)
				}
				out = append(out, p)
				break
			}
			out = append(out, p)
			ks = ks[take:]
		}
	}
	return out, nil
}

// Watch implements store.Watcher, on a connection of its own that it
// opens, and opens again whenever it is lost. Only ctx ends it: Close
// closes the pool, not this connection.
func (s *Store) Watch(ctx context.Context, fn func(store.Notice)) error {
	var lost error
	pause := minPause
	for {
		started := time.Now()
		err := s.notify.listen(ctx, fn, lost)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		lost = err
		if time.Since(started) > stablePeriod {
			pause = minPause
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		pause = min(2*pause, maxPause)
	}
}

// listen connects, listens, reports a resync (with lost, what ended the
// previous connection) and then the notifications of other Stores, until
// ctx is done or the connection fails.
func (n notifier) listen(ctx context.Context, fn func(store.Notice), lost error) error {
	setup, cancel := context.WithTimeout(ctx, n.wait)
	defer cancel()
	conn, err := pgx.ConnectConfig(setup, n.conn)
	if err != nil {
		return fmt.Errorf("postgres: listener: connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(setup, `LISTEN `+pgx.Identifier{n.channel}.Sanitize()); err != nil {
		return fmt.Errorf("postgres: listener: listen: %w", err)
	}
	cancel()
	// Every commit from now on is heard of; anything cached before may
	// have missed its notice.
	fn(store.Notice{Resync: true, Err: lost})
	for {
		wait, cancel := context.WithTimeout(ctx, n.idle)
		note, err := conn.WaitForNotification(wait)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			ping, cancel := context.WithTimeout(ctx, n.wait)
			err := conn.Ping(ping)
			cancel()
			if err != nil {
				return fmt.Errorf("postgres: listener: ping: %w", err)
			}
			continue
		case err != nil:
			return fmt.Errorf("postgres: listener: %w", err)
		}
		var p payload
		if json.Unmarshal([]byte(note.Payload), &p) != nil || p.Origin == n.origin {
			// Not ours to read, or our own: this Store's callers heard of
			// their commits when they returned.
			continue
		}
		for _, k := range p.Keys {
			fn(store.Notice{Topic: p.Topic, Key: k})
		}
	}
}
