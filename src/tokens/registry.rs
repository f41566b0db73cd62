//! The token service's in-memory state over its store: tokens indexed by
//! hash and id so Authorize never waits for I/O, kept in step with the
//! store's change log.
//!
//! The store is the truth and owns ordering (see [`super::store`]); this
//! process is one follower of its log among possibly several replicas:
//!
//! - writes are queued to one writer task that commits whatever is queued
//!   in one transaction (group commit: one fsync for many concurrent
//!   creates) and makes the result visible here before the calls return;
//! - a follower task applies changes made by any process, woken by the
//!   store's notifications (PostgreSQL `LISTEN`) and by a periodic read of
//!   the log after the last applied revision, which is the truth when a
//!   wake-up is lost;
//! - every token row carries the revision that last wrote it, and memory
//!   only ever moves a token forward, whichever path applies it first.
//!
//! Submodules: [`writer`] (group commit), [`apply`] (changes into
//! memory, in order), [`follower`] (catch-up, freshness), [`stream`] (the
//! change stream), [`expiry`] (expiry announcements and log pruning),
//! [`order`] (the listing order, for paged listings), [`keyed`] (the
//! lookup tables by id and by token hash).

mod apply;
mod expiry;
mod follower;
mod keyed;
mod order;
mod stream;
mod writer;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::model::{
    DatabasePermission, TokenKind, TokenRecord, ValidationError, normalize_permissions,
    validate_description, validate_expiry,
};
use super::secret::{self, NewToken, TokenHash};
use super::store::{Change, Refusal, StoreError, TokenStore, Write, WriteOutcome};
use super::time::{now_millis, truncate_millis};

pub use follower::Freshness;
use keyed::{ByHash, Entry};
pub use order::{ListPosition, Page};
pub use stream::SyncPoint;

/// How many changes a live subscriber may fall behind before its stream ends
/// (it then resumes from the store); also how many recent changes are kept
/// in memory to replay without the store.
const LIVE_BUFFER: usize = 4096;

/// Errors of token operations. Never carries token material.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The request is malformed.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// No token of that kind with that id.
    #[error("no {kind} token with id {id:?}", kind = .1.as_str(), id = shorten(.0))]
    NotFound(String, TokenKind),
    /// The token cannot be changed any more.
    #[error("token {id:?} is revoked", id = shorten(.0))]
    Revoked(String),
    /// Revoking this token would leave no way to manage tokens.
    #[error(
        "management token {id:?} is the last active management token: revoking it would leave nobody able to manage tokens; create another management token first (lost every management token? `fluxgate authz bootstrap` on a host with access to the store mints a new one)",
        id = shorten(.0)
    )]
    LastManagementToken(String),
    /// Storage failed.
    #[error(transparent)]
    Store(Arc<StoreError>),
    /// The OS random number generator failed.
    #[error("cannot generate a token: the OS random number generator failed")]
    Random,
    /// The registry is shutting down.
    #[error("the token service is shutting down")]
    Closed,
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        RegistryError::Store(Arc::new(e))
    }
}

impl From<Refusal> for RegistryError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotFound(id, kind) => RegistryError::NotFound(id, kind),
            Refusal::Revoked(id) => RegistryError::Revoked(id),
            Refusal::LastManagementToken(id) => RegistryError::LastManagementToken(id),
        }
    }
}

/// How the registry follows its store.
#[derive(Debug, Clone, Copy)]
pub struct RegistryOptions {
    /// How often the log is read when no wake-up came (the fallback for
    /// lost notifications, and the only path on SQLite).
    pub poll_interval: Duration,
    /// After how long without a successful read of the store the registry
    /// reports itself not ready (gRPC health, `/readyz`).
    pub stale_after: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            stale_after: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    by_hash: keyed::ByTokenHash,
    by_id: keyed::ById,
    /// Every token in listing order.
    order: order::ListingOrder,
    /// Tokens whose expiry is in the log.
    expiry_recorded: HashSet<String>,
    /// The last revision applied, in order.
    head: u64,
    /// Counts every row put in memory, in order or not: what the
    /// in-process authorizer's generation is. Not `head`, which stays put
    /// when a row this replica wrote lands ahead of a gap in the log.
    /// Raised under the write lock once the row is in; read without the
    /// lock ([`TokenRegistry::generation`], on every request): whoever
    /// sees the new count and then looks a token up waits for the write
    /// lock, so sees the row.
    changes: Arc<AtomicU64>,
}

