package postgres

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/internal/rowscan"
)

// querier is what the pool and a transaction have in common.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// queries implements store.Reader on the pool (each lookup on its own,
// reading the last committed state) or inside a transaction. pgx prepares
// each query once per connection and keeps it, so the hot lookups need
// nothing more.
type queries struct{ db querier }

// tx implements store.Tx.
type tx struct {
	queries
	announced []announcement // for notify.send at commit
}

var _ store.Tx = (*tx)(nil)

type scanner interface{ Scan(dest ...any) error }

// The rows are read as every SQL backend reads them (store/internal/rowscan);
// this backend supplies how its driver scans a NULL (nulls).

func scanUser(s scanner) (store.User, error)             { return rowscan.User(s, nulls{}) }
func scanClient(s scanner) (store.Client, error)         { return rowscan.Client(s, nulls{}) }
func scanAuthCode(s scanner) (store.AuthCode, error)     { return rowscan.AuthCode(s, nulls{}) }
func scanSigningKey(s scanner) (store.SigningKey, error) { return rowscan.SigningKey(s, nulls{}) }
func scanGrant(s scanner) (store.DeviceGrant, error)     { return rowscan.Grant(s, nulls{}) }
func scanSession(s scanner) (store.Session, error)       { return rowscan.Session(s, nulls{}) }
func scanOutbox(s scanner) (store.OutboxEntry, error)    { return rowscan.Outbox(s, nulls{}) }
func scanPair(s scanner, extra ...any) (store.TokenPair, error) {
	return rowscan.Pair(s, nulls{}, extra...)
}

// Text is compared byte by byte (COLLATE "C") wherever it orders rows, as
// SQLite does, whatever collation the database was created with.

func (q queries) User(ctx context.Context, id string) (store.User, error) {
	if notText(id) {
		return store.User{}, notFound("user")
	}
	u, err := scanUser(q.db.QueryRow(ctx, `SELECT `+rowscan.UserCols+` FROM users WHERE id = $1`, id))
	return u, wrap("user", err)
}

func (q queries) UserByUsername(ctx context.Context, username string) (store.User, error) {
	if notText(username) {
		return store.User{}, notFound("user by username")
	}
	u, err := scanUser(q.db.QueryRow(ctx, `SELECT `+rowscan.UserCols+` FROM users WHERE username = $1`, username))
	return u, wrap("user by username", err)
}

func (q queries) Users(ctx context.Context) ([]store.User, error) {
	return list(ctx, q, "users", scanUser, `SELECT `+rowscan.UserCols+` FROM users ORDER BY username COLLATE "C"`)
}

func (t *tx) CreateUser(ctx context.Context, u store.User) error {
	return t.insert(ctx, "create user", `INSERT INTO users (`+rowscan.UserCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		u.ID, u.Username, u.PasswordHash, u.DisplayName, ms(u.CreatedAt), ms(u.DeactivatedAt), u.TermsURL, ms(u.TermsAcceptedAt))
}

func (t *tx) UpdateUser(ctx context.Context, u store.User) error {
	return t.exec1(ctx, "update user", `UPDATE users SET username = $1, password_hash = $2, display_name = $3, deactivated_at = $4,
		terms_url = $5, terms_accepted_at = $6 WHERE id = $7`,
		u.Username, u.PasswordHash, u.DisplayName, ms(u.DeactivatedAt), u.TermsURL, ms(u.TermsAcceptedAt), u.ID)
}

func (q queries) Client(ctx context.Context, id string) (store.Client, error) {
	if notText(id) {
		return store.Client{}, notFound("client")
	}
	c, err := scanClient(q.db.QueryRow(ctx, `SELECT `+rowscan.ClientCols+` FROM clients WHERE id = $1`, id))
	return c, wrap("client", err)
}

func (q queries) ClientByMetadataHash(ctx context.Context, hash []byte) (store.Client, error) {
	c, err := scanClient(q.db.QueryRow(ctx, `SELECT `+rowscan.ClientCols+` FROM clients WHERE metadata_hash = $1
		ORDER BY created_at, id COLLATE "C" LIMIT 1`, hash))
	return c, wrap("client by metadata hash", err)
}

