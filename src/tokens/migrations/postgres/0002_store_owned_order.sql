-- The store owns ordering and identity (replicas, group commit); see the
-- SQLite migration of the same number.
ALTER TABLE tokens ADD COLUMN row_revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN expiry_recorded BOOLEAN NOT NULL DEFAULT FALSE;

UPDATE tokens SET expiry_recorded = TRUE
 WHERE id IN (SELECT token_id FROM changes WHERE kind = 'expired');
UPDATE tokens SET row_revision = COALESCE(
    (SELECT MAX(revision) FROM changes
      WHERE changes.token_id = tokens.id AND changes.kind <> 'expired'), 0);

CREATE TABLE store_meta (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    store_id TEXT NOT NULL,
    head     BIGINT NOT NULL
);
