//! The token service's in-memory state over its store: tokens indexed by hash
//! and id for lookups without I/O, serialized mutations that write through to
//! the store before they become visible, the change log's live tail, and the
//! task that announces expiries.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::Stream;
use parking_lot::RwLock;
use tokio::sync::{Mutex, Notify, broadcast, watch};

use super::model::{
    DatabasePermission, TokenKind, TokenRecord, ValidationError, normalize_permissions,
    validate_description, validate_expiry,
};
use super::secret::{self, NewToken, TokenHash};
use super::sqlite::to_millis;
use super::store::{Change, ChangeKind, StoreError, TokenStore};

/// How many changes a live subscriber may fall behind before its stream ends
/// (it then resumes from the store).
const LIVE_BUFFER: usize = 4096;
/// Changes fetched per page when replaying the log.
const REPLAY_PAGE: u32 = 1000;
/// Changes kept in the log; older ones are pruned and a client that asks for
/// them is told to flush.
const KEEP_CHANGES: u64 = 100_000;

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
    #[error("token {0:?} is revoked")]
    Revoked(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The OS random number generator failed.
    #[error("cannot generate a token: the OS random number generator failed")]
    Random,
}

/// Where a change stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPoint {
    /// Whether every change after the requested revision follows.
    pub resumed: bool,
    /// The revision the stream continues after.
    pub revision: u64,
    /// The newest revision when the stream started.
    pub head: u64,
}

#[derive(Debug, Default)]
struct State {
    by_hash: HashMap<TokenHash, Arc<TokenRecord>>,
    by_id: HashMap<String, Arc<TokenRecord>>,
    head: u64,
}

impl State {
    fn put(&mut self, token: Arc<TokenRecord>) {
        self.by_hash.insert(token.hash, Arc::clone(&token));
        self.by_id.insert(token.id.clone(), token);
    }
}

/// The token registry. Cheap lookups; mutations are serialized.
#[derive(Debug)]
pub struct TokenRegistry {
    store: Arc<dyn TokenStore>,
    state: RwLock<State>,
    writer: Mutex<()>,
    live: broadcast::Sender<Change>,
    expiry_changed: Notify,
    closing: watch::Sender<bool>,
    /// The store's identity, sent in the change stream's sync (empty until
    /// the store keeps one).
    store_id: std::sync::OnceLock<String>,
}

/// Truncates to whole milliseconds, the stored precision, so the record in
/// memory is exactly the one a restart reads back.
fn now_millis() -> SystemTime {
    truncate_millis(SystemTime::now())
}