func (t *tx) CreateClient(ctx context.Context, c store.Client) error {
	return t.insert(ctx, "create client", `INSERT INTO clients (`+rowscan.ClientCols+`) VALUES ($1, $2, $3, $4, $5, $6)`,
		c.ID, c.SecretHash, c.Metadata, ms(c.CreatedAt), c.Trusted, c.MetadataHash)
}

func (t *tx) UpdateClient(ctx context.Context, c store.Client) error {
	return t.exec1(ctx, "update client", `UPDATE clients SET secret_hash = $1, metadata = $2, trusted = $3, created_at = $4 WHERE id = $5`,
		c.SecretHash, c.Metadata, c.Trusted, ms(c.CreatedAt), c.ID)
}

func (t *tx) DeleteUnusedClients(ctx context.Context, before time.Time) (int64, error) {
	// The client_id columns are NOT NULL, so NOT IN means what it says.
	return t.execN(ctx, "delete unused clients", `DELETE FROM clients WHERE created_at < $1 AND NOT trusted
		AND id NOT IN (SELECT client_id FROM sessions)
		AND id NOT IN (SELECT client_id FROM device_grants)
		AND id NOT IN (SELECT client_id FROM auth_codes)`, ms(before))
}

func (q queries) AuthCode(ctx context.Context, id string) (store.AuthCode, error) {
	if notText(id) {
		return store.AuthCode{}, notFound("auth code")
	}
	a, err := scanAuthCode(q.db.QueryRow(ctx, `SELECT `+rowscan.AuthCodeCols+` FROM auth_codes WHERE id = $1`, id))
	return a, wrap("auth code", err)
}

func (q queries) AuthCodeByCode(ctx context.Context, hash []byte) (store.AuthCode, error) {
	a, err := scanAuthCode(q.db.QueryRow(ctx, `SELECT `+rowscan.AuthCodeCols+` FROM auth_codes WHERE code_hash = $1`, hash))
	return a, wrap("auth code by code", err)
}

func (t *tx) CreateAuthCode(ctx context.Context, a store.AuthCode) error {
	return t.insert(ctx, "create auth code", `INSERT INTO auth_codes (`+rowscan.AuthCodeCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
		a.ID, a.CodeHash, a.ClientID, a.RedirectURI, a.CodeChallenge, a.Scope, a.Nonce, a.State, a.ResponseMode,
		a.UserID, ms(a.AuthTime), ms(a.CreatedAt), ms(a.ExpiresAt), string(a.Status), nullString(a.SessionID))
}

func (t *tx) UpdateAuthCode(ctx context.Context, a store.AuthCode) error {
	return t.exec1(ctx, "update auth code", `UPDATE auth_codes SET code_hash = $1, expires_at = $2, status = $3, session_id = $4
		WHERE id = $5`, a.CodeHash, ms(a.ExpiresAt), string(a.Status), nullString(a.SessionID), a.ID)
}

func (q queries) SigningKeys(ctx context.Context) ([]store.SigningKey, error) {
	return list(ctx, q, "signing keys", scanSigningKey, `SELECT `+rowscan.SigningKeyCols+` FROM signing_keys
		ORDER BY created_at DESC, id COLLATE "C" DESC`)
}

func (t *tx) CreateSigningKey(ctx context.Context, k store.SigningKey) error {
	return t.insert(ctx, "create signing key", `INSERT INTO signing_keys (id, alg, private_pem, created_at, retired_at)
		VALUES ($1, $2, $3, $4, $5)`, k.ID, k.Alg, k.PrivatePEM, ms(k.CreatedAt), ms(k.RetiredAt))
}

func (t *tx) UpdateSigningKey(ctx context.Context, k store.SigningKey) error {
	return t.exec1(ctx, "update signing key", `UPDATE signing_keys SET retired_at = $1 WHERE id = $2`, ms(k.RetiredAt), k.ID)
}

func (q queries) DeviceGrant(ctx context.Context, id string) (store.DeviceGrant, error) {
	if notText(id) {
		return store.DeviceGrant{}, notFound("device grant")
	}
	g, err := scanGrant(q.db.QueryRow(ctx, `SELECT `+rowscan.GrantCols+` FROM device_grants WHERE id = $1`, id))
	return g, wrap("device grant", err)
}

