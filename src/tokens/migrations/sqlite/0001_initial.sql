-- The schema of the first release. IF NOT EXISTS: stores created by that
-- release, before migrations were tracked, already have these tables and
-- keep every row.
CREATE TABLE IF NOT EXISTS tokens (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    description TEXT NOT NULL,
    permissions TEXT NOT NULL,
    hash        BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER,
    updated_at  INTEGER
);
CREATE TABLE IF NOT EXISTS changes (
    revision   INTEGER PRIMARY KEY,
    token_id   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    token_kind TEXT NOT NULL,
    at         INTEGER NOT NULL
);
