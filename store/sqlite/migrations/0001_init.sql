-- Times are Unix milliseconds; NULL means "not yet" (the zero time.Time).
CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    username       TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    display_name   TEXT NOT NULL DEFAULT '',
    created_at     INTEGER NOT NULL,
    deactivated_at INTEGER
);

CREATE TABLE clients (
    id          TEXT PRIMARY KEY,
    secret_hash BLOB,
    metadata    BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users(id),
    client_id      TEXT NOT NULL REFERENCES clients(id),
    device_id      TEXT NOT NULL,
    scope          TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    last_active_at INTEGER,
    last_ip        TEXT NOT NULL DEFAULT '',
    ended_at       INTEGER,
    end_reason     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user_device ON sessions(user_id, device_id) WHERE ended_at IS NULL;

CREATE TABLE device_grants (
    id               TEXT PRIMARY KEY,
    device_code_hash BLOB NOT NULL UNIQUE,
    user_code        TEXT NOT NULL UNIQUE,
    client_id        TEXT NOT NULL REFERENCES clients(id),
    scope            TEXT NOT NULL,
    requester_ip     TEXT NOT NULL DEFAULT '',
    requester_agent  TEXT NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    last_polled_at   INTEGER,
    interval_ms      INTEGER NOT NULL,
    state            TEXT NOT NULL,
    user_id          TEXT REFERENCES users(id),
    decided_at       INTEGER,
    session_id       TEXT REFERENCES sessions(id)
);
CREATE INDEX device_grants_expires ON device_grants(expires_at);

CREATE TABLE token_pairs (
    id                TEXT PRIMARY KEY,
    session_id        TEXT NOT NULL REFERENCES sessions(id),
    access_hash       BLOB NOT NULL UNIQUE,
    refresh_hash      BLOB NOT NULL UNIQUE,
    created_at        INTEGER NOT NULL,
    access_expires_at INTEGER NOT NULL,
    used_at           INTEGER,
    rotated_at        INTEGER,
    successor_id      TEXT REFERENCES token_pairs(id),
    revoked_at        INTEGER
);
CREATE INDEX token_pairs_session ON token_pairs(session_id);

CREATE TABLE browser_sessions (
    id         TEXT PRIMARY KEY,
    token_hash BLOB NOT NULL UNIQUE,
    user_id    TEXT NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX browser_sessions_expires ON browser_sessions(expires_at);
