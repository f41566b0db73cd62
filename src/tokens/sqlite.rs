//! The embedded token store: one SQLite file, by default under the data
//! directory (`fluxgate.db`).
//!
//! WAL journal with `synchronous = FULL`, so a write batch is on disk before
//! the calls that made it return. Write transactions start with `BEGIN
//! IMMEDIATE`, taking SQLite's write lock up front, so a second process on
//! the same file (`fluxgate authz bootstrap`) is serialized with the running
//! service rather than failing half-way. Only token hashes are written.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::model::{DatabasePermission, TokenRecord};
use super::rows::{self, encode_permissions, revision_i64};
use super::store::{
    Change, ChangeListener, Snapshot, StoreError, StoredToken, TokenStore, Write, WriteOutcome,
    WriteTx, apply_writes,
};
use super::time::to_millis;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "fluxgate.db";

/// SQLite-backed [`TokenStore`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        create_private_dir(data_dir)?;
        Self::open_file(&data_dir.join(DB_FILE)).await
    }

    /// Opens (creating if needed) the store in the file `path`, applying
    /// schema migrations and giving a new store its identity.
    pub async fn open_file(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
            && !parent.exists()
        {
            create_private_dir(parent)?;
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        super::schema::sqlite().run(&pool).await?;
        // The head starts at the newest logged revision: a store written
        // before revisions were kept here resumes where its log ends.
        sqlx::query(
            "INSERT INTO store_meta (id, store_id, head)
             SELECT 1, ?, COALESCE(MAX(revision), 0) FROM changes WHERE true
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .execute(&pool)
        .await?;
        restrict_file(path)?;
        Ok(Self {
            pool,
            path: path.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the pool, flushing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn restrict_file(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// A write transaction.
struct Tx(Transaction<'static, Sqlite>);

#[async_trait]
impl WriteTx for Tx {
    async fn lock_head(&mut self) -> Result<u64, StoreError> {
        // BEGIN IMMEDIATE already holds the write lock.
        let head: Option<i64> = sqlx::query_scalar("SELECT head FROM store_meta WHERE id = 1")
            .fetch_optional(&mut *self.0)
            .await?;
        match head {
            Some(h) => rows::head(Some(h)),
            None => Err(StoreError::Corrupt("store_meta has no row".to_owned())),
        }
    }

    async fn set_head(&mut self, head: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE store_meta SET head = ? WHERE id = 1")
            .bind(revision_i64(head))
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn count_tokens(&mut self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
            .fetch_one(&mut *self.0)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn get(&mut self, id: &str) -> Result<Option<StoredToken>, StoreError> {
        let row = sqlx::query("SELECT * FROM tokens WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *self.0)
            .await?;
        row.as_ref().map(rows::token).transpose()
    }

    async fn insert(&mut self, token: &TokenRecord, revision: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tokens (id, kind, description, permissions, hash, created_at,
                                 expires_at, revoked_at, updated_at, row_revision, expiry_recorded)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, FALSE)",
        )
        .bind(&token.id)
        .bind(token.kind.as_str())
        .bind(&token.description)
        .bind(encode_permissions(&token.permissions))
        .bind(&token.hash.as_bytes()[..])
        .bind(to_millis(token.created_at))
        .bind(token.expires_at.map(to_millis))
        .bind(token.revoked_at.map(to_millis))
        .bind(token.updated_at.map(to_millis))
        .bind(revision_i64(revision))
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn update(
        &mut self,
        id: &str,
        permissions: &[DatabasePermission],
        description: Option<&str>,
        at: SystemTime,
        revision: u64,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(
            "UPDATE tokens SET permissions = ?, description = COALESCE(?, description),
                               updated_at = ?, row_revision = ?
              WHERE id = ? AND kind = 'database' AND revoked_at IS NULL
             RETURNING *",
        )
        .bind(encode_permissions(permissions))
        .bind(description)
        .bind(to_millis(at))
        .bind(revision_i64(revision))
        .bind(id)
        .fetch_optional(&mut *self.0)
        .await?;
        Ok(row.as_ref().map(rows::token).transpose()?.map(|t| t.record))
    }

    async fn revoke(
        &mut self,
        id: &str,
        at: SystemTime,
        revision: u64,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(
            "UPDATE tokens SET revoked_at = ?, row_revision = ?
              WHERE id = ? AND revoked_at IS NULL
             RETURNING *",
        )
        .bind(to_millis(at))
        .bind(revision_i64(revision))
        .bind(id)
        .fetch_optional(&mut *self.0)
        .await?;
        Ok(row.as_ref().map(rows::token).transpose()?.map(|t| t.record))
    }

    async fn other_active_management(
        &mut self,
        id: &str,
        at: SystemTime,
    ) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tokens
              WHERE kind = 'management' AND revoked_at IS NULL
                AND (expires_at IS NULL OR expires_at > ?) AND id <> ?",
        )
        .bind(to_millis(at))
        .bind(id)
        .fetch_one(&mut *self.0)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn mark_expiry_recorded(&mut self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE tokens SET expiry_recorded = TRUE WHERE id = ?")
            .bind(id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn insert_change(&mut self, change: &Change) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO changes (revision, token_id, kind, token_kind, at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(revision_i64(change.revision))
        .bind(&change.token_id)
        .bind(change.kind.as_str())
        .bind(change.token_kind.as_str())
        .bind(to_millis(change.at))
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl TokenStore for SqliteStore {
    fn describe(&self) -> String {
        format!("SQLite {}", self.path.display())
    }

    async fn load(&self) -> Result<Snapshot, StoreError> {
        // One read transaction: the tokens and the head of the same moment.
        let mut tx = self.pool.begin().await?;
        let meta: Option<(String, i64)> =
            sqlx::query_as("SELECT store_id, head FROM store_meta WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await?;
        let Some((store_id, head)) = meta else {
            return Err(StoreError::Corrupt("store_meta has no row".to_owned()));
        };
        let tokens = rows::tokens(
            sqlx::query("SELECT * FROM tokens ORDER BY created_at, id").fetch(&mut *tx),
        )
        .await?;
        tx.commit().await?;
        Ok(Snapshot {
            tokens,
            head_revision: rows::head(Some(head))?,
            store_id,
        })
    }

    async fn write(&self, writes: &[Write]) -> Result<Vec<WriteOutcome>, StoreError> {
        let mut tx = Tx(self.pool.begin_with("BEGIN IMMEDIATE").await?);
        let (outcomes, _) = apply_writes(&mut tx, writes).await?;
        tx.0.commit().await?;
        Ok(outcomes)
    }

    async fn changes_after(&self, after: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM changes WHERE revision > ? ORDER BY revision LIMIT ?")
                .bind(revision_i64(after))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(rows::change).collect()
    }

    async fn tokens(&self, ids: &[String]) -> Result<Vec<StoredToken>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned());
        let rows = sqlx::query("SELECT * FROM tokens WHERE id IN (SELECT value FROM json_each(?))")
            .bind(list)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::token).collect()
    }

    async fn oldest_revision(&self) -> Result<Option<u64>, StoreError> {
        let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(revision) FROM changes")
            .fetch_one(&self.pool)
            .await?;
        Ok(oldest.and_then(|r| u64::try_from(r).ok()))
    }

    async fn prune_changes(&self, up_to: u64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM changes WHERE revision <= ?")
            .bind(revision_i64(up_to))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn listen(&self) -> Result<Option<Box<dyn ChangeListener>>, StoreError> {
        // Another process on the same file (a recovery bootstrap) is seen
        // by polling.
        Ok(None)
    }

    async fn close(&self) {
        SqliteStore::close(self).await;
    }
}