func (q queries) DeviceGrantByDeviceCode(ctx context.Context, hash []byte) (store.DeviceGrant, error) {
	g, err := scanGrant(q.db.QueryRow(ctx, `SELECT `+rowscan.GrantCols+` FROM device_grants WHERE device_code_hash = $1`, hash))
	return g, wrap("device grant by device code", err)
}

func (q queries) DeviceGrantByUserCode(ctx context.Context, userCode string) (store.DeviceGrant, error) {
	if notText(userCode) {
		return store.DeviceGrant{}, notFound("device grant by user code")
	}
	g, err := scanGrant(q.db.QueryRow(ctx, `SELECT `+rowscan.GrantCols+` FROM device_grants WHERE user_code = $1`, userCode))
	return g, wrap("device grant by user code", err)
}

func (q queries) PendingDeviceGrants(ctx context.Context, now time.Time, limit int) ([]store.DeviceGrant, error) {
	return list(ctx, q, "pending device grants", scanGrant, `SELECT `+rowscan.GrantCols+` FROM device_grants
		WHERE state = $1 AND expires_at > $2 ORDER BY created_at DESC, id COLLATE "C" LIMIT $3`,
		string(store.GrantPending), ms(now), limit)
}

func (t *tx) CreateDeviceGrant(ctx context.Context, g store.DeviceGrant) error {
	// An expired grant gives its user code up to the new one.
	if _, err := t.db.Exec(ctx, `DELETE FROM device_grants WHERE user_code = $1 AND expires_at <= $2`,
		g.UserCode, ms(g.CreatedAt)); err != nil {
		return wrap("create device grant", err)
	}
	return t.insert(ctx, "create device grant", `INSERT INTO device_grants (`+rowscan.GrantCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
		g.ID, g.DeviceCodeHash, g.UserCode, g.ClientID, g.Scope, g.RequesterIP, g.RequesterAgent,
		ms(g.CreatedAt), ms(g.ExpiresAt), ms(g.LastPolledAt), g.Interval.Milliseconds(), string(g.State),
		nullString(g.UserID), ms(g.DecidedAt), nullString(g.SessionID))
}

func (t *tx) UpdateDeviceGrant(ctx context.Context, g store.DeviceGrant) error {
	return t.exec1(ctx, "update device grant", `UPDATE device_grants SET scope = $1, last_polled_at = $2, interval_ms = $3,
		state = $4, user_id = $5, decided_at = $6, session_id = $7, expires_at = $8 WHERE id = $9`,
		g.Scope, ms(g.LastPolledAt), g.Interval.Milliseconds(), string(g.State), nullString(g.UserID), ms(g.DecidedAt),
		nullString(g.SessionID), ms(g.ExpiresAt), g.ID)
}

func (q queries) Session(ctx context.Context, id string) (store.Session, error) {
	if notText(id) {
		return store.Session{}, notFound("session")
	}
	s, err := scanSession(q.db.QueryRow(ctx, `SELECT `+rowscan.SessionCols+` FROM sessions WHERE id = $1`, id))
	return s, wrap("session", err)
}

func (q queries) SessionsByDevice(ctx context.Context, userID, deviceID string) ([]store.Session, error) {
	if notText(userID, deviceID) {
		return nil, nil
	}
	return list(ctx, q, "sessions by device", scanSession, `SELECT `+rowscan.SessionCols+` FROM sessions
		WHERE user_id = $1 AND device_id = $2 AND ended_at IS NULL ORDER BY created_at`, userID, deviceID)
}

func (q queries) SessionsByUser(ctx context.Context, userID string, includeEnded bool) ([]store.Session, error) {
	if notText(userID) {
		return nil, nil
	}
	query := `SELECT ` + rowscan.SessionCols + ` FROM sessions WHERE user_id = $1`
	if !includeEnded {
		query += ` AND ended_at IS NULL`
	}
	return list(ctx, q, "sessions by user", scanSession, query+` ORDER BY created_at DESC, id COLLATE "C"`, userID)
}

