-- The token store's first schema, the same as SQLite's first one.
CREATE TABLE IF NOT EXISTS tokens (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    description TEXT NOT NULL,
    permissions TEXT NOT NULL,
    hash        BYTEA NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT,
    updated_at  BIGINT
);
CREATE TABLE IF NOT EXISTS changes (
    revision   BIGINT PRIMARY KEY,
    token_id   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    token_kind TEXT NOT NULL,
    at         BIGINT NOT NULL
);
