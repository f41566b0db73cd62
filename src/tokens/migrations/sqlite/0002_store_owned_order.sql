-- The store owns ordering and identity (replicas, group commit).
--
-- row_revision: the revision of the change that last wrote the row, so a
-- reader can tell an older copy of a token from a newer one.
ALTER TABLE tokens ADD COLUMN row_revision INTEGER NOT NULL DEFAULT 0;
-- Set when the token's `expired` change is logged: each expiry once.
ALTER TABLE tokens ADD COLUMN expiry_recorded BOOLEAN NOT NULL DEFAULT 0;

UPDATE tokens SET expiry_recorded = 1
 WHERE id IN (SELECT token_id FROM changes WHERE kind = 'expired');
UPDATE tokens SET row_revision = COALESCE(
    (SELECT MAX(revision) FROM changes
      WHERE changes.token_id = tokens.id AND changes.kind <> 'expired'), 0);

-- One row: the store's identity and the log's head. Every write transaction
-- locks it first, which serializes writers and makes revision order the
-- commit order. The row itself is inserted when the store is opened.
CREATE TABLE store_meta (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    store_id TEXT NOT NULL,
    head     INTEGER NOT NULL
);
