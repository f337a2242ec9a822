package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/devicegrant/devicegrant/store"
	"github.com/devicegrant/devicegrant/store/internal/rowscan"
)

// querier is what *sql.DB and *sql.Tx have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// queries implements store.Reader on the reader pool or inside a
// transaction.
type queries struct {
	db querier
	// hot keeps statements prepared on the read pool for the lookups of
	// the hot paths (preparing a query costs more than running it); nil
	// inside a transaction.
	hot *hotStatements
}

// hotStatements are prepared once each, on first use.
type hotStatements struct {
	db    *sql.DB
	stmts sync.Map // query text → *sql.Stmt
}

// row runs a one-row query: outside a transaction, on a statement prepared
// once.
func (q queries) row(ctx context.Context, query string, args ...any) *sql.Row {
	if q.hot == nil {
		return q.db.QueryRowContext(ctx, query, args...)
	}
	if st, ok := q.hot.stmts.Load(query); ok {
		return st.(*sql.Stmt).QueryRowContext(ctx, args...)
	}
	st, err := q.hot.db.PrepareContext(ctx, query)
	if err != nil {
		return q.db.QueryRowContext(ctx, query, args...)
	}
	if prev, loaded := q.hot.stmts.LoadOrStore(query, st); loaded {
		st.Close()
		st = prev.(*sql.Stmt)
	}
	return st.QueryRowContext(ctx, args...)
}

// close closes the prepared statements.
func (h *hotStatements) close() error {
	var errs []error
	h.stmts.Range(func(_, st any) bool {
		errs = append(errs, st.(*sql.Stmt).Close())
		return true
	})
	return errors.Join(errs...)
}

// tx implements store.Tx.
type tx struct{ queries }

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

func (q queries) User(ctx context.Context, id string) (store.User, error) {
	u, err := scanUser(q.db.QueryRowContext(ctx, `SELECT `+rowscan.UserCols+` FROM users WHERE id = ?`, id))
	return u, wrap("user", err)
}

func (q queries) UserByUsername(ctx context.Context, username string) (store.User, error) {
	u, err := scanUser(q.db.QueryRowContext(ctx, `SELECT `+rowscan.UserCols+` FROM users WHERE username = ?`, username))
	return u, wrap("user by username", err)
}

func (q queries) Users(ctx context.Context) ([]store.User, error) {
	rows, err := q.db.QueryContext(ctx, `SELECT `+rowscan.UserCols+` FROM users ORDER BY username`)
	if err != nil {
		return nil, wrap("users", err)
	}
	defer rows.Close()
	var users []store.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, wrap("users", err)
		}
		users = append(users, u)
	}
	return users, wrap("users", rows.Err())
}

func (t *tx) CreateUser(ctx context.Context, u store.User) error {
	_, err := t.db.ExecContext(ctx, `INSERT INTO users (`+rowscan.UserCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		u.ID, u.Username, u.PasswordHash, u.DisplayName, ms(u.CreatedAt), ms(u.DeactivatedAt), u.TermsURL, ms(u.TermsAcceptedAt))
	return wrap("create user", err)
}

func (t *tx) UpdateUser(ctx context.Context, u store.User) error {
	return t.exec1(ctx, "update user", `UPDATE users SET username = ?, password_hash = ?, display_name = ?, deactivated_at = ?,
		terms_url = ?, terms_accepted_at = ? WHERE id = ?`,
		u.Username, u.PasswordHash, u.DisplayName, ms(u.DeactivatedAt), u.TermsURL, ms(u.TermsAcceptedAt), u.ID)
}

func (q queries) Client(ctx context.Context, id string) (store.Client, error) {
	c, err := scanClient(q.row(ctx, `SELECT `+rowscan.ClientCols+` FROM clients WHERE id = ?`, id))
	return c, wrap("client", err)
}

