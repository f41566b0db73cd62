//! The embedded token store: one SQLite file under the data directory.
//!
//! WAL journal with `synchronous = FULL`, so a create or revoke is on disk
//! before the call that made it returns. Only token hashes are written.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use super::model::{DatabasePermission, TokenKind, TokenRecord};
use super::secret::TokenHash;
use super::store::{Change, ChangeKind, Snapshot, StoreError, TokenStore};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "fluxgate.db";

const SCHEMA: &str = "
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
";

/// SQLite-backed [`TokenStore`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct StoredPermission {
    database: String,
    read: bool,
    write: bool,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        create_private_dir(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        restrict_file(&path)?;
        Ok(Self { pool, path })
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

/// Milliseconds since the epoch: the stored time form.
pub(crate) fn to_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn encode_permissions(permissions: &[DatabasePermission]) -> String {
    let stored: Vec<StoredPermission> = permissions
        .iter()
        .map(|p| StoredPermission {
            database: p.database.clone(),
            read: p.read,
            write: p.write,
        })
        .collect();
    // Serializing plain strings and bools cannot fail.
    serde_json::to_string(&stored).unwrap_or_else(|_| "[]".to_owned())
}

fn decode_token(row: &SqliteRow) -> Result<TokenRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let kind: String = row.try_get("kind")?;
    let kind = TokenKind::parse(&kind)
        .ok_or_else(|| StoreError::Corrupt(format!("token {id}: kind {kind:?}")))?;
    let permissions: String = row.try_get("permissions")?;
    let permissions: Vec<StoredPermission> = serde_json::from_str(&permissions)
        .map_err(|e| StoreError::Corrupt(format!("token {id}: permissions: {e}")))?;
    let hash: Vec<u8> = row.try_get("hash")?;
    let hash = TokenHash::from_slice(&hash)
        .ok_or_else(|| StoreError::Corrupt(format!("token {id}: hash length")))?;
    Ok(TokenRecord {
        kind,
        description: row.try_get("description")?,
        permissions: permissions
            .into_iter()
            .map(|p| DatabasePermission {
                database: p.database,
                read: p.read,
                write: p.write,
            })
            .collect(),
        hash,
        created_at: from_millis(row.try_get("created_at")?),
        expires_at: row
            .try_get::<Option<i64>, _>("expires_at")?
            .map(from_millis),
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(from_millis),
        updated_at: row
            .try_get::<Option<i64>, _>("updated_at")?
            .map(from_millis),
        id,
    })
}

fn decode_change(row: &SqliteRow) -> Result<Change, StoreError> {
    let revision: i64 = row.try_get("revision")?;
    let kind: String = row.try_get("kind")?;
    let token_kind: String = row.try_get("token_kind")?;
    Ok(Change {
        revision: u64::try_from(revision)
            .map_err(|_| StoreError::Corrupt(format!("revision {revision}")))?,
        token_id: row.try_get("token_id")?,
        kind: ChangeKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("change kind {kind:?}")))?,
        token_kind: TokenKind::parse(&token_kind)
            .ok_or_else(|| StoreError::Corrupt(format!("token kind {token_kind:?}")))?,
        at: from_millis(row.try_get("at")?),
    })
}

fn revision_i64(revision: u64) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

async fn insert_change(
    conn: &mut sqlx::SqliteConnection,
    change: &Change,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO changes (revision, token_id, kind, token_kind, at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(revision_i64(change.revision))
    .bind(&change.token_id)
    .bind(change.kind.as_str())
    .bind(change.token_kind.as_str())
    .bind(to_millis(change.at))
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        let rows = sqlx::query("SELECT * FROM tokens ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        let tokens = rows
            .iter()
            .map(decode_token)
            .collect::<Result<Vec<_>, _>>()?;
        let head: Option<i64> = sqlx::query_scalar("SELECT MAX(revision) FROM changes")
            .fetch_one(&self.pool)
            .await?;
        Ok(Snapshot {
            tokens,
            head_revision: head.and_then(|h| u64::try_from(h).ok()).unwrap_or(0),
        })
    }

    async fn create(&self, token: &TokenRecord, change: &Change) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO tokens (id, kind, description, permissions, hash, created_at, expires_at, revoked_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .execute(&mut *tx)
        .await?;
        insert_change(&mut tx, change).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update(
        &self,
        id: &str,
        permissions: &[DatabasePermission],
        description: &str,
        change: &Change,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE tokens SET permissions = ?, description = ?, updated_at = ? WHERE id = ?",
        )
        .bind(encode_permissions(permissions))
        .bind(description)
        .bind(to_millis(change.at))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(id.to_owned()));
        }
        insert_change(&mut tx, change).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn revoke(&self, id: &str, change: &Change) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(to_millis(change.at))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(id.to_owned()));
        }
        insert_change(&mut tx, change).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record(&self, change: &Change) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        insert_change(&mut conn, change).await
    }

    async fn changes_after(&self, after: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM changes WHERE revision > ? ORDER BY revision LIMIT ?")
                .bind(revision_i64(after))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(decode_change).collect()
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
}