func (t *tx) CreateSession(ctx context.Context, s store.Session) error {
	return t.insert(ctx, "create session", `INSERT INTO sessions (`+rowscan.SessionCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		s.ID, s.UserID, s.ClientID, s.DeviceID, s.Scope, ms(s.CreatedAt), ms(s.LastActiveAt), s.LastIP,
		ms(s.EndedAt), s.EndReason, s.DeviceName)
}

func (t *tx) UpdateSession(ctx context.Context, s store.Session) error {
	return t.exec1(ctx, "update session", `UPDATE sessions SET scope = $1, last_active_at = $2, last_ip = $3,
		ended_at = $4, end_reason = $5, device_name = $6 WHERE id = $7`,
		s.Scope, ms(s.LastActiveAt), s.LastIP, ms(s.EndedAt), s.EndReason, s.DeviceName, s.ID)
}

func (q queries) TokenPair(ctx context.Context, id string) (store.TokenPair, error) {
	if notText(id) {
		return store.TokenPair{}, notFound("token pair")
	}
	p, err := scanPair(q.db.QueryRow(ctx, `SELECT `+rowscan.PairCols+` FROM token_pairs WHERE id = $1`, id))
	return p, wrap("token pair", err)
}

func (q queries) TokenPairByRefresh(ctx context.Context, hash []byte) (store.TokenPair, error) {
	p, err := scanPair(q.db.QueryRow(ctx, `SELECT `+rowscan.PairCols+` FROM token_pairs WHERE refresh_hash = $1`, hash))
	return p, wrap("token pair by refresh token", err)
}

func (q queries) AccessToken(ctx context.Context, hash []byte) (store.AccessToken, error) {
	var a store.AccessToken
	row := q.db.QueryRow(ctx, `SELECT p.id, p.session_id, p.access_hash, p.refresh_hash, p.created_at,
		p.access_expires_at, p.used_at, p.rotated_at, p.successor_id, p.revoked_at,
		s.id, s.user_id, s.client_id, s.device_id, s.scope, s.created_at, s.last_active_at, s.last_ip, s.ended_at, s.end_reason, s.device_name,
		u.id, u.username, u.password_hash, u.display_name, u.created_at, u.deactivated_at
		FROM token_pairs p JOIN sessions s ON s.id = p.session_id JOIN users u ON u.id = s.user_id
		WHERE p.access_hash = $1`, hash)
	s, u := &a.Session, &a.User
	p, err := scanPair(row,
		&s.ID, &s.UserID, &s.ClientID, &s.DeviceID, &s.Scope, nt(&s.CreatedAt), nt(&s.LastActiveAt), &s.LastIP, nt(&s.EndedAt), &s.EndReason, &s.DeviceName,
		&u.ID, &u.Username, &u.PasswordHash, &u.DisplayName, nt(&u.CreatedAt), nt(&u.DeactivatedAt))
	a.Pair = p
	return a, wrap("access token", err)
}

func (t *tx) CreateTokenPair(ctx context.Context, p store.TokenPair) error {
	return t.insert(ctx, "create token pair", `INSERT INTO token_pairs (`+rowscan.PairCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		p.ID, p.SessionID, p.AccessHash, p.RefreshHash, ms(p.CreatedAt), ms(p.AccessExpiresAt), ms(p.UsedAt),
		ms(p.RotatedAt), nullString(p.SuccessorID), ms(p.RevokedAt))
}

func (t *tx) UpdateTokenPair(ctx context.Context, p store.TokenPair) error {
	return t.exec1(ctx, "update token pair", `UPDATE token_pairs SET used_at = $1, rotated_at = $2, successor_id = $3,
		revoked_at = $4, access_expires_at = $5 WHERE id = $6`,
		ms(p.UsedAt), ms(p.RotatedAt), nullString(p.SuccessorID), ms(p.RevokedAt), ms(p.AccessExpiresAt), p.ID)
}

