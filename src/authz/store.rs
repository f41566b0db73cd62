//! The decision table: cached decisions by key, and which of them are still
//! current. The [`cache`](super::cache) decides what to keep for how long
//! and when to serve it; this module only holds entries, and answers for
//! none that an invalidation made stale since it was fetched.
//!
//! - Entries are keyed per (token fingerprint, database, action) — see
//!   [`key`](super::key) — and evicted at their own `evict_at`, or earlier
//!   when the table is full.
//! - Every fetch is stamped ([`DecisionStore::stamp`]) before it starts; an
//!   invalidation of the token (or a flush) after that makes the answer
//!   not current, whether it is already stored or still in flight (see
//!   [`epoch`](super::epoch)).

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use super::Need;
use super::entry::{Cached, Clock, EntryExpiry};
use super::epoch::{Epochs, Subject};
use super::key::{ANY_ACTION, DecisionKey, Fingerprint, Interner, KeyRef, action_byte};

/// Cached decisions and their invalidation state.
pub(crate) struct DecisionStore {
    clock: Clock,
    cache: Cache<DecisionKey, Cached>,
    epochs: Epochs,
    databases: Interner,
}

impl DecisionStore {
    /// A table of at most `max_entries`, remembering invalidations for
    /// `retention` (longer than any entry fetched before one can live).
    pub(crate) fn new(max_entries: u64, retention: Duration) -> Self {
        let clock = Clock::new();
        let cache = Cache::builder()
            .name("fluxgate-decisions")
            .max_capacity(max_entries)
            .expire_after(EntryExpiry { clock })
            .build();
        Self {
            clock,
            cache,
            epochs: Epochs::new(retention),
            databases: Interner::new(),
        }
    }

    /// The clock entry times are counted on.
    pub(crate) fn clock(&self) -> Clock {
        self.clock
    }

    /// The stored key of `need`.
    pub(crate) fn key(&self, fingerprint: Fingerprint, need: &Need) -> DecisionKey {
        DecisionKey::new(
            fingerprint,
            self.databases.intern(&need.database),
            action_byte(need.action),
        )
    }

    /// The stored token-level key ("this token is invalid").
    pub(crate) fn token_key(&self, fingerprint: Fingerprint) -> DecisionKey {
        DecisionKey::new(fingerprint, self.databases.intern(""), ANY_ACTION)
    }

    /// The entry for `key` if it is current (no invalidation since it was
    /// fetched); one that is not is dropped.
    pub(crate) async fn current(&self, key: &KeyRef<'_>) -> Option<Cached> {
        let cached = self.cache.get(key).await?;
        if self.is_current(cached.stamp, cached.subject.as_deref()) {
            Some(cached)
        } else {
            self.cache.invalidate(key).await;
            None
        }
    }

    /// Stores `value` under `key`.
    pub(crate) async fn insert(&self, key: DecisionKey, value: Cached) {
        self.cache.insert(key, value).await;
    }

    /// The stamp for a fetch starting now.
    pub(crate) fn stamp(&self) -> u64 {
        self.epochs.stamp()
    }

    /// The shared record of token id `id`, which entries about it carry.
    pub(crate) fn subject(&self, id: &str) -> Arc<Subject> {
        self.epochs.subject(id)
    }

    /// True when a decision about `subject` (none for an invalid token)
    /// fetched with `stamp` may still be used.
    pub(crate) fn is_current(&self, stamp: u64, subject: Option<&Subject>) -> bool {
        self.epochs.is_current(stamp, subject)
    }

    /// Makes every decision about token `id` fetched before now not
    /// current; `dead`: revoked or expired, never usable again.
    pub(crate) fn invalidate_subject(&self, id: &str, dead: bool) {
        // Entries are not scanned: each carries its subject, whose
        // invalidation number every hit compares. They age out or are
        // dropped when next read.
        self.epochs.invalidate(id, dead);
    }

    /// Drops every decision, including answers still in flight.
    pub(crate) fn flush(&self) {
        self.epochs.flush();
        self.cache.invalidate_all();
    }

    /// Entries held (approximate until [`DecisionStore::run_maintenance`]).
    pub(crate) fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Applies pending evictions.
    pub(crate) async fn run_maintenance(&self) {
        self.cache.run_pending_tasks().await;
    }
}
