//! The decision table: cached decisions by key, and which of them are still
//! current. The [`cache`](super::cache) decides what to keep for how long
//! and when to serve it; this module only holds entries, and answers for
//! none that an invalidation made stale since it was fetched.
//!
//! - Entries are keyed per (token fingerprint, database, action) — see
//!   [`key`](super::key) — and gone at their own `evict_at`, or earlier
//!   when the table is full ([`table`](super::table)).
//! - Every fetch is stamped ([`DecisionStore::stamp`]) before it starts; an
//!   invalidation of the token (or a flush) after that makes the answer
//!   not current, whether it is already stored or still in flight (see
//!   [`epoch`](super::epoch)).

use std::time::Duration;

use super::Need;
use super::entry::{Cached, Clock};
use super::epoch::Epochs;
use super::key::{ANY_ACTION, DecisionKey, Fingerprint, Interner, KeyRef, action_byte};
use super::subject::SubjectId;
use super::table::Table;

/// Cached decisions and their invalidation state.
pub(crate) struct DecisionStore {
    clock: Clock,
    table: Table,
    epochs: Epochs,
    databases: Interner,
}

impl DecisionStore {
    /// A table of at most about `max_entries`, remembering invalidations
    /// for `retention` (longer than any entry fetched before one can live).
    pub(crate) fn new(max_entries: u64, retention: Duration) -> Self {
        Self {
            clock: Clock::new(),
            table: Table::new(max_entries),
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

    /// The entry for `key` if it is there at `now` and current (no
    /// invalidation since it was fetched).
    pub(crate) fn current(&self, key: &KeyRef<'_>, now: u64) -> Option<Cached> {
        let cached = self.table.get(key, now)?;
        // One that is not current stays until replaced or evicted: it is
        // never served again.
        self.epochs
            .is_current(cached.stamp, cached.subject.as_ref())
            .then_some(cached)
    }

    /// Stores `value` under `key`.
    pub(crate) fn insert(&self, key: &DecisionKey, value: Cached) {
        self.table.insert(key, value, self.clock.now());
    }

    /// The stamp for a fetch starting now.
    pub(crate) fn stamp(&self) -> u64 {
        self.epochs.stamp()
    }

    /// Changes with every invalidation and flush: while it does not, a
    /// decision served before is still current.
    pub(crate) fn generation(&self) -> u64 {
        self.epochs.generation()
    }

    /// True when an answer about `subject` (none for an invalid token)
    /// fetched with `stamp` may be stored and served.
    pub(crate) fn admits(&self, stamp: u64, subject: Option<&SubjectId>) -> bool {
        self.epochs.admits(stamp, subject)
    }

    /// True when the token `subject` is known to be revoked or expired.
    pub(crate) fn is_dead(&self, subject: &SubjectId) -> bool {
        self.epochs.is_dead(subject)
    }

    /// Makes every decision about token `id` fetched before now not
    /// current; `dead`: revoked or expired, never usable again.
    pub(crate) fn invalidate_subject(&self, id: &str, dead: bool) {
        // Entries are not scanned: every read compares the entry's stamp
        // with the invalidations since. They age out or are replaced.
        self.epochs.invalidate(id, dead);
    }

    /// Drops every decision, including answers still in flight.
    pub(crate) fn flush(&self) {
        self.epochs.flush();
        self.table.clear();
    }

    /// Entries held (gone ones included until [`DecisionStore::run_maintenance`]).
    pub(crate) fn entry_count(&self) -> u64 {
        self.table.len() as u64
    }

    /// Removes entries gone by now.
    pub(crate) fn run_maintenance(&self) {
        self.table.sweep(self.clock.now());
    }
}
