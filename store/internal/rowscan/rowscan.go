// Package rowscan reads the store's rows the same way for every SQL
// backend: which columns a row has, and the order their values are scanned
// in. A backend supplies only what differs between drivers: how a nullable
// column is scanned (Nulls).
package rowscan

import (
	"time"

	"github.com/devicegrant/devicegrant/store"
)

// Scanner is a row: *sql.Row, *sql.Rows, pgx.Row, pgx.Rows.
type Scanner interface{ Scan(dest ...any) error }

// Nulls makes scan destinations for the nullable columns, in the way the
// backend's driver scans them. Times are stored as Unix milliseconds, NULL
// for the zero time; optional references as text, NULL for "".
type Nulls interface {
	Time(*time.Time) any
	String(*string) any
}

// The columns of each table, in the order the functions below scan them.
const (
	UserCols     = `id, username, password_hash, display_name, created_at, deactivated_at, terms_url, terms_accepted_at`
	ClientCols   = `id, secret_hash, metadata, created_at, trusted, metadata_hash`
	AuthCodeCols = `id, code_hash, client_id, redirect_uri, code_challenge, scope, nonce, state_param, response_mode,
	user_id, auth_time, created_at, expires_at, status, session_id`
	SigningKeyCols = `id, alg, private_pem, created_at, retired_at`
	GrantCols      = `id, device_code_hash, user_code, client_id, scope, requester_ip, requester_agent,
	created_at, expires_at, last_polled_at, interval_ms, state, user_id, decided_at, session_id`
	SessionCols = `id, user_id, client_id, device_id, scope, created_at, last_active_at, last_ip, ended_at, end_reason, device_name`
	PairCols    = `id, session_id, access_hash, refresh_hash, created_at, access_expires_at, used_at,
	rotated_at, successor_id, revoked_at`
	// OutboxCols keeps the column's first name, grant_id: it holds
	// authorization request ids as well (OutboxEntry.ApprovalID).
	OutboxCols = `id, user_key, call, body, grant_id, created_at, attempts, next_attempt_at, lease_until, last_error, parked_at`
)

// User scans a UserCols row.
func User(s Scanner, n Nulls) (u store.User, err error) {
	err = s.Scan(&u.ID, &u.Username, &u.PasswordHash, &u.DisplayName, n.Time(&u.CreatedAt), n.Time(&u.DeactivatedAt),
		&u.TermsURL, n.Time(&u.TermsAcceptedAt))
	return u, err
}

// Client scans a ClientCols row.
func Client(s Scanner, n Nulls) (c store.Client, err error) {
	err = s.Scan(&c.ID, &c.SecretHash, &c.Metadata, n.Time(&c.CreatedAt), &c.Trusted, &c.MetadataHash)
	return c, err
}

// AuthCode scans an AuthCodeCols row.
func AuthCode(s Scanner, n Nulls) (a store.AuthCode, err error) {
	err = s.Scan(&a.ID, &a.CodeHash, &a.ClientID, &a.RedirectURI, &a.CodeChallenge, &a.Scope, &a.Nonce, &a.State,
		&a.ResponseMode, &a.UserID, n.Time(&a.AuthTime), n.Time(&a.CreatedAt), n.Time(&a.ExpiresAt), &a.Status,
		n.String(&a.SessionID))
	return a, err
}

// SigningKey scans a SigningKeyCols row.
func SigningKey(s Scanner, n Nulls) (k store.SigningKey, err error) {
	err = s.Scan(&k.ID, &k.Alg, &k.PrivatePEM, n.Time(&k.CreatedAt), n.Time(&k.RetiredAt))
	return k, err
}

// Grant scans a GrantCols row.
func Grant(s Scanner, n Nulls) (g store.DeviceGrant, err error) {
	var intervalMS int64
	err = s.Scan(&g.ID, &g.DeviceCodeHash, &g.UserCode, &g.ClientID, &g.Scope, &g.RequesterIP, &g.RequesterAgent,
		n.Time(&g.CreatedAt), n.Time(&g.ExpiresAt), n.Time(&g.LastPolledAt), &intervalMS, &g.State,
		n.String(&g.UserID), n.Time(&g.DecidedAt), n.String(&g.SessionID))
	g.Interval = time.Duration(intervalMS) * time.Millisecond
	return g, err
}

// Session scans a SessionCols row.
func Session(s Scanner, n Nulls) (x store.Session, err error) {
	err = s.Scan(&x.ID, &x.UserID, &x.ClientID, &x.DeviceID, &x.Scope, n.Time(&x.CreatedAt), n.Time(&x.LastActiveAt),
		&x.LastIP, n.Time(&x.EndedAt), &x.EndReason, &x.DeviceName)
	return x, err
}

// Pair scans a PairCols row, followed by the extra destinations of a join.
func Pair(s Scanner, n Nulls, extra ...any) (p store.TokenPair, err error) {
	dest := append([]any{&p.ID, &p.SessionID, &p.AccessHash, &p.RefreshHash, n.Time(&p.CreatedAt),
		n.Time(&p.AccessExpiresAt), n.Time(&p.UsedAt), n.Time(&p.RotatedAt), n.String(&p.SuccessorID),
		n.Time(&p.RevokedAt)}, extra...)
	err = s.Scan(dest...)
	return p, err
}

// Outbox scans an OutboxCols row.
func Outbox(s Scanner, n Nulls) (e store.OutboxEntry, err error) {
	err = s.Scan(&e.ID, &e.UserKey, &e.Call, &e.Body, n.String(&e.ApprovalID), n.Time(&e.CreatedAt), &e.Attempts,
		n.Time(&e.NextAttemptAt), n.Time(&e.LeaseUntil), &e.LastError, n.Time(&e.ParkedAt))
	return e, err
}