impl State {
    /// Puts `record` unless memory already holds a newer row of it.
    fn upsert(&mut self, record: Arc<TokenRecord>, revision: u64) -> bool {
        if let Some(current) = self.by_id.get(record.id.as_str())
            && current.revision > revision
        {
            return false;
        }
        self.by_hash.replace(ByHash(Arc::clone(&record)));
        let previous = self.by_id.get(record.id.as_str()).map(|e| &e.record);
        self.order.put(previous, &record);
        self.by_id.replace(Entry { record, revision });
        self.changes.fetch_add(1, Ordering::Release);
        true
    }
}

/// A change as broadcast to live subscribers.
#[derive(Debug, Clone)]
enum Live {
    Change(Change),
    /// Memory was reloaded past a gap in the log: subscribers may have
    /// missed changes and must resume.
    Reset,
}

/// What the background tasks share with the registry.
#[derive(Debug)]
struct Shared {
    store: Arc<dyn TokenStore>,
    store_id: String,
    options: RegistryOptions,
    state: RwLock<State>,
    /// `State::changes`, read without the lock.
    changes: Arc<AtomicU64>,
    /// Serializes applying changes (head moves one way, in order).
    applier: tokio::sync::Mutex<()>,
    live: broadcast::Sender<Live>,
    recent: Mutex<VecDeque<Change>>,
    expiry_changed: Notify,
    closing: watch::Sender<bool>,
    freshness: follower::FreshnessState,
    /// Token counts changed since the gauges were last set (they are set
    /// at most every half second: counting is O(tokens)).
    gauges_dirty: std::sync::atomic::AtomicBool,
}

/// The token registry: lookups from memory, writes through the store.
#[derive(Debug)]
pub struct TokenRegistry {
    shared: Arc<Shared>,
    writes: mpsc::Sender<writer::Request>,
    tasks: CancellationToken,
    store_id_override: std::sync::OnceLock<String>,
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        self.tasks.cancel();
    }
}

impl TokenRegistry {
    /// Loads every token from `store` and starts following it, with the
    /// default [`RegistryOptions`].
    pub async fn open(store: Arc<dyn TokenStore>) -> Result<Arc<Self>, StoreError> {
        Self::open_with(store, RegistryOptions::default()).await
    }

    /// Loads every token from `store` and starts following it.
    pub async fn open_with(
        store: Arc<dyn TokenStore>,
        options: RegistryOptions,
    ) -> Result<Arc<Self>, StoreError> {
        let snapshot = store.load().await?;
        let mut state = State {
            head: snapshot.head_revision,
            ..State::default()
        };
        for token in snapshot.tokens {
            if token.expiry_recorded {
                state.expiry_recorded.insert(token.record.id.clone());
            }
            state.upsert(Arc::new(token.record), token.revision);
        }
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let shared = Arc::new(Shared {
            store,
            store_id: snapshot.store_id,
            options,
            changes: Arc::clone(&state.changes),
            state: RwLock::new(state),
            applier: tokio::sync::Mutex::new(()),
            live,
            recent: Mutex::new(VecDeque::with_capacity(LIVE_BUFFER)),
            expiry_changed: Notify::new(),
            closing: watch::Sender::new(false),
            freshness: follower::FreshnessState::new(),
            gauges_dirty: std::sync::atomic::AtomicBool::new(false),
        });
        let tasks = CancellationToken::new();
        let (writes, queue) = mpsc::channel(writer::QUEUE);
        tokio::spawn(writer::run(Arc::clone(&shared), queue));
        tokio::spawn(follower::run(Arc::clone(&shared), tasks.clone()));
        shared.publish_gauges();
        Ok(Arc::new(Self {
            shared,
            writes,
            tasks,
            store_id_override: std::sync::OnceLock::new(),
        }))
    }

    /// Ends every change stream (at shutdown: they would otherwise hold the
    /// server open for the whole grace period).
    pub fn close(&self) {
        self.shared.closing.send_replace(true);
    }

    /// The identity of the token store: created with it and kept in it, the
    /// same on every replica over one store. Revisions of one store mean
    /// nothing in another. Always known (`Some`) since stores keep one.
    pub fn store_id(&self) -> Option<&str> {
        Some(
            self.store_id_override
                .get()
                .map_or(self.shared.store_id.as_str(), String::as_str),
        )
    }

