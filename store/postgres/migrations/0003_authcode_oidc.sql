-- Authorization-code grant (P-AC-1..4): one row per approved request. The
-- code itself is minted only once the Matrix device exists, and only its
-- hash is kept.
CREATE TABLE auth_codes (
    id             text PRIMARY KEY,
    code_hash      bytea UNIQUE,
    client_id      text NOT NULL REFERENCES clients(id),
    redirect_uri   text NOT NULL,
    code_challenge text NOT NULL,
    scope          text NOT NULL,
    nonce          text NOT NULL DEFAULT '',
    state_param    text NOT NULL DEFAULT '',
    response_mode  text NOT NULL DEFAULT 'query',
    user_id        text NOT NULL REFERENCES users(id),
    auth_time      bigint NOT NULL,
    created_at     bigint NOT NULL,
    expires_at     bigint NOT NULL,
    status         text NOT NULL,
    session_id     text REFERENCES sessions(id)
);
CREATE INDEX auth_codes_expires ON auth_codes(expires_at);

-- OpenID Connect signing keys (P-OIDC-1). The newest unretired key signs;
-- retired keys stay published until tokens signed with them have expired.
CREATE TABLE signing_keys (
    id          text PRIMARY KEY,
    alg         text NOT NULL,
    private_pem bytea NOT NULL,
    created_at  bigint NOT NULL,
    retired_at  bigint
);

-- A client the operator trusts skips the consent page.
ALTER TABLE clients ADD COLUMN trusted boolean NOT NULL DEFAULT false;

-- Self-registration records which terms a person accepted (P-ACCT-3).
ALTER TABLE users ADD COLUMN terms_url text NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN terms_accepted_at bigint;
