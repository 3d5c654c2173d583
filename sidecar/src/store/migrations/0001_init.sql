-- The sidecar's state. Every table is in the configured schema ([store] schema).

CREATE TABLE IF NOT EXISTS signing_keys (
    kid         TEXT PRIMARY KEY,
    private_pem TEXT,                 -- generated keys only; a configured key stays in config
    public_jwk  JSONB NOT NULL,
    source      TEXT NOT NULL,        -- 'generated' | 'config'
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    retired_at  TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS clients (
    client_id                  TEXT PRIMARY KEY,
    kind                       TEXT NOT NULL,   -- 'dcr' | 'cimd'
    secret_hash                BYTEA,
    client_name                TEXT,
    redirect_uris              TEXT[] NOT NULL,
    application_type           TEXT NOT NULL,
    token_endpoint_auth_method TEXT NOT NULL,
    metadata                   JSONB NOT NULL,
    detected_client            TEXT NOT NULL,
    user_agent                 TEXT,
    source_ip                  TEXT,
    created_at                 TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at                 TIMESTAMPTZ          -- CIMD: cached document valid until
);

CREATE TABLE IF NOT EXISTS pending_authorizations (
    id              TEXT PRIMARY KEY,
    browser_hash    BYTEA NOT NULL,
    csrf            TEXT NOT NULL,
    client_id       TEXT NOT NULL,
    redirect_uri    TEXT NOT NULL,
    state           TEXT NOT NULL,
    code_challenge  TEXT NOT NULL,
    resource        TEXT NOT NULL,
    scope           TEXT NOT NULL,
    force_consent   BOOLEAN NOT NULL,
    consented       BOOLEAN NOT NULL DEFAULT false,
    google_state    TEXT UNIQUE,
    google_nonce    TEXT,
    google_verifier TEXT,
    user_sub        TEXT,
    user_email      TEXT,
    user_hd         TEXT,
    user_groups     TEXT[],
    user_agent      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
    sub            TEXT PRIMARY KEY,
    email          TEXT NOT NULL,
    hd             TEXT,
    groups         TEXT[] NOT NULL DEFAULT '{}',
    first_login_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_login_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS consents (
    user_sub   TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    granted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_sub, client_id)
);

CREATE TABLE IF NOT EXISTS browser_sessions (
    id_hash    BYTEA PRIMARY KEY,
    user_sub   TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS authorization_codes (
    code_hash      BYTEA PRIMARY KEY,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    resource       TEXT NOT NULL,
    scope          TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    user_sub       TEXT NOT NULL,
    email          TEXT NOT NULL,
    hd             TEXT,
    groups         TEXT[] NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at     TIMESTAMPTZ NOT NULL,
    used_at        TIMESTAMPTZ,
    family_id      TEXT
);

CREATE TABLE IF NOT EXISTS token_families (
    family_id      TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL,
    user_sub       TEXT NOT NULL,
    email          TEXT NOT NULL,
    resource       TEXT NOT NULL,
    scope          TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at     TIMESTAMPTZ NOT NULL,
    revoked_at     TIMESTAMPTZ,
    revoked_reason TEXT
);

CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash BYTEA PRIMARY KEY,
    family_id  TEXT NOT NULL REFERENCES token_families (family_id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    used_at    TIMESTAMPTZ
);

CREATE INDEX IF NOT EXISTS refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX IF NOT EXISTS token_families_user_idx ON token_families (user_sub);
CREATE INDEX IF NOT EXISTS pending_expires_idx ON pending_authorizations (expires_at);
CREATE INDEX IF NOT EXISTS codes_expires_idx ON authorization_codes (expires_at);
