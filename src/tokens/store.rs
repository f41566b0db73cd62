//! The persistence boundary of the token service: a trait both backends
//! (SQLite, embedded; PostgreSQL, shared by replicas) implement, and the
//! rules every write follows, written once here over [`WriteTx`].
//!
//! The store, not the process, owns ordering. A write batch runs in one
//! transaction that first locks the log's head; each change it makes takes
//! the next revision and is logged in the same transaction as the token rows
//! it touches. Writers are therefore serialized across every process using
//! the store, revisions are gapless, and revision order is commit order: a
//! follower that has applied revision N never misses N+1 because it
//! committed later. Checks that must hold across replicas (bootstrap only on
//! an empty store, never revoke the last active management token, record
//! each expiry once) run inside that same transaction.

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

/// A token row: the record, the revision of the change that last wrote the
/// row (so a reader can tell an older copy from a newer one), and whether its
/// expiry has been recorded in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// The token.
    pub record: TokenRecord,
    /// Revision of the last change that wrote this row (0: before revisions
    /// were kept per row).
    pub revision: u64,
    /// An `expired` change has been logged for it.
    pub expiry_recorded: bool,
}

/// Everything the registry needs at start-up, read in one consistent view.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every token, revoked ones included.
    pub tokens: Vec<StoredToken>,
    /// The newest revision in the change log (0 when empty).
    pub head_revision: u64,
    /// The store's identity, created with it.
    pub store_id: String,
}

/// One write, as queued by the registry. Times are chosen by the caller.
#[derive(Debug, Clone)]
pub enum Write {
    /// Insert a new token.
    Create(TokenRecord),
    /// Insert a new token only if the store holds no token at all (the
    /// first start, possibly of several replicas at once).
    Bootstrap(TokenRecord),
    /// Replace an unrevoked database token's permissions and, when given,
    /// its description.
    Update {
        /// The token.
        id: String,
        /// The new permissions (already normalized).
        permissions: Vec<DatabasePermission>,
        /// The new description, if it changes.
        description: Option<String>,
        /// When.
        at: SystemTime,
    },
    /// Revoke a token of `kind`.
    Revoke {
        /// The token.
        id: String,
        /// Its kind, as the caller named it.
        kind: TokenKind,
        /// When.
        at: SystemTime,
    },
    /// Log that a token reached its expiry, unless already logged.
    Expire {
        /// The token.
        id: String,
        /// When (not before its expiry).
        at: SystemTime,
    },
}

/// Why a write was refused. Nothing was written for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token of that kind with that id.
    NotFound(String, TokenKind),
    /// The token is revoked and cannot change any more.
    Revoked(String),
    /// Revoking it would leave no active management token.
    LastManagementToken(String),
}

/// What one [`Write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Written, as `change`; `token` is the row as written (none for expiry).
    Done {
        /// The logged change.
        change: Change,
        /// The token row after the write.
        token: Option<TokenRecord>,
    },
    /// Nothing to do: revoking a revoked token (its row), an expiry already
    /// logged, a bootstrap on a store that has tokens.
    Unchanged(Option<TokenRecord>),
    /// Refused; nothing written.
    Refused(Refusal),
}

/// Errors of the storage layer. Messages never contain token material or
/// passwords.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database answered with an error.
    #[error("token store: {0}")]
    Database(#[from] sqlx::Error),
    /// The database could not be reached, or the connection broke.
    #[error("the token store ({store}) is unreachable: {reason}")]
    Unreachable {
        /// Which store (never with a password).
        store: String,
        /// Why, from the driver.
        reason: String,
    },
    /// The connection broke while committing: the write may or may not have
    /// been made.
    #[error(
        "the connection to the token store ({store}) broke while committing: {reason}; the change may or may not have been made"
    )]
    CommitUnknown {
        /// Which store.
        store: String,
        /// Why.
        reason: String,
    },
    /// Could not create the data directory or a file in it.
    #[error("token store: {0}")]
    Io(#[from] std::io::Error),
    /// A stored row could not be understood.
    #[error("token store holds a corrupt row: {0}")]
    Corrupt(String),
    /// Schema migration failed.
    #[error("cannot migrate the token store's schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The store location or its options are unusable.
    #[error("{0}")]
    Config(String),
    /// A change-stream subscriber fell too far behind the live tail.
    #[error("the change stream fell behind; resume from the last revision received")]
    Lagged,
}

impl StoreError {
    /// True when the store could not be reached (as opposed to refusing a
    /// statement): retrying the same statement elsewhere would fail too.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable { .. } | StoreError::CommitUnknown { .. }
        )
    }
}

