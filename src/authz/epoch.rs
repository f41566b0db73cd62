//! Which cached decisions are still current: a local invalidation sequence,
//! the subjects (token ids) it applies to, and the ids known to be revoked.
//!
//! Every fetch of a decision is stamped with the sequence number current
//! when it started. Processing an invalidation of subject X takes the next
//! number `n` and records it on X; a flush records it globally. A decision
//! is current when its stamp is at least X's number and the flush number.
//! That one comparison covers both the entries already cached and the
//! Authorize calls still in flight when the invalidation arrived: their
//! answer may predate the change, and is neither cached nor served.
//!
//! The sequence is local (not the token service's revision), so it keeps
//! working when the token service restarts with a different history.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A token id as the cache knows it, shared by every entry of that token.
///
/// Entries point here instead of holding the id string, so an invalidation
/// reaches all of them with one store and a hit checks it with one load.
#[derive(Debug)]
pub(crate) struct Subject {
    id: Arc<str>,
    /// Sequence number of the last invalidation of this id (0: none).
    invalidated: AtomicU64,
    /// Revoked or expired: never usable again, not even stale.
    dead: AtomicBool,
}

impl Subject {
    /// The token id (safe to log).
    pub(crate) fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// True once the token was revoked or expired.
    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }
}

/// The last invalidation of an id.
#[derive(Debug, Clone, Copy)]
struct Record {
    seq: u64,
    dead: bool,
    at: Instant,
}

/// Live subjects, and recent invalidations (kept apart: every cached token
/// has a live subject, few have a record).
#[derive(Debug)]
struct Table {
    live: HashMap<Arc<str>, Weak<Subject>>,
    records: HashMap<Arc<str>, Record>,
    sweep_live_at: usize,
    sweep_records_at: usize,
}

/// Smallest map size at which unused entries are swept.
const MIN_SWEEP: usize = 4096;

/// The invalidation state of one cache.
#[derive(Debug)]
pub(crate) struct Epochs {
    seq: AtomicU64,
    flushed: AtomicU64,
    table: Mutex<Table>,
    /// How long an invalidation is remembered: longer than any entry
    /// fetched before it can live.
    retention: Duration,
}

impl Epochs {
    /// Remembers invalidations for `retention` (≥ the longest entry lifetime
    /// plus the longest fetch).
    pub(crate) fn new(retention: Duration) -> Self {
        Self {
            seq: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            table: Mutex::new(Table {
                live: HashMap::new(),
                records: HashMap::new(),
                sweep_live_at: MIN_SWEEP,
                sweep_records_at: MIN_SWEEP,
            }),
            retention,
        }
    }

