-- Calls the homeserver must receive (P-HS-3, P-HS-4), written in the same
-- transaction as the change that caused them and delivered in order per
-- user. A row is deleted once delivered.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_key        TEXT NOT NULL,          -- the localpart: calls for one user go in order
    call            TEXT NOT NULL,          -- e.g. upsert_device
    body            BLOB NOT NULL,          -- JSON
    grant_id        TEXT,                   -- a device grant that waits for this call
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER,                -- claimed by a deliverer until then
    last_error      TEXT NOT NULL DEFAULT '',
    parked_at       INTEGER                 -- given up on until an operator retries it
);
CREATE INDEX outbox_user ON outbox(user_key, id) WHERE parked_at IS NULL;