fn truncate_millis(t: SystemTime) -> SystemTime {
    let ms = to_millis(t);
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl TokenRegistry {
    /// Loads every token from `store`.
    pub async fn open(store: Arc<dyn TokenStore>) -> Result<Arc<Self>, StoreError> {
        let snapshot = store.load().await?;
        let mut state = State {
            head: snapshot.head_revision,
            ..State::default()
        };
        for token in snapshot.tokens {
            state.put(Arc::new(token));
        }
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let registry = Arc::new(Self {
            store,
            state: RwLock::new(state),
            writer: Mutex::new(()),
            live,
            expiry_changed: Notify::new(),
            closing: watch::Sender::new(false),
            store_id: std::sync::OnceLock::new(),
        });
        registry.publish_gauges();
        Ok(registry)
    }

    /// Ends every change stream (at shutdown: they would otherwise hold the
    /// server open for the whole grace period).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// The identity of the token store, when known: revisions of one store
    /// mean nothing in another.
    pub fn store_id(&self) -> Option<&str> {
        self.store_id.get().map(String::as_str)
    }

    /// Records the store's identity (the first call wins).
    pub fn set_store_id(&self, id: impl Into<String>) {
        let _ = self.store_id.set(id.into());
    }

    /// The usable token whose string is `token`, if any.
    pub fn find_usable(&self, token: &[u8]) -> Option<Arc<TokenRecord>> {
        if token.is_empty() {
            return None;
        }
        let hash = TokenHash::of(token);
        let state = self.state.read();
        state
            .by_hash
            .get(&hash)
            .filter(|t| t.is_usable(SystemTime::now()))
            .cloned()
    }

    /// True when no token exists at all (first start).
    pub fn is_empty(&self) -> bool {
        self.state.read().by_id.is_empty()
    }

    /// The newest revision.
    pub fn head_revision(&self) -> u64 {
        self.state.read().head
    }

    /// Tokens of `kind`, oldest first.
    pub fn list(&self, kind: TokenKind, include_revoked: bool) -> Vec<Arc<TokenRecord>> {
        let state = self.state.read();
        let mut tokens: Vec<_> = state
            .by_id
            .values()
            .filter(|t| t.kind == kind && (include_revoked || t.revoked_at.is_none()))
            .cloned()
            .collect();
        tokens.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        tokens
    }

    /// One token of `kind` by id.
    pub fn get(&self, id: &str, kind: TokenKind) -> Result<Arc<TokenRecord>, RegistryError> {
        self.state
            .read()
            .by_id
            .get(id)
            .filter(|t| t.kind == kind)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(id.to_owned(), kind))
    }

    /// Creates a token. Returns its record and its string (to hand out once).
    pub async fn create(
        &self,
        kind: TokenKind,
        description: String,
        permissions: Vec<DatabasePermission>,
        expires_at: Option<SystemTime>,
    ) -> Result<(Arc<TokenRecord>, NewToken), RegistryError> {
        validate_description(&description)?;
        let now = now_millis();
        let expires_at = expires_at.map(truncate_millis);
        validate_expiry(expires_at, now)?;
        let permissions = match kind {
            TokenKind::Database => normalize_permissions(permissions)?,
            TokenKind::Management | TokenKind::Proxy => Vec::new(),
        };
        let new_token = secret::generate(kind).map_err(|_| RegistryError::Random)?;
        let record = Arc::new(TokenRecord {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            description,
            permissions,
            hash: new_token.hash(),
            created_at: now,
            expires_at,
            revoked_at: None,
            updated_at: None,
        });
        let _writer = self.writer.lock().await;
        let change = self.next_change(&record, ChangeKind::Created, now);
        self.store.create(&record, &change).await?;
        self.commit(change, Some(Arc::clone(&record)));
        if expires_at.is_some() {
            self.expiry_changed.notify_one();
        }
        Ok((record, new_token))
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
        let _writer = self.writer.lock().await;
        let current = self.get(id, TokenKind::Database)?;
        if current.revoked_at.is_some() {
            return Err(RegistryError::Revoked(id.to_owned()));
        }
        let now = now_millis();
        let record = Arc::new(TokenRecord {
            permissions,
            description: description.unwrap_or_else(|| current.description.clone()),
            updated_at: Some(now),
            ..TokenRecord::clone(&current)
        });
        let change = self.next_change(&record, ChangeKind::PermissionsChanged, now);
        self.store
            .update(id, &record.permissions, &record.description, &change)
            .await?;
        self.commit(change, Some(Arc::clone(&record)));
        Ok(record)
    }

    /// Revokes a token of `kind`. Revoking a revoked token changes nothing.
    pub async fn revoke(
        &self,
        id: &str,
        kind: TokenKind,
    ) -> Result<Arc<TokenRecord>, RegistryError> {
        let _writer = self.writer.lock().await;
        let current = self.get(id, kind)?;
        if current.revoked_at.is_some() {
            return Ok(current);
        }
        let now = now_millis();
        let record = Arc::new(TokenRecord {
            revoked_at: Some(now),
            ..TokenRecord::clone(&current)
        });
        let change = self.next_change(&record, ChangeKind::Revoked, now);
        self.store.revoke(id, &change).await?;
        self.commit(change, Some(Arc::clone(&record)));
        Ok(record)
    }

    fn next_change(&self, token: &TokenRecord, kind: ChangeKind, at: SystemTime) -> Change {
        Change {
            revision: self.state.read().head + 1,
            token_id: token.id.clone(),
            kind,
            token_kind: token.kind,
            at,
        }
    }

    /// Makes a durable change visible: memory first, then live subscribers.
    fn commit(&self, change: Change, token: Option<Arc<TokenRecord>>) {
        {
            let mut state = self.state.write();
            state.head = change.revision;
            if let Some(token) = token {
                state.put(token);
            }
        }
        tracing::info!(token_id = %change.token_id, change = change.kind.as_str(), revision = change.revision, "token changed");
        // No subscriber is not an error.
        let _ = self.live.send(change);
        self.publish_gauges();
    }

    fn publish_gauges(&self) {
        let now = SystemTime::now();
        let mut counts: HashMap<(&'static str, &'static str), u64> = HashMap::new();
        for t in self.state.read().by_id.values() {
            let state = if t.revoked_at.is_some() {
                "revoked"
            } else if t.is_usable(now) {
                "active"
            } else {
                "expired"
            };
            *counts.entry((t.kind.as_str(), state)).or_default() += 1;
        }
        for kind in TokenKind::ALL {
            for state in ["active", "revoked", "expired"] {
                let n = counts.get(&(kind.as_str(), state)).copied().unwrap_or(0);
                metrics::gauge!("fluxgate_tokens", "kind" => kind.as_str(), "state" => state)
                    .set(n as f64);
            }
        }
    }

    /// A stream of changes after `after` (or from now when `None`), preceded
    /// by the [`SyncPoint`] telling whether it resumes. The stream ends with
    /// an error when the subscriber falls too far behind; it can resume.
    pub async fn subscribe(
        self: &Arc<Self>,
        after: Option<u64>,
    ) -> Result<
        (
            SyncPoint,
            impl Stream<Item = Result<Change, StoreError>> + Send + 'static,
        ),
        StoreError,
    > {
        // Subscribe before reading the head: a change committed in between is
        // then seen live (and de-duplicated by revision), never lost.
        let mut live = self.live.subscribe();
        let head = self.head_revision();
        let sync = match after {
            Some(a) if a == head => SyncPoint {
                resumed: true,
                revision: a,
                head,
            },
            Some(a) if a < head => {
                let oldest = self.store.oldest_revision().await?;
                if oldest.is_some_and(|o| o <= a + 1) {
                    SyncPoint {
                        resumed: true,
                        revision: a,
                        head,
                    }
                } else {
                    SyncPoint {
                        resumed: false,
                        revision: head,
                        head,
                    }
                }
            }
            _ => SyncPoint {
                resumed: false,
                revision: head,
                head,
            },
        };
        let store = Arc::clone(&self.store);
        let mut closing = self.closing.subscribe();
        let stream = async_stream::try_stream! {
            let mut last = sync.revision;
            while last < head {
                let page = store.changes_after(last, REPLAY_PAGE).await?;
                if page.is_empty() {
                    break;
                }
                for change in page {
                    last = change.revision;
                    yield change;
                }
            }
            loop {
                let received = tokio::select! {
                    r = live.recv() => r,
                    _ = closing.wait_for(|c| *c) => break,
                };
                match received {
                    Ok(change) if change.revision <= last => continue,
                    Ok(change) => {
                        last = change.revision;
                        yield change;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        Err(StoreError::Lagged)?;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        };
        Ok((sync, stream))
    }

    /// Announces expiries as they happen and prunes the change log. Runs
    /// until the task is aborted.
    pub async fn run_expiry_announcer(self: Arc<Self>) {
        // Tokens already expired at start-up are not announced again: a
        // proxy never caches an allow past a token's expiry anyway.
        let start = SystemTime::now();
        let mut announced: HashSet<String> = self
            .state
            .read()
            .by_id
            .values()
            .filter(|t| t.expires_at.is_some_and(|e| e <= start))
            .map(|t| t.id.clone())
            .collect();
        loop {
            let next = {
                let state = self.state.read();
                state
                    .by_id
                    .values()
                    .filter(|t| t.revoked_at.is_none() && !announced.contains(&t.id))
                    .filter_map(|t| t.expires_at)
                    .min()
            };
            let wait = next.map(|t| {
                t.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            });
            tokio::select! {
                () = self.expiry_changed.notified() => continue,
                () = sleep_or_forever(wait) => {}
            }
            let now = SystemTime::now();
            let due: Vec<Arc<TokenRecord>> = self
                .state
                .read()
                .by_id
                .values()
                .filter(|t| {
                    t.revoked_at.is_none()
                        && t.expires_at.is_some_and(|e| e <= now)
                        && !announced.contains(&t.id)
                })
                .cloned()
                .collect();
            for token in due {
                let _writer = self.writer.lock().await;
                let change = self.next_change(&token, ChangeKind::Expired, now_millis());
                match self.store.record(&change).await {
                    Ok(()) => {
                        announced.insert(token.id.clone());
                        self.commit(change, None);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, token_id = %token.id, "cannot record token expiry; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            self.prune().await;
        }
    }

    async fn prune(&self) {
        let head = self.head_revision();
        if head > KEEP_CHANGES
            && let Err(e) = self.store.prune_changes(head - KEEP_CHANGES).await
        {
            tracing::warn!(error = %e, "cannot prune the change log");
        }
    }
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

async fn sleep_or_forever(wait: Option<Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