func (t *tx) DeleteSpentTokens(ctx context.Context, before time.Time) (int64, error) {
	// A pair whose successor was used before the cutoff was itself used
	// and rotated earlier, and so was its predecessor: the successor chain
	// never points at a deleted pair from a kept one.
	return t.execN(ctx, "delete spent tokens", `DELETE FROM token_pairs WHERE revoked_at < $1
		OR session_id IN (SELECT id FROM sessions WHERE ended_at < $1)
		OR (rotated_at < $1 AND successor_id IN (SELECT id FROM token_pairs WHERE used_at < $1))`, ms(before))
}

func (q queries) BrowserSession(ctx context.Context, tokenHash []byte) (b store.BrowserSession, err error) {
	err = q.db.QueryRow(ctx, `SELECT id, token_hash, user_id, created_at, expires_at FROM browser_sessions
		WHERE token_hash = $1`, tokenHash).Scan(&b.ID, &b.TokenHash, &b.UserID, nt(&b.CreatedAt), nt(&b.ExpiresAt))
	return b, wrap("browser session", err)
}

func (t *tx) CreateBrowserSession(ctx context.Context, b store.BrowserSession) error {
	return t.insert(ctx, "create browser session", `INSERT INTO browser_sessions (id, token_hash, user_id, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5)`, b.ID, b.TokenHash, b.UserID, ms(b.CreatedAt), ms(b.ExpiresAt))
}

func (t *tx) DeleteBrowserSession(ctx context.Context, id string) error {
	return t.exec1(ctx, "delete browser session", `DELETE FROM browser_sessions WHERE id = $1`, id)
}

func (t *tx) DeleteBrowserSessionsOfUser(ctx context.Context, userID, keep string) error {
	_, err := t.db.Exec(ctx, `DELETE FROM browser_sessions WHERE user_id = $1 AND id <> $2`, userID, keep)
	return wrap("delete browser sessions of user", err)
}

