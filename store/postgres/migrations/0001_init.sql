-- Times are Unix milliseconds in bigint, as in the SQLite backend; NULL
-- means "not yet" (the zero time.Time).
CREATE TABLE users (
    id             text PRIMARY KEY,
    username       text NOT NULL UNIQUE,
    password_hash  text NOT NULL,
    display_name   text NOT NULL DEFAULT '',
    created_at     bigint NOT NULL,
    deactivated_at bigint
);

CREATE TABLE clients (
    id          text PRIMARY KEY,
    secret_hash bytea,
    metadata    bytea NOT NULL,
    created_at  bigint NOT NULL
);

CREATE TABLE sessions (
    id             text PRIMARY KEY,
    user_id        text NOT NULL REFERENCES users(id),
    client_id      text NOT NULL REFERENCES clients(id),
    device_id      text NOT NULL,
    scope          text NOT NULL,
    created_at     bigint NOT NULL,
    last_active_at bigint,
    last_ip        text NOT NULL DEFAULT '',
    ended_at       bigint,
    end_reason     text NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user_device ON sessions(user_id, device_id) WHERE ended_at IS NULL;

CREATE TABLE device_grants (
    id               text PRIMARY KEY,
    device_code_hash bytea NOT NULL UNIQUE,
    user_code        text NOT NULL UNIQUE,
    client_id        text NOT NULL REFERENCES clients(id),
    scope            text NOT NULL,
    requester_ip     text NOT NULL DEFAULT '',
    requester_agent  text NOT NULL DEFAULT '',
    created_at       bigint NOT NULL,
    expires_at       bigint NOT NULL,
    last_polled_at   bigint,
    interval_ms      bigint NOT NULL,
    state            text NOT NULL,
    user_id          text REFERENCES users(id),
    decided_at       bigint,
    session_id       text REFERENCES sessions(id)
);
CREATE INDEX device_grants_expires ON device_grants(expires_at);

CREATE TABLE token_pairs (
    id                text PRIMARY KEY,
    session_id        text NOT NULL REFERENCES sessions(id),
    access_hash       bytea NOT NULL UNIQUE,
    refresh_hash      bytea NOT NULL UNIQUE,
    created_at        bigint NOT NULL,
    access_expires_at bigint NOT NULL,
    used_at           bigint,
    rotated_at        bigint,
    successor_id      text REFERENCES token_pairs(id),
    revoked_at        bigint
);
CREATE INDEX token_pairs_session ON token_pairs(session_id);

CREATE TABLE browser_sessions (
    id         text PRIMARY KEY,
    token_hash bytea NOT NULL UNIQUE,
    user_id    text NOT NULL REFERENCES users(id),
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX browser_sessions_expires ON browser_sessions(expires_at);