func (q queries) ClientByMetadataHash(ctx context.Context, hash []byte) (store.Client, error) {
	c, err := scanClient(q.db.QueryRowContext(ctx, `SELECT `+rowscan.ClientCols+` FROM clients WHERE metadata_hash = ?
		ORDER BY created_at, id LIMIT 1`, hash))
	return c, wrap("client by metadata hash", err)
}

func (t *tx) CreateClient(ctx context.Context, c store.Client) error {
	_, err := t.db.ExecContext(ctx, `INSERT INTO clients (`+rowscan.ClientCols+`) VALUES (?, ?, ?, ?, ?, ?)`,
		c.ID, c.SecretHash, c.Metadata, ms(c.CreatedAt), c.Trusted, c.MetadataHash)
	return wrap("create client", err)
}

func (t *tx) UpdateClient(ctx context.Context, c store.Client) error {
	return t.exec1(ctx, "update client", `UPDATE clients SET secret_hash = ?, metadata = ?, trusted = ?, created_at = ? WHERE id = ?`,
		c.SecretHash, c.Metadata, c.Trusted, ms(c.CreatedAt), c.ID)
}

func (t *tx) DeleteUnusedClients(ctx context.Context, before time.Time) (int64, error) {
	// NOT IN over each table runs its subquery once, so this costs a scan
	// of each table rather than one per client.
	res, err := t.db.ExecContext(ctx, `DELETE FROM clients WHERE created_at < ? AND NOT trusted
		AND id NOT IN (SELECT client_id FROM sessions)
		AND id NOT IN (SELECT client_id FROM device_grants)
		AND id NOT IN (SELECT client_id FROM auth_codes)`, ms(before))
	if err != nil {
		return 0, wrap("delete unused clients", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

func (q queries) AuthCode(ctx context.Context, id string) (store.AuthCode, error) {
	a, err := scanAuthCode(q.db.QueryRowContext(ctx, `SELECT `+rowscan.AuthCodeCols+` FROM auth_codes WHERE id = ?`, id))
	return a, wrap("auth code", err)
}

func (q queries) AuthCodeByCode(ctx context.Context, hash []byte) (store.AuthCode, error) {
	a, err := scanAuthCode(q.db.QueryRowContext(ctx, `SELECT `+rowscan.AuthCodeCols+` FROM auth_codes WHERE code_hash = ?`, hash))
	return a, wrap("auth code by code", err)
}

func (t *tx) CreateAuthCode(ctx context.Context, a store.AuthCode) error {
	_, err := t.db.ExecContext(ctx, `INSERT INTO auth_codes (`+rowscan.AuthCodeCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.ID, a.CodeHash, a.ClientID, a.RedirectURI, a.CodeChallenge, a.Scope, a.Nonce, a.State, a.ResponseMode,
		a.UserID, ms(a.AuthTime), ms(a.CreatedAt), ms(a.ExpiresAt), a.Status, nullString(a.SessionID))
	return wrap("create auth code", err)
}

func (t *tx) UpdateAuthCode(ctx context.Context, a store.AuthCode) error {
	return t.exec1(ctx, "update auth code", `UPDATE auth_codes SET code_hash = ?, expires_at = ?, status = ?, session_id = ?
		WHERE id = ?`, a.CodeHash, ms(a.ExpiresAt), a.Status, nullString(a.SessionID), a.ID)
}

func (q queries) SigningKeys(ctx context.Context) ([]store.SigningKey, error) {
	rows, err := q.db.QueryContext(ctx, `SELECT `+rowscan.SigningKeyCols+` FROM signing_keys
		ORDER BY created_at DESC, id DESC`)
	if err != nil {
		return nil, wrap("signing keys", err)
	}
	defer rows.Close()
	var out []store.SigningKey
	for rows.Next() {
		k, err := scanSigningKey(rows)
		if err != nil {
			return nil, wrap("signing keys", err)
		}
		out = append(out, k)
	}
	return out, wrap("signing keys", rows.Err())
}

func (t *tx) CreateSigningKey(ctx context.Context, k store.SigningKey) error {
	_, err := t.db.ExecContext(ctx, `INSERT INTO signing_keys (id, alg, private_pem, created_at, retired_at) VALUES (?, ?, ?, ?, ?)`,
		k.ID, k.Alg, k.PrivatePEM, ms(k.CreatedAt), ms(k.RetiredAt))
	return wrap("create signing key", err)
}

func (t *tx) UpdateSigningKey(ctx context.Context, k store.SigningKey) error {
	return t.exec1(ctx, "update signing key", `UPDATE signing_keys SET retired_at = ? WHERE id = ?`, ms(k.RetiredAt), k.ID)
}

func (q queries) DeviceGrant(ctx context.Context, id string) (store.DeviceGrant, error) {
	g, err := scanGrant(q.db.QueryRowContext(ctx, `SELECT `+rowscan.GrantCols+` FROM device_grants WHERE id = ?`, id))
	return g, wrap("device grant", err)
}

func (q queries) DeviceGrantByDeviceCode(ctx context.Context, hash []byte) (store.DeviceGrant, error) {
	g, err := scanGrant(q.row(ctx, `SELECT `+rowscan.GrantCols+` FROM device_grants WHERE device_code_hash = ?`, hash))
	return g, wrap("device grant by device code", err)
}

func (q queries) DeviceGrantByUserCode(ctx context.Context, userCode string) (store.DeviceGrant, error) {
	g, err := scanGrant(q.db.QueryRowContext(ctx, `SELECT `+rowscan.GrantCols+` FROM device_grants WHERE user_code = ?`, userCode))
	return g, wrap("device grant by user code", err)
}

func (q queries) PendingDeviceGrants(ctx context.Context, now time.Time, limit int) ([]store.DeviceGrant, error) {
	rows, err := q.db.QueryContext(ctx, `SELECT `+rowscan.GrantCols+` FROM device_grants
		WHERE state = ? AND expires_at > ? ORDER BY created_at DESC, id LIMIT ?`, store.GrantPending, ms(now), limit)
	if err != nil {
		return nil, wrap("pending device grants", err)
	}
	defer rows.Close()
	var out []store.DeviceGrant
	for rows.Next() {
		g, err := scanGrant(rows)
		if err != nil {
			return nil, wrap("pending device grants", err)
		}
		out = append(out, g)
	}
	return out, wrap("pending device grants", rows.Err())
}

func (t *tx) CreateDeviceGrant(ctx context.Context, g store.DeviceGrant) error {
	// An expired grant gives its user code up to the new one.
	if _, err := t.db.ExecContext(ctx, `DELETE FROM device_grants WHERE user_code = ? AND expires_at <= ?`,
		g.UserCode, ms(g.CreatedAt)); err != nil {
		return wrap("create device grant", err)
	}
	_, err := t.db.ExecContext(ctx, `INSERT INTO device_grants (`+rowscan.GrantCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		g.ID, g.DeviceCodeHash, g.UserCode, g.ClientID, g.Scope, g.RequesterIP, g.RequesterAgent,
		ms(g.CreatedAt), ms(g.ExpiresAt), ms(g.LastPolledAt), g.Interval.Milliseconds(), g.State,
		nullString(g.UserID), ms(g.DecidedAt), nullString(g.SessionID))
	return wrap("create device grant", err)
}

func (t *tx) UpdateDeviceGrant(ctx context.Context, g store.DeviceGrant) error {
	return t.exec1(ctx, "update device grant", `UPDATE device_grants SET scope = ?, last_polled_at = ?, interval_ms = ?,
		state = ?, user_id = ?, decided_at = ?, session_id = ?, expires_at = ? WHERE id = ?`,
		g.Scope, ms(g.LastPolledAt), g.Interval.Milliseconds(), g.State, nullString(g.UserID), ms(g.DecidedAt),
		nullString(g.SessionID), ms(g.ExpiresAt), g.ID)
}

func (q queries) Session(ctx context.Context, id string) (store.Session, error) {
	s, err := scanSession(q.db.QueryRowContext(ctx, `SELECT `+rowscan.SessionCols+` FROM sessions WHERE id = ?`, id))
	return s, wrap("session", err)
}

func (q queries) SessionsByDevice(ctx context.Context, userID, deviceID string) ([]store.Session, error) {
	rows, err := q.db.QueryContext(ctx, `SELECT `+rowscan.SessionCols+` FROM sessions
		WHERE user_id = ? AND device_id = ? AND ended_at IS NULL ORDER BY created_at`, userID, deviceID)
	if err != nil {
		return nil, wrap("sessions by device", err)
	}
	defer rows.Close()
	var out []store.Session
	for rows.Next() {
		s, err := scanSession(rows)
		if err != nil {
			return nil, wrap("sessions by device", err)
		}
		out = append(out, s)
	}
	return out, wrap("sessions by device", rows.Err())
}

func (t *tx) CreateSession(ctx context.Context, s store.Session) error {
	_, err := t.db.ExecContext(ctx, `INSERT INTO sessions (`+rowscan.SessionCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		s.ID, s.UserID, s.ClientID, s.DeviceID, s.Scope, ms(s.CreatedAt), ms(s.LastActiveAt), s.LastIP,
		ms(s.EndedAt), s.EndReason, s.DeviceName)
	return wrap("create session", err)
}

func (t *tx) UpdateSession(ctx context.Context, s store.Session) error {
	return t.exec1(ctx, "update session", `UPDATE sessions SET scope = ?, last_active_at = ?, last_ip = ?,
		ended_at = ?, end_reason = ?, device_name = ? WHERE id = ?`,
		s.Scope, ms(s.LastActiveAt), s.LastIP, ms(s.EndedAt), s.EndReason, s.DeviceName, s.ID)
}

func (q queries) TokenPair(ctx context.Context, id string) (store.TokenPair, error) {
	p, err := scanPair(q.db.QueryRowContext(ctx, `SELECT `+rowscan.PairCols+` FROM token_pairs WHERE id = ?`, id))
	return p, wrap("token pair", err)
}

func (q queries) TokenPairByRefresh(ctx context.Context, hash []byte) (store.TokenPair, error) {
	p, err := scanPair(q.db.QueryRowContext(ctx, `SELECT `+rowscan.PairCols+` FROM token_pairs WHERE refresh_hash = ?`, hash))
	return p, wrap("token pair by refresh token", err)
}

func (q queries) AccessToken(ctx context.Context, hash []byte) (store.AccessToken, error) {
	var a store.AccessToken
	row := q.row(ctx, `SELECT p.id, p.session_id, p.access_hash, p.refresh_hash, p.created_at,
		p.access_expires_at, p.used_at, p.rotated_at, p.successor_id, p.revoked_at,
		s.id, s.user_id, s.client_id, s.device_id, s.scope, s.created_at, s.last_active_at, s.last_ip, s.ended_at, s.end_reason, s.device_name,
		u.id, u.username, u.password_hash, u.display_name, u.created_at, u.deactivated_at
		FROM token_pairs p JOIN sessions s ON s.id = p.session_id JOIN users u ON u.id = s.user_id
		WHERE p.access_hash = ?`, hash)
	s, u := &a.Session, &a.User
	p, err := scanPair(row,
		&s.ID, &s.UserID, &s.ClientID, &s.DeviceID, &s.Scope, nt(&s.CreatedAt), nt(&s.LastActiveAt), &s.LastIP, nt(&s.EndedAt), &s.EndReason, &s.DeviceName,
		&u.ID, &u.Username, &u.PasswordHash, &u.DisplayName, nt(&u.CreatedAt), nt(&u.DeactivatedAt))
	a.Pair = p
	return a, wrap("access token", err)
}

func (t *tx) CreateTokenPair(ctx context.Context, p store.TokenPair) error {
	_, err := t.db.ExecContext(ctx, `INSERT INTO token_pairs (`+rowscan.PairCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		p.ID, p.SessionID, p.AccessHash, p.RefreshHash, ms(p.CreatedAt), ms(p.AccessExpiresAt), ms(p.UsedAt),
		ms(p.RotatedAt), nullString(p.SuccessorID), ms(p.RevokedAt))
	return wrap("create token pair", err)
}

func (t *tx) UpdateTokenPair(ctx context.Context, p store.TokenPair) error {
	return t.exec1(ctx, "update token pair", `UPDATE token_pairs SET used_at = ?, rotated_at = ?, successor_id = ?,
		revoked_at = ?, access_expires_at = ? WHERE id = ?`,
		ms(p.UsedAt), ms(p.RotatedAt), nullString(p.SuccessorID), ms(p.RevokedAt), ms(p.AccessExpiresAt), p.ID)
}

func (q queries) BrowserSession(ctx context.Context, tokenHash []byte) (b store.BrowserSession, err error) {
	err = q.db.QueryRowContext(ctx, `SELECT id, token_hash, user_id, created_at, expires_at FROM browser_sessions
		WHERE token_hash = ?`, tokenHash).Scan(&b.ID, &b.TokenHash, &b.UserID, nt(&b.CreatedAt), nt(&b.ExpiresAt))
	return b, wrap("browser session", err)
}

func (t *tx) CreateBrowserSession(ctx context.Context, b store.BrowserSession) error {
	_, err := t.db.ExecContext(ctx, `INSERT INTO browser_sessions (id, token_hash, user_id, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?)`, b.ID, b.TokenHash, b.UserID, ms(b.CreatedAt), ms(b.ExpiresAt))
	return wrap("create browser session", err)
}

func (t *tx) DeleteBrowserSession(ctx context.Context, id string) error {
	return t.exec1(ctx, "delete browser session", `DELETE FROM browser_sessions WHERE id = ?`, id)
}

func (t *tx) DeleteExpired(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for _, q := range []string{
		`DELETE FROM device_grants WHERE expires_at < ?`,
		`DELETE FROM auth_codes WHERE expires_at < ?`,
		`DELETE FROM browser_sessions WHERE expires_at < ?`,
	} {
		res, err := t.db.ExecContext(ctx, q, ms(before))
		if err != nil {
			return total, wrap("delete expired", err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}

// exec1 runs a statement that must touch exactly one row.
func (t *tx) exec1(ctx context.Context, what, query string, args ...any) error {
	res, err := t.db.ExecContext(ctx, query, args...)
	if err != nil {
		return wrap(what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return wrap(what, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: %s: %w", what, store.ErrNotFound)
	}
	return nil
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("sqlite: %s: %w", what, mapErr(err))
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (q queries) SessionsByUser(ctx context.Context, userID string, includeEnded bool) ([]store.Session, error) {
	query := `SELECT ` + rowscan.SessionCols + ` FROM sessions WHERE user_id = ?`
	if !includeEnded {
		query += ` AND ended_at IS NULL`
	}
	rows, err := q.db.QueryContext(ctx, query+` ORDER BY created_at DESC, id`, userID)
	if err != nil {
		return nil, wrap("sessions by user", err)
	}
	defer rows.Close()
	var out []store.Session
	for rows.Next() {
		s, err := scanSession(rows)
		if err != nil {
			return nil, wrap("sessions by user", err)
		}
		out = append(out, s)
	}
	return out, wrap("sessions by user", rows.Err())
}

func (q queries) outboxList(ctx context.Context, what, query string, args ...any) ([]store.OutboxEntry, error) {
	rows, err := q.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, wrap(what, err)
	}
	defer rows.Close()
	var out []store.OutboxEntry
	for rows.Next() {
		e, err := scanOutbox(rows)
		if err != nil {
			return nil, wrap(what, err)
		}
		out = append(out, e)
	}
	return out, wrap(what, rows.Err())
}

func (q queries) OutboxDue(ctx context.Context, now time.Time, limit int) ([]store.OutboxEntry, error) {
	return q.outboxList(ctx, "outbox due", `SELECT `+rowscan.OutboxCols+` FROM outbox WHERE id IN (
			SELECT MIN(id) FROM outbox WHERE parked_at IS NULL GROUP BY user_key)
		AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?)
		ORDER BY id LIMIT ?`, ms(now), ms(now), limit)
}

func (q queries) Outbox(ctx context.Context, limit int) ([]store.OutboxEntry, error) {
	return q.outboxList(ctx, "outbox", `SELECT `+rowscan.OutboxCols+` FROM outbox ORDER BY id LIMIT ?`, limit)
}

func (q queries) OutboxHead(ctx context.Context, userKey string) (store.OutboxEntry, error) {
	e, err := scanOutbox(q.db.QueryRowContext(ctx, `SELECT `+rowscan.OutboxCols+` FROM outbox
		WHERE user_key = ? AND parked_at IS NULL ORDER BY id LIMIT 1`, userKey))
	return e, wrap("outbox head", err)
}

func (q queries) OutboxEntry(ctx context.Context, id int64) (store.OutboxEntry, error) {
	e, err := scanOutbox(q.db.QueryRowContext(ctx, `SELECT `+rowscan.OutboxCols+` FROM outbox WHERE id = ?`, id))
	return e, wrap("outbox entry", err)
}

func (t *tx) Enqueue(ctx context.Context, e store.OutboxEntry) (int64, error) {
	res, err := t.db.ExecContext(ctx, `INSERT INTO outbox (user_key, call, body, grant_id, created_at, attempts,
		next_attempt_at, lease_until, last_error, parked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.UserKey, e.Call, e.Body, nullString(e.ApprovalID), ms(e.CreatedAt), e.Attempts, ms(e.NextAttemptAt),
		ms(e.LeaseUntil), e.LastError, ms(e.ParkedAt))
	if err != nil {
		return 0, wrap("enqueue", err)
	}
	id, err := res.LastInsertId()
	return id, wrap("enqueue", err)
}

func (t *tx) UpdateOutbox(ctx context.Context, e store.OutboxEntry) error {
	return t.exec1(ctx, "update outbox", `UPDATE outbox SET attempts = ?, next_attempt_at = ?, lease_until = ?,
		last_error = ?, parked_at = ? WHERE id = ?`,
		e.Attempts, ms(e.NextAttemptAt), ms(e.LeaseUntil), e.LastError, ms(e.ParkedAt), e.ID)
}

func (t *tx) DeleteOutbox(ctx context.Context, id int64) error {
	return t.exec1(ctx, "delete outbox entry", `DELETE FROM outbox WHERE id = ?`, id)
}

func (t *tx) DeleteSpentTokens(ctx context.Context, before time.Time) (int64, error) {
	// A pair whose successor was used before the cutoff was itself used
	// and rotated earlier, and so was its predecessor: the successor chain
	// never points at a deleted pair from a kept one.
	res, err := t.db.ExecContext(ctx, `DELETE FROM token_pairs WHERE revoked_at < ?1
		OR session_id IN (SELECT id FROM sessions WHERE ended_at < ?1)
		OR (rotated_at < ?1 AND successor_id IN (SELECT id FROM token_pairs WHERE used_at < ?1))`, ms(before))
	if err != nil {
		return 0, wrap("delete spent tokens", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

func (t *tx) DeleteBrowserSessionsOfUser(ctx context.Context, userID, keep string) error {
	_, err := t.db.ExecContext(ctx, `DELETE FROM browser_sessions WHERE user_id = ? AND id != ?`, userID, keep)
	return wrap("delete browser sessions of user", err)
}

func (q queries) GrantsOfUser(ctx context.Context, userID string, states []store.GrantState, now time.Time) ([]store.DeviceGrant, error) {
	in, args := inList(states)
	return q.grants(ctx, "grants of user", `user_id = ? AND state IN (`+in+`) AND expires_at > ? ORDER BY created_at`,
		append(append([]any{userID}, args...), ms(now))...)
}

func (q queries) GrantsLapsed(ctx context.Context, states []store.GrantState, after, before time.Time) ([]store.DeviceGrant, error) {
	in, args := inList(states)
	return q.grants(ctx, "lapsed grants", `expires_at > ? AND expires_at <= ? AND state IN (`+in+`) ORDER BY expires_at`,
		append([]any{ms(after), ms(before)}, args...)...)
}

func (q queries) AuthCodesOfUser(ctx context.Context, userID string, statuses []store.AuthCodeStatus, now time.Time) ([]store.AuthCode, error) {
	in, args := inList(statuses)
	return q.authCodes(ctx, "auth codes of user", `user_id = ? AND status IN (`+in+`) AND expires_at > ? ORDER BY created_at`,
		append(append([]any{userID}, args...), ms(now))...)
}

func (q queries) AuthCodesLapsed(ctx context.Context, statuses []store.AuthCodeStatus, after, before time.Time) ([]store.AuthCode, error) {
	in, args := inList(statuses)
	return q.authCodes(ctx, "lapsed auth codes", `expires_at > ? AND expires_at <= ? AND status IN (`+in+`) ORDER BY expires_at`,
		append([]any{ms(after), ms(before)}, args...)...)
}

// inList returns the placeholders and arguments of an SQL IN list. An
// empty list matches nothing.
func inList[T ~string](vals []T) (string, []any) {
	if len(vals) == 0 {
		return "NULL", nil
	}
	args := make([]any, len(vals))
	for i, v := range vals {
		args[i] = string(v)
	}
	return strings.Repeat("?, ", len(vals)-1) + "?", args
}

// grants lists the device grants matching where.
func (q queries) grants(ctx context.Context, what, where string, args ...any) ([]store.DeviceGrant, error) {
	rows, err := q.db.QueryContext(ctx, `SELECT `+rowscan.GrantCols+` FROM device_grants WHERE `+where, args...)
	if err != nil {
		return nil, wrap(what, err)
	}
	defer rows.Close()
	var out []store.DeviceGrant
	for rows.Next() {
		g, err := scanGrant(rows)
		if err != nil {
			return nil, wrap(what, err)
		}
		out = append(out, g)
	}
	return out, wrap(what, rows.Err())
}

// authCodes lists the authorization requests matching where.
func (q queries) authCodes(ctx context.Context, what, where string, args ...any) ([]store.AuthCode, error) {
	rows, err := q.db.QueryContext(ctx, `SELECT `+rowscan.AuthCodeCols+` FROM auth_codes WHERE `+where, args...)
	if err != nil {
		return nil, wrap(what, err)
	}
	defer rows.Close()
	var out []store.AuthCode
	for rows.Next() {
		a, err := scanAuthCode(rows)
		if err != nil {
			return nil, wrap(what, err)
		}
		out = append(out, a)
	}
	return out, wrap(what, rows.Err())
}

const tokenEpochQuery = `SELECT n FROM token_epoch WHERE id = 1`

func (q queries) TokenEpoch(ctx context.Context) (int64, error) {
	var n int64
	err := q.row(ctx, tokenEpochQuery).Scan(&n)
	return n, wrap("token epoch", err)
}

func (t *tx) BumpTokenEpoch(ctx context.Context) error {
	return t.exec1(ctx, "bump token epoch", `UPDATE token_epoch SET n = n + 1 WHERE id = 1`)
}

// TakeLease inserts the lease, or overwrites it where the conflict
// clause's condition holds; a row left as it was counts as no change.
func (t *tx) TakeLease(ctx context.Context, name, holder string, now, until time.Time) (bool, error) {
	res, err := t.db.ExecContext(ctx, `INSERT INTO leases (name, holder, held_until) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, held_until = excluded.held_until
		WHERE leases.held_until <= ? OR leases.holder = excluded.holder`,
		name, holder, until.UnixMilli(), now.UnixMilli())
	if err != nil {
		return false, wrap("take lease", err)
	}
	n, err := res.RowsAffected()
	return n == 1, wrap("take lease", err)
}