func (t *tx) DeleteExpired(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for _, q := range []string{
		`DELETE FROM device_grants WHERE expires_at < $1`,
		`DELETE FROM auth_codes WHERE expires_at < $1`,
		`DELETE FROM browser_sessions WHERE expires_at < $1`,
	} {
		n, err := t.execN(ctx, "delete expired", q, ms(before))
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

func (q queries) OutboxDue(ctx context.Context, now time.Time, limit int) ([]store.OutboxEntry, error) {
	return list(ctx, q, "outbox due", scanOutbox, `SELECT `+rowscan.OutboxCols+` FROM outbox WHERE id IN (
			SELECT MIN(id) FROM outbox WHERE parked_at IS NULL GROUP BY user_key)
		AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until <= $1)
		ORDER BY id LIMIT $2`, ms(now), limit)
}

func (q queries) Outbox(ctx context.Context, limit int) ([]store.OutboxEntry, error) {
	return list(ctx, q, "outbox", scanOutbox, `SELECT `+rowscan.OutboxCols+` FROM outbox ORDER BY id LIMIT $1`, limit)
}

func (q queries) OutboxHead(ctx context.Context, userKey string) (store.OutboxEntry, error) {
	if notText(userKey) {
		return store.OutboxEntry{}, notFound("outbox head")
	}
	e, err := scanOutbox(q.db.QueryRow(ctx, `SELECT `+rowscan.OutboxCols+` FROM outbox
		WHERE user_key = $1 AND parked_at IS NULL ORDER BY id LIMIT 1`, userKey))
	return e, wrap("outbox head", err)
}

func (q queries) OutboxEntry(ctx context.Context, id int64) (store.OutboxEntry, error) {
	e, err := scanOutbox(q.db.QueryRow(ctx, `SELECT `+rowscan.OutboxCols+` FROM outbox WHERE id = $1`, id))
	return e, wrap("outbox entry", err)
}

// Enqueue first takes a lock on the entry's user key until the
// transaction ends. Identity values are handed out in order but may commit
// out of order; under the lock, an entry for a user commits before the
// next one for that user gets its id, so the deliverer, which takes each
// user's lowest id, never sees a later call while an earlier one is still
// to commit.
func (t *tx) Enqueue(ctx context.Context, e store.OutboxEntry) (int64, error) {
	h := fnv.New64a()
	h.Write([]byte("devicegrant outbox " + e.UserKey))
	if _, err := t.db.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(h.Sum64())); err != nil {
		return 0, wrap("enqueue", err)
	}
	var id int64
	err := t.db.QueryRow(ctx, `INSERT INTO outbox (user_key, call, body, grant_id, created_at, attempts,
		next_attempt_at, lease_until, last_error, parked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id`,
		e.UserKey, e.Call, e.Body, nullString(e.ApprovalID), ms(e.CreatedAt), e.Attempts, ms(e.NextAttemptAt),
		ms(e.LeaseUntil), e.LastError, ms(e.ParkedAt)).Scan(&id)
	return id, wrap("enqueue", err)
}

func (t *tx) UpdateOutbox(ctx context.Context, e store.OutboxEntry) error {
	return t.exec1(ctx, "update outbox", `UPDATE outbox SET attempts = $1, next_attempt_at = $2, lease_until = $3,
		last_error = $4, parked_at = $5 WHERE id = $6`,
		e.Attempts, ms(e.NextAttemptAt), ms(e.LeaseUntil), e.LastError, ms(e.ParkedAt), e.ID)
}

func (t *tx) DeleteOutbox(ctx context.Context, id int64) error {
	return t.exec1(ctx, "delete outbox entry", `DELETE FROM outbox WHERE id = $1`, id)
}

func (q queries) GrantsOfUser(ctx context.Context, userID string, states []store.GrantState, now time.Time) ([]store.DeviceGrant, error) {
	if notText(userID) {
		return nil, nil
	}
	return list(ctx, q, "grants of user", scanGrant, `SELECT `+rowscan.GrantCols+` FROM device_grants
		WHERE user_id = $1 AND state = ANY($2) AND expires_at > $3 ORDER BY created_at`, userID, texts(states), ms(now))
}

func (q queries) GrantsLapsed(ctx context.Context, states []store.GrantState, after, before time.Time) ([]store.DeviceGrant, error) {
	return list(ctx, q, "lapsed grants", scanGrant, `SELECT `+rowscan.GrantCols+` FROM device_grants
		WHERE expires_at > $1 AND expires_at <= $2 AND state = ANY($3) ORDER BY expires_at`, ms(after), ms(before), texts(states))
}

func (q queries) AuthCodesOfUser(ctx context.Context, userID string, statuses []store.AuthCodeStatus, now time.Time) ([]store.AuthCode, error) {
	if notText(userID) {
		return nil, nil
	}
	return list(ctx, q, "auth codes of user", scanAuthCode, `SELECT `+rowscan.AuthCodeCols+` FROM auth_codes
		WHERE user_id = $1 AND status = ANY($2) AND expires_at > $3 ORDER BY created_at`, userID, texts(statuses), ms(now))
}

func (q queries) AuthCodesLapsed(ctx context.Context, statuses []store.AuthCodeStatus, after, before time.Time) ([]store.AuthCode, error) {
	return list(ctx, q, "lapsed auth codes", scanAuthCode, `SELECT `+rowscan.AuthCodeCols+` FROM auth_codes
		WHERE expires_at > $1 AND expires_at <= $2 AND status = ANY($3) ORDER BY expires_at`, ms(after), ms(before), texts(statuses))
}

// The token epoch is not a plain count of bumps, because the database
// can go back in time under running instances: a failover to a standby
// that had not received the last commits (asynchronous replication), or
// a restore from a backup. A count would then climb again through values
// it had before, and a token that a cache holds under one of them, read
// before the regression, would be answered from memory although revoked
// since (P-REV-1; TestRevocationAfterEpochRegression). So each stripe's n
// holds a count of its bumps above epochSaltBits random bits that each
// bump draws afresh, and the epoch is the counts' sum above the sum of
// the random parts (modulo 2^epochSaltBits): it still grows with each
// bump, and after a regression the epoch a bump makes repeats one that
// was seen before only by a 1 in 2^24 chance. (A release before this
// added 1 to n; its bumps still change the epoch, which is all a cache
// compares.)
func (q queries) TokenEpoch(ctx context.Context) (int64, error) {
	var n int64
	err := q.db.QueryRow(ctx, `SELECT (sum(n >> 24)::bigint << 24) | (sum(n & 16777215)::bigint & 16777215) FROM token_epoch`).Scan(&n)
	return n, wrap("token epoch", err)
}

// BumpTokenEpoch bumps a random stripe of the epoch (see migration 0006
// and TokenEpoch), seen only once this transaction commits. Two
// transactions that pick the same stripe at once conflict, and Update runs
// the loser again, which then most likely picks another.
func (t *tx) BumpTokenEpoch(ctx context.Context) error {
	return t.exec1(ctx, "bump token epoch", `UPDATE token_epoch SET n = ((n >> 24) + 1) << 24 | $2 WHERE stripe = $1`,
		rand.IntN(epochStripes), rand.Int64N(1<<epochSaltBits))
}

const (
	// epochStripes is how many rows migration 0006 made.
	epochStripes = 64
	// epochSaltBits is how many low bits of each stripe are drawn at
	// random by each bump (the 24 in TokenEpoch and BumpTokenEpoch's SQL).
	epochSaltBits = 24
)

// texts turns a list of states into the text[] that = ANY compares with;
// an empty list matches nothing.
func texts[T ~string](vals []T) []string {
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = string(v)
	}
	return out
}

