//! Token rows and change rows as both backends store them: the same columns
//! (times in milliseconds, permissions as JSON, the SHA-512 hash as bytes),
//! decoded once here for any sqlx row type.

use futures_util::{Stream, TryStreamExt as _};
use serde::{Deserialize, Serialize};
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::model::{DatabasePermission, TokenKind, TokenRecord};
use super::secret::TokenHash;
use super::store::{Change, ChangeKind, StoreError, StoredToken};
use super::time::from_millis;

#[derive(Serialize, Deserialize)]
struct StoredPermission {
    database: String,
    read: bool,
    write: bool,
}

/// The stored form of a permission list.
pub(crate) fn encode_permissions(permissions: &[DatabasePermission]) -> String {
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

/// A revision as stored (a signed 64-bit column).
pub(crate) fn revision_i64(revision: u64) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

fn revision_u64(what: &str, revision: i64) -> Result<u64, StoreError> {
    u64::try_from(revision).map_err(|_| StoreError::Corrupt(format!("{what} {revision}")))
}

/// Every token of `rows` (a `SELECT * FROM tokens` of either backend),
/// decoded row by row as they arrive: holding every row and every token at
/// once would double start-up memory, and the freed rows would stay
/// resident (a million tokens: 1.6 GB more).
pub(crate) async fn tokens<R>(
    mut rows: impl Stream<Item = Result<R, sqlx::Error>> + Unpin,
) -> Result<Vec<StoredToken>, StoreError>
where
    R: Row,
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let mut tokens = Vec::new();
    while let Some(row) = rows.try_next().await? {
        tokens.push(token(&row)?);
    }
    Ok(tokens)
}

/// Decodes a `tokens` row (every column) of either backend.
pub(crate) fn token<'r, R>(row: &'r R) -> Result<StoredToken, StoreError>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
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
    let revision = revision_u64("token revision", row.try_get("row_revision")?)?;
    let expiry_recorded: bool = row.try_get("expiry_recorded")?;
    let time = |column: &'r str| -> Result<Option<std::time::SystemTime>, StoreError> {
        Ok(row.try_get::<Option<i64>, _>(column)?.map(from_millis))
    };
    let record = TokenRecord {
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
        expires_at: time("expires_at")?,
        revoked_at: time("revoked_at")?,
        updated_at: time("updated_at")?,
        id,
    };
    Ok(StoredToken {
        record,
        revision,
        expiry_recorded,
    })
}

/// Decodes a `changes` row of either backend.
pub(crate) fn change<'r, R>(row: &'r R) -> Result<Change, StoreError>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let revision: i64 = row.try_get("revision")?;
    let kind: String = row.try_get("kind")?;
    let token_kind: String = row.try_get("token_kind")?;
    Ok(Change {
        revision: revision_u64("revision", revision)?,
        token_id: row.try_get("token_id")?,
        kind: ChangeKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("change kind {kind:?}")))?,
        token_kind: TokenKind::parse(&token_kind)
            .ok_or_else(|| StoreError::Corrupt(format!("token kind {token_kind:?}")))?,
        at: from_millis(row.try_get("at")?),
    })
}

/// A stored revision column read as `u64`.
pub(crate) fn head(value: Option<i64>) -> Result<u64, StoreError> {
    value.map_or(Ok(0), |h| revision_u64("head revision", h))
}