    /// The stamp for a fetch starting now.
    pub(crate) fn stamp(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// True when a decision about `subject` (none for an invalid token)
    /// fetched with `stamp` may still be used.
    pub(crate) fn is_current(&self, stamp: u64, subject: Option<&Subject>) -> bool {
        stamp >= self.flushed.load(Ordering::SeqCst)
            && subject.is_none_or(|s| {
                stamp >= s.invalidated.load(Ordering::SeqCst) && !s.dead.load(Ordering::SeqCst)
            })
    }

    /// The shared [`Subject`] for `id`, carrying any invalidation recorded
    /// for it.
    pub(crate) fn subject(&self, id: &str) -> Arc<Subject> {
        let mut table = self.table.lock();
        if let Some(subject) = table.live.get(id).and_then(Weak::upgrade) {
            return subject;
        }
        if table.live.len() >= table.sweep_live_at {
            table.live.retain(|_, s| s.strong_count() > 0);
            table.sweep_live_at = (table.live.len() * 2).max(MIN_SWEEP);
        }
        let record = table.records.get_key_value(id);
        let (invalidated, dead) = record.map_or((0, false), |(_, r)| (r.seq, r.dead));
        // Share the record's copy of the id when there is one.
        let id: Arc<str> = record.map_or_else(|| Arc::from(id), |(k, _)| Arc::clone(k));
        let subject = Arc::new(Subject {
            id: Arc::clone(&id),
            invalidated: AtomicU64::new(invalidated),
            dead: AtomicBool::new(dead),
        });
        table.live.insert(id, Arc::downgrade(&subject));
        subject
    }

    /// Invalidates every decision about `id` fetched before now; `dead` when
    /// the token is revoked or expired. Returns the invalidation's number.
    pub(crate) fn invalidate(&self, id: &str, dead: bool) -> u64 {
        let mut table = self.table.lock();
        // Under the table lock: a concurrent `subject(id)` either sees the
        // record or is updated below, never neither.
        let n = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let now = Instant::now();
        if table.records.len() >= table.sweep_records_at {
            let retention = self.retention;
            table
                .records
                .retain(|_, r| now.duration_since(r.at) < retention);
            table.sweep_records_at = (table.records.len() * 2).max(MIN_SWEEP);
        }
        let live = table.live.get_key_value(id);
        let subject = live.and_then(|(_, s)| s.upgrade());
        let key: Arc<str> = live.map_or_else(|| Arc::from(id), |(k, _)| Arc::clone(k));
        let was_dead = table.records.get(id).is_some_and(|r| r.dead);
        table.records.insert(
            key,
            Record {
                seq: n,
                dead: dead || was_dead,
                at: now,
            },
        );
        if let Some(subject) = subject {
            subject.invalidated.store(n, Ordering::SeqCst);
            if dead {
                subject.dead.store(true, Ordering::SeqCst);
            }
        }
        n
    }

    /// Invalidates every decision fetched before now.
    pub(crate) fn flush(&self) -> u64 {
        let n = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.flushed.store(n, Ordering::SeqCst);
        n
    }

    /// True when `id` is known to be revoked or expired.
    #[cfg(test)]
    pub(crate) fn is_dead(&self, id: &str) -> bool {
        self.table.lock().records.get(id).is_some_and(|r| r.dead)
    }

    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let t = self.table.lock();
        (t.live.len(), t.records.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidation_after_fetch_start_makes_the_fetch_stale() {
        let e = Epochs::new(Duration::from_secs(60));
        let x = e.subject("x");
        let y = e.subject("y");
        let stamp = e.stamp();
        assert!(e.is_current(stamp, Some(&x)));
        e.invalidate("x", false);
        assert!(!e.is_current(stamp, Some(&x)), "fetched before the change");
        assert!(e.is_current(stamp, Some(&y)), "other subjects unaffected");
        assert!(
            e.is_current(e.stamp(), Some(&x)),
            "fetched after the change"
        );
        assert!(e.is_current(stamp, None));
    }

    #[test]
    fn invalidation_before_the_subject_exists_is_remembered() {
        let e = Epochs::new(Duration::from_secs(60));
        let stamp = e.stamp();
        e.invalidate("x", true);
        let x = e.subject("x");
        assert!(!e.is_current(stamp, Some(&x)));
        assert!(x.is_dead());
        assert!(e.is_dead("x"));
        assert!(!e.is_current(e.stamp(), Some(&x)), "dead stays dead");
    }

    #[test]
    fn a_recreated_subject_keeps_the_record() {
        let e = Epochs::new(Duration::from_secs(60));
        let stamp = e.stamp();
        drop(e.subject("x"));
        e.invalidate("x", false);
        let x = e.subject("x");
        assert!(!e.is_current(stamp, Some(&x)));
        assert!(e.is_current(e.stamp(), Some(&x)));
        assert!(Arc::ptr_eq(&x, &e.subject("x")));
    }

    #[test]
    fn flush_invalidates_everything_before_it() {
        let e = Epochs::new(Duration::from_secs(60));
        let stamp = e.stamp();
        e.flush();
        assert!(!e.is_current(stamp, None));
        assert!(e.is_current(e.stamp(), None));
    }

    #[test]
    fn unused_slots_are_swept_but_recent_invalidations_kept() {
        let e = Epochs::new(Duration::from_secs(60));
        e.invalidate("revoked", true);
        for i in 0..(MIN_SWEEP * 3) {
            drop(e.subject(&format!("s{i}")));
        }
        assert!(e.sizes().0 <= MIN_SWEEP * 2);
        assert!(e.is_dead("revoked"));
    }
}