// list runs a query and scans each of its rows.
func list[T any](ctx context.Context, q queries, what string, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.db.Query(ctx, query, args...)
	if err != nil {
		return nil, wrap(what, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, wrap(what, err)
		}
		out = append(out, v)
	}
	return out, wrap(what, rows.Err())
}

// insert runs an INSERT that must add one row. A row holding one of its
// unique keys already is ErrAlreadyExists; ON CONFLICT DO NOTHING says so
// without aborting the transaction (an error would, in PostgreSQL), so a
// caller may go on after it as on SQLite.
func (t *tx) insert(ctx context.Context, what, query string, args ...any) error {
	tag, err := t.db.Exec(ctx, query+` ON CONFLICT DO NOTHING`, args...)
	if err != nil {
		return wrap(what, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: %s: %w", what, store.ErrAlreadyExists)
	}
	return nil
}

// exec1 runs a statement that must touch exactly one row.
func (t *tx) exec1(ctx context.Context, what, query string, args ...any) error {
	n, err := t.execN(ctx, what, query, args...)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("postgres: %s: %w", what, store.ErrNotFound)
	}
	return nil
}

// execN runs a statement and returns how many rows it touched.
func (t *tx) execN(ctx context.Context, what, query string, args ...any) (int64, error) {
	tag, err := t.db.Exec(ctx, query, args...)
	if err != nil {
		return 0, wrap(what, err)
	}
	return tag.RowsAffected(), nil
}

// notText tells whether a lookup key holds a NUL character or is not
// valid UTF-8. PostgreSQL text (in a UTF8 database) can hold neither, so
// no row matches such a key; asking would be an error that aborts the
// transaction, where SQLite simply finds nothing. Keys come from requests
// (a username at the legacy login, an id in a form, a client id that
// HTTP Basic carries percent-encoded, which the form checks never see):
// the error was a 500 for any stranger who sent one.
func notText(keys ...string) bool {
	for _, k := range keys {
		if strings.IndexByte(k, 0) >= 0 || !utf8.ValidString(k) {
			return true
		}
	}
	return false
}

func notFound(what string) error { return fmt.Errorf("postgres: %s: %w", what, store.ErrNotFound) }

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("postgres: %s: %w", what, mapErr(err))
}

// TakeLease inserts the lease, or overwrites it where the conflict
// clause's condition holds; a row left as it was counts as no change. Two
// instances taking it at once conflict, and Update runs the loser again,
// which then finds it held.
func (t *tx) TakeLease(ctx context.Context, name, holder string, now, until time.Time) (bool, error) {
	n, err := t.execN(ctx, "take lease", `INSERT INTO leases (name, holder, held_until) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, held_until = excluded.held_until
		WHERE leases.held_until <= $4 OR leases.holder = excluded.holder`,
		name, holder, until.UnixMilli(), now.UnixMilli())
	return n == 1, err
}
