//! The persistence boundary of the token service: a trait the registry writes
//! through, so SQLite (embedded) and later PostgreSQL can back it.
//!
//! Every mutation carries the [`Change`] it produces and the store writes both
//! in one transaction: the change log can never disagree with the tokens.

use std::time::SystemTime;

use async_trait::async_trait;

use super::model::{DatabasePermission, TokenKind, TokenRecord};

/// What happened to a token, as recorded in the change log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created.
    Created,
    /// Revoked.
    Revoked,
    /// Permissions or description replaced.
    PermissionsChanged,
    /// Reached its expiry time.
    Expired,
}

impl ChangeKind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Revoked => "revoked",
            ChangeKind::PermissionsChanged => "permissions_changed",
            ChangeKind::Expired => "expired",
        }
    }

    /// Parses [`ChangeKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => ChangeKind::Created,
            "revoked" => ChangeKind::Revoked,
            "permissions_changed" => ChangeKind::PermissionsChanged,
            "expired" => ChangeKind::Expired,
            _ => return None,
        })
    }
}

/// One entry of the change log. Revisions increase by one per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Position in the log.
    pub revision: u64,
    /// The token's id.
    pub token_id: String,
    /// What happened.
    pub kind: ChangeKind,
    /// Which kind of token.
    pub token_kind: TokenKind,
    /// When.
    pub at: SystemTime,
}

/// Everything the registry needs at start-up.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every token, revoked ones included.
    pub tokens: Vec<TokenRecord>,
    /// The newest revision in the change log (0 when empty).
    pub head_revision: u64,
}

/// Errors of the storage layer. Messages never contain token material.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database itself failed.
    #[error("token store: {0}")]
    Database(#[from] sqlx::Error),
    /// Could not create the data directory or a file in it.
    #[error("token store: {0}")]
    Io(#[from] std::io::Error),
    /// A stored row could not be understood.
    #[error("token store holds a corrupt row: {0}")]
    Corrupt(String),
    /// A change-stream subscriber fell too far behind the live tail.
    #[error("the change stream fell behind; resume from the last revision received")]
    Lagged,
    /// The row to change does not exist.
    #[error("no token with id {0}")]
    NotFound(String),
}

/// Durable storage for tokens and the change log.
///
/// Every method returns only after the data is durable.
#[async_trait]
pub trait TokenStore: Send + Sync + std::fmt::Debug + 'static {
    /// Loads every token and the head revision.
    async fn load(&self) -> Result<Snapshot, StoreError>;

    /// Inserts a new token.
    async fn create(&self, token: &TokenRecord, change: &Change) -> Result<(), StoreError>;

    /// Replaces a token's permissions and description.
    async fn update(
        &self,
        id: &str,
        permissions: &[DatabasePermission],
        description: &str,
        change: &Change,
    ) -> Result<(), StoreError>;

    /// Marks a token revoked at `change.at`.
    async fn revoke(&self, id: &str, change: &Change) -> Result<(), StoreError>;

    /// Records a change that alters no token row (expiry).
    async fn record(&self, change: &Change) -> Result<(), StoreError>;

    /// Changes with a revision greater than `after`, oldest first, at most `limit`.
    async fn changes_after(&self, after: u64, limit: u32) -> Result<Vec<Change>, StoreError>;

    /// The oldest revision still kept, if any.
    async fn oldest_revision(&self) -> Result<Option<u64>, StoreError>;

    /// Drops log entries at or below `revision`.
    async fn prune_changes(&self, up_to: u64) -> Result<(), StoreError>;
}