    /// Announces another identity than the store's (the first call wins):
    /// for tests and tools that stand in for a different store.
    pub fn set_store_id(&self, id: impl Into<String>) {
        let _ = self.store_id_override.set(id.into());
    }

    /// What the store is, for messages.
    pub fn store_description(&self) -> String {
        self.shared.store.describe()
    }

    /// The usable token whose string is `token`, if any.
    pub fn find_usable(&self, token: &[u8]) -> Option<Arc<TokenRecord>> {
        if token.is_empty() {
            return None;
        }
        let hash = TokenHash::of(token);
        let state = self.shared.state.read();
        state
            .by_hash
            .get(&hash)
            .map(|t| &t.0)
            .filter(|t| t.is_usable(SystemTime::now()))
            .cloned()
    }

    /// [`TokenRegistry::find_usable`], and when memory does not know the
    /// token, again after reading the store's newest changes: a token
    /// another process has just written (`fluxgate authz bootstrap`,
    /// another replica) is known before its change notification arrives.
    /// For management calls, which are rare; not for Authorize, where an
    /// unknown token is the common guess and must not cost a store read.
    ///
    /// An error: the store could not be read, so whether the token exists
    /// is not known.
    pub async fn find_usable_now(
        &self,
        token: &[u8],
    ) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        if let Some(found) = self.find_usable(token) {
            return Ok(Some(found));
        }
        if token.is_empty() {
            return Ok(None);
        }
        self.shared.catch_up().await?;
        Ok(self.find_usable(token))
    }

    /// True when no token exists at all (first start).
    pub fn is_empty(&self) -> bool {
        self.shared.state.read().by_id.is_empty()
    }

    /// The newest revision applied here.
    pub fn head_revision(&self) -> u64 {
        self.shared.state.read().head
    }

    /// Changes whenever a token's row in memory changes (created, revoked,
    /// expired, reloaded), whether or not its revision is applied in order
    /// yet: an answer given before is not reused after.
    pub fn generation(&self) -> u64 {
        self.shared.changes.load(Ordering::Acquire)
    }

    /// Up to `limit` tokens of `kind` after `after` (from the oldest when
    /// `None`), oldest first (by creation time, then id). O(log n + limit).
    pub fn list_page(
        &self,
        kind: TokenKind,
        include_revoked: bool,
        after: Option<&ListPosition>,
        limit: usize,
    ) -> Page {
        self.shared
            .state
            .read()
            .order
            .page(kind, include_revoked, after, limit)
    }

    /// Every token of `kind`, oldest first: O(n), for tools and tests (the
    /// management API pages with [`TokenRegistry::list_page`]).
    pub fn list(&self, kind: TokenKind, include_revoked: bool) -> Vec<Arc<TokenRecord>> {
        self.list_page(kind, include_revoked, None, usize::MAX - 1)
            .tokens
    }

    /// One token of `kind` by id.
    pub fn get(&self, id: &str, kind: TokenKind) -> Result<Arc<TokenRecord>, RegistryError> {
        self.shared
            .state
            .read()
            .by_id
            .get(id)
            .map(|e| &e.record)
            .filter(|t| t.kind == kind)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(id.to_owned(), kind))
    }

    /// Whether the store has been read recently enough to serve.
    pub fn freshness(&self) -> Freshness {
        self.shared.freshness()
    }

    /// Changes to `true` while fresh, `false` while stale (gRPC health).
    pub fn serving(&self) -> watch::Receiver<bool> {
        self.shared.freshness.subscribe()
    }

    /// Queues `write` for the next group commit and waits until it is
    /// durable and visible in memory.
    async fn submit(&self, write: Write) -> Result<WriteOutcome, RegistryError> {
        writer::submit(&self.writes, write).await
    }

    /// A new token record with its string (returned to the caller once),
    /// validated, not stored yet.
    pub fn new_token(
        kind: TokenKind,
        description: String,
        permissions: Vec<DatabasePermission>,
        expires_at: Option<SystemTime>,
    ) -> Result<(TokenRecord, NewToken), RegistryError> {
        validate_description(&description)?;
        let now = now_millis();
        let expires_at = expires_at.map(truncate_millis);
        validate_expiry(expires_at, now)?;
        let permissions = match kind {
            TokenKind::Database => normalize_permissions(permissions)?,
            TokenKind::Management | TokenKind::Proxy => Vec::new(),
        };
        let new_token = secret::generate(kind).map_err(|_| RegistryError::Random)?;
        let record = TokenRecord {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            description,
            permissions,
            hash: new_token.hash(),
            created_at: now,
            expires_at,
            revoked_at: None,
            updated_at: None,
        };
        Ok((record, new_token))
    }

    /// Creates a token. Returns its record and its string (to hand out once).
    pub async fn create(
        &self,
        kind: TokenKind,
        description: String,
        permissions: Vec<DatabasePermission>,
        expires_at: Option<SystemTime>,
    ) -> Result<(Arc<TokenRecord>, NewToken), RegistryError> {
        let (record, token) = Self::new_token(kind, description, permissions, expires_at)?;
        match self.submit(Write::Create(record)).await? {
            WriteOutcome::Done {
                token: Some(record),
                ..
            } => Ok((Arc::new(record), token)),
            other => Err(unexpected(&other)),
        }
    }

    /// Creates the first management token, only if the store holds no
    /// token at all (checked inside the writing transaction, so of several
    /// replicas starting together on an empty store exactly one creates
    /// it). `None` when the store already had tokens.
    pub async fn create_first_management_token(
        &self,
        description: String,
    ) -> Result<Option<(Arc<TokenRecord>, NewToken)>, RegistryError> {
        let (record, token) =
            Self::new_token(TokenKind::Management, description, Vec::new(), None)?;
        match self.submit(Write::Bootstrap(record)).await? {
            WriteOutcome::Done {
                token: Some(record),
                ..
            } => Ok(Some((Arc::new(record), token))),
            WriteOutcome::Unchanged(_) => Ok(None),
            other => Err(unexpected(&other)),
        }
    }

    /// Replaces a database token's permissions and, when given, its description.
    pub async fn update(
        &self,
        id: &str,
        permissions: Vec<DatabasePermission>,
        description: Option<String>,
    ) -> Result<Arc<TokenRecord>, RegistryError> {
        let permissions = normalize_permissions(permissions)?;
        if let Some(d) = &description {
            validate_description(d)?;
        }
        // The store decides whether the token exists and is unrevoked: it
        // may have been created or revoked on another replica a moment ago.
        if !could_exist(id) {
            return Err(RegistryError::NotFound(id.to_owned(), TokenKind::Database));
        }
        let write = Write::Update {
            id: id.to_owned(),
            permissions,
            description,
            at: now_millis(),
        };
        match self.submit(write).await? {
            WriteOutcome::Done {
                token: Some(record),
                ..
            } => Ok(Arc::new(record)),
            WriteOutcome::Refused(r) => Err(r.into()),
            other => Err(unexpected(&other)),
        }
    }

    /// Revokes a token of `kind`. Revoking a revoked token changes nothing.
    /// The last active management token cannot be revoked.
    pub async fn revoke(
        &self,
        id: &str,
        kind: TokenKind,
    ) -> Result<Arc<TokenRecord>, RegistryError> {
        // An id unknown here may be a token another replica created a
        // moment ago: the store decides.
        if !could_exist(id) {
            return Err(RegistryError::NotFound(id.to_owned(), kind));
        }
        let write = Write::Revoke {
            id: id.to_owned(),
            kind,
            at: now_millis(),
        };
        match self.submit(write).await? {
            WriteOutcome::Done {
                token: Some(record),
                ..
            }
            | WriteOutcome::Unchanged(Some(record)) => Ok(self.newest(record)),
            WriteOutcome::Refused(r) => Err(r.into()),
            other => Err(unexpected(&other)),
        }
    }

    /// The copy of `record`'s token in memory when it is at least as new.
    fn newest(&self, record: TokenRecord) -> Arc<TokenRecord> {
        match self.shared.state.read().by_id.get(record.id.as_str()) {
            Some(e) if *e.record == record => Arc::clone(&e.record),
            _ => Arc::new(record),
        }
    }
}

/// False for ids no token can have: worth no store round trip (and
/// PostgreSQL text cannot hold NUL).
fn could_exist(id: &str) -> bool {
    !id.is_empty() && !id.contains('\0')
}

fn unexpected(outcome: &WriteOutcome) -> RegistryError {
    RegistryError::from(StoreError::Corrupt(format!(
        "the store answered a write with {outcome:?}"
    )))
}

/// An id as echoed in an error: ids are caller input, and an unbounded one
/// would make the status too large for the client's header limits.
fn shorten(id: &str) -> String {
    const MAX: usize = 64;
    match id.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &id[..cut]),
        None => id.to_owned(),
    }
}