/// Sorts a driver error into "unreachable" (connection-level) or a database
/// answer, naming `store` in the former.
pub(crate) fn classify(store: &str, e: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match e {
        E::Io(_)
        | E::Tls(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed
        | E::Protocol(_) => StoreError::Unreachable {
            store: store.to_owned(),
            reason: e.to_string(),
        },
        // The server shutting down or refusing connections (admin
        // shutdown, too many connections, starting up, read-only replica
        // after a failover): the store is not usable right now.
        E::Database(ref db)
            if db.code().is_some_and(|c| {
                c.starts_with("57P") || c.starts_with("08") || c == "53300" || c == "25006"
            }) =>
        {
            StoreError::Unreachable {
                store: store.to_owned(),
                reason: e.to_string(),
            }
        }
        other => StoreError::Database(other),
    }
}

/// Durable storage for tokens and the change log.
///
/// Every write returns only after the data is durable.
#[async_trait]
pub trait TokenStore: Send + Sync + std::fmt::Debug + 'static {
    /// What the store is, for messages: backend and location, never a
    /// password.
    fn describe(&self) -> String;

    /// Loads every token, the head revision and the store id, in one view.
    async fn load(&self) -> Result<Snapshot, StoreError>;

    /// Applies `writes` in one transaction, in order; one outcome per write.
    /// Fails as a whole (nothing written) when the transaction fails.
    async fn write(&self, writes: &[Write]) -> Result<Vec<WriteOutcome>, StoreError>;

    /// Changes with a revision greater than `after`, oldest first, at most `limit`.
    async fn changes_after(&self, after: u64, limit: u32) -> Result<Vec<Change>, StoreError>;

    /// The current rows of the tokens with these ids (missing ids skipped).
    async fn tokens(&self, ids: &[String]) -> Result<Vec<StoredToken>, StoreError>;

    /// The oldest revision still kept, if any.
    async fn oldest_revision(&self) -> Result<Option<u64>, StoreError>;

    /// Drops log entries at or below `revision`.
    async fn prune_changes(&self, up_to: u64) -> Result<(), StoreError>;

    /// A wake-up source for changes written by other processes (PostgreSQL
    /// `LISTEN`); `None` when the store has none and is only polled.
    async fn listen(&self) -> Result<Option<Box<dyn ChangeListener>>, StoreError>;

    /// Closes connections.
    async fn close(&self);
}

/// What woke a [`ChangeListener`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Changes were committed; the newest announced head, when the
    /// announcement said (a reader already at or past it has nothing to do).
    Announced(Option<u64>),
    /// The connection was lost and re-established: announcements may have
    /// been missed.
    Reconnected,
}

/// Wake-ups from a store shared with other processes.
#[async_trait]
pub trait ChangeListener: Send + std::fmt::Debug {
    /// Waits for the next wake-up. An error ends the listener.
    async fn next(&mut self) -> Result<Wake, StoreError>;
}

/// The statements a backend provides inside a write transaction; the rules
/// that combine them are in [`apply_writes`], shared by both backends.
#[async_trait]
pub(crate) trait WriteTx: Send {
    /// Locks the log's head until commit and returns it.
    async fn lock_head(&mut self) -> Result<u64, StoreError>;
    /// Moves the head to `head`.
    async fn set_head(&mut self, head: u64) -> Result<(), StoreError>;
    /// How many tokens exist.
    async fn count_tokens(&mut self) -> Result<u64, StoreError>;
    /// The row of `id`.
    async fn get(&mut self, id: &str) -> Result<Option<StoredToken>, StoreError>;
    /// Inserts `token`, written by `revision`.
    async fn insert(&mut self, token: &TokenRecord, revision: u64) -> Result<(), StoreError>;
    /// Inserts several tokens, each with the revision that writes it (a
    /// backend may do it in one statement).
    async fn insert_all(&mut self, tokens: &[(&TokenRecord, u64)]) -> Result<(), StoreError> {
        for (token, revision) in tokens {
            self.insert(token, *revision).await?;
        }
        Ok(())
    }
    /// Replaces permissions (and the description when given); returns the row.
    async fn update(
        &mut self,
        id: &str,
        permissions: &[DatabasePermission],
        description: Option<&str>,
        at: SystemTime,
        revision: u64,
    ) -> Result<Option<TokenRecord>, StoreError>;
    /// Sets `revoked_at` of an unrevoked token; returns the row.
    async fn revoke(
        &mut self,
        id: &str,
        at: SystemTime,
        revision: u64,
    ) -> Result<Option<TokenRecord>, StoreError>;
    /// Active (unrevoked, unexpired at `at`) management tokens other than `id`.
    async fn other_active_management(
        &mut self,
        id: &str,
        at: SystemTime,
    ) -> Result<u64, StoreError>;
    /// Marks the expiry of `id` recorded.
    async fn mark_expiry_recorded(&mut self, id: &str) -> Result<(), StoreError>;
    /// Appends `change` to the log.
    async fn insert_change(&mut self, change: &Change) -> Result<(), StoreError>;
    /// Appends `changes` to the log, in order (a backend may do it in one
    /// statement).
    async fn insert_changes(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        for change in changes {
            self.insert_change(change).await?;
        }
        Ok(())
    }
}

