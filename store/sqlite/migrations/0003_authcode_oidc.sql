-- Authorization-code grant (P-AC-1..4): one row per approved request. The
-- code itself is minted only once the Matrix device exists, and only its
-- hash is kept.
CREATE TABLE auth_codes (
    id             TEXT PRIMARY KEY,
    code_hash      BLOB UNIQUE,
    client_id      TEXT NOT NULL REFERENCES clients(id),
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    scope          TEXT NOT NULL,
    nonce          TEXT NOT NULL DEFAULT '',
    state_param    TEXT NOT NULL DEFAULT '',
    response_mode  TEXT NOT NULL DEFAULT 'query',
    user_id        TEXT NOT NULL REFERENCES users(id),
    auth_time      INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    status         TEXT NOT NULL,
    session_id     TEXT REFERENCES sessions(id)
);
CREATE INDEX auth_codes_expires ON auth_codes(expires_at);

-- OpenID Connect signing keys (P-OIDC-1). The newest unretired key signs;
-- retired keys stay published until tokens signed with them have expired.
CREATE TABLE signing_keys (
    id          TEXT PRIMARY KEY,
    alg         TEXT NOT NULL,
    private_pem BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
);

-- A client the operator trusts skips the consent page.
ALTER TABLE clients ADD COLUMN trusted INTEGER NOT NULL DEFAULT 0;

-- Self-registration records which terms a person accepted (P-ACCT-3).
ALTER TABLE users ADD COLUMN terms_url TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN terms_accepted_at INTEGER;