/// Applies `writes` inside an open transaction whose head is not locked
/// yet. Returns one outcome per write and the new head when anything was
/// written.
///
/// Consecutive creates are inserted together and the log entries of the
/// whole batch in one go at the end: a batch of creates costs a fixed
/// number of statements, not a few per create.
pub(crate) async fn apply_writes(
    tx: &mut dyn WriteTx,
    writes: &[Write],
) -> Result<(Vec<WriteOutcome>, Option<u64>), StoreError> {
    let start = tx.lock_head().await?;
    let mut head = start;
    let mut outcomes = Vec::with_capacity(writes.len());
    let mut changes: Vec<Change> = Vec::new();
    let mut inserts: Vec<(&TokenRecord, u64)> = Vec::new();
    for write in writes {
        let revision = head + 1;
        let outcome = match write {
            Write::Create(token) => {
                inserts.push((token, revision));
                WriteOutcome::Done {
                    change: change(revision, token, ChangeKind::Created, token.created_at),
                    token: Some(token.clone()),
                }
            }
            other => {
                // Checks below read rows: earlier inserts first.
                if !inserts.is_empty() {
                    tx.insert_all(&inserts).await?;
                    inserts.clear();
                }
                apply_one(tx, other, revision).await?
            }
        };
        if let WriteOutcome::Done { change, .. } = &outcome {
            changes.push(change.clone());
            head = revision;
        }
        outcomes.push(outcome);
    }
    if !inserts.is_empty() {
        tx.insert_all(&inserts).await?;
    }
    if head == start {
        return Ok((outcomes, None));
    }
    tx.insert_changes(&changes).await?;
    tx.set_head(head).await?;
    Ok((outcomes, Some(head)))
}

fn change(revision: u64, token: &TokenRecord, kind: ChangeKind, at: SystemTime) -> Change {
    Change {
        revision,
        token_id: token.id.clone(),
        kind,
        token_kind: token.kind,
        at,
    }
}

async fn apply_one(
    tx: &mut dyn WriteTx,
    write: &Write,
    revision: u64,
) -> Result<WriteOutcome, StoreError> {
    Ok(match write {
        Write::Create(token) | Write::Bootstrap(token) => {
            if matches!(write, Write::Bootstrap(_)) && tx.count_tokens().await? > 0 {
                return Ok(WriteOutcome::Unchanged(None));
            }
            tx.insert(token, revision).await?;
            WriteOutcome::Done {
                change: change(revision, token, ChangeKind::Created, token.created_at),
                token: Some(token.clone()),
            }
        }
        Write::Update {
            id,
            permissions,
            description,
            at,
        } => {
            let current = match tx.get(id).await? {
                Some(t) if t.record.kind == TokenKind::Database => t.record,
                _ => {
                    return Ok(WriteOutcome::Refused(Refusal::NotFound(
                        id.clone(),
                        TokenKind::Database,
                    )));
                }
            };
            if current.revoked_at.is_some() {
                return Ok(WriteOutcome::Refused(Refusal::Revoked(id.clone())));
            }
            let Some(updated) = tx
                .update(id, permissions, description.as_deref(), *at, revision)
                .await?
            else {
                return Ok(WriteOutcome::Refused(Refusal::Revoked(id.clone())));
            };
            WriteOutcome::Done {
                change: change(revision, &updated, ChangeKind::PermissionsChanged, *at),
                token: Some(updated),
            }
        }
        Write::Revoke { id, kind, at } => {
            let current = match tx.get(id).await? {
                Some(t) if t.record.kind == *kind => t.record,
                _ => return Ok(WriteOutcome::Refused(Refusal::NotFound(id.clone(), *kind))),
            };
            if current.revoked_at.is_some() {
                return Ok(WriteOutcome::Unchanged(Some(current)));
            }
            // Checked under the head lock: two replicas revoking the last
            // two management tokens at once are serialized here, and the
            // second sees the first's revocation.
            if *kind == TokenKind::Management
                && current.is_usable(*at)
                && tx.other_active_management(id, *at).await? == 0
            {
                return Ok(WriteOutcome::Refused(Refusal::LastManagementToken(
                    id.clone(),
                )));
            }
            let Some(revoked) = tx.revoke(id, *at, revision).await? else {
                return Ok(WriteOutcome::Unchanged(Some(current)));
            };
            WriteOutcome::Done {
                change: change(revision, &revoked, ChangeKind::Revoked, *at),
                token: Some(revoked),
            }
        }
        Write::Expire { id, at } => {
            let Some(current) = tx.get(id).await? else {
                return Ok(WriteOutcome::Unchanged(None));
            };
            let due = current.record.expires_at.is_some_and(|e| e <= *at);
            if current.expiry_recorded || current.record.revoked_at.is_some() || !due {
                return Ok(WriteOutcome::Unchanged(None));
            }
            tx.mark_expiry_recorded(id).await?;
            WriteOutcome::Done {
                change: change(revision, &current.record, ChangeKind::Expired, *at),
                token: None,
            }
        }
    })
}
