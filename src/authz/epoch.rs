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
pub struct Subject {
    id: Arc<str>,
    /// Sequence number of the last invalidation of this id (0: none).
    invalidated: AtomicU64,
    /// Revoked or expired: never usable again, not even stale.
    dead: AtomicBool,
}

impl Subject {
    /// The token id (safe to log).
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// True once the token was revoked or expired.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }
}

/// What the table remembers about an id.
#[derive(Debug)]
struct Slot {
    subject: Weak<Subject>,
    /// Last invalidation: its number, whether the token is dead, and when.
    invalidated: Option<(u64, bool, Instant)>,
}

#[derive(Debug)]
struct Table {
    slots: HashMap<Arc<str>, Slot>,
    sweep_at: usize,
}

/// Smallest table size at which unused slots are swept.
const MIN_SWEEP: usize = 4096;

/// The invalidation state of one cache.
#[derive(Debug)]
pub struct Epochs {
    seq: AtomicU64,
    flushed: AtomicU64,
    table: Mutex<Table>,
    /// How long an invalidation is remembered for ids no entry references:
    /// longer than any entry fetched before it can live.
    retention: Duration,
}

impl Epochs {
    /// Remembers invalidations for `retention` (≥ the longest entry lifetime
    /// plus the longest fetch).
    pub fn new(retention: Duration) -> Self {
        Self {
            seq: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            table: Mutex::new(Table {
                slots: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
            retention,
        }
    }

    /// The stamp for a fetch starting now.
    pub fn stamp(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// True when a decision about `subject` (none for an invalid token)
    /// fetched with `stamp` may still be used.
    pub fn is_current(&self, stamp: u64, subject: Option<&Subject>) -> bool {
        stamp >= self.flushed.load(Ordering::SeqCst)
            && subject.is_none_or(|s| {
                stamp >= s.invalidated.load(Ordering::SeqCst) && !s.dead.load(Ordering::SeqCst)
            })
    }

    /// The shared [`Subject`] for `id`, carrying any invalidation already
    /// recorded for it.
    pub fn subject(&self, id: &str) -> Arc<Subject> {
        let mut table = self.table.lock();
        if let Some((key, slot)) = table.slots.get_key_value(id) {
            if let Some(subject) = slot.subject.upgrade() {
                return subject;
            }
            let (invalidated, dead) = slot.invalidated.map_or((0, false), |(n, d, _)| (n, d));
            let subject = Arc::new(Subject {
                // The map's copy: the subject shares its allocation.
                id: Arc::clone(key),
                invalidated: AtomicU64::new(invalidated),
                dead: AtomicBool::new(dead),
            });
            if let Some(slot) = table.slots.get_mut(id) {
                slot.subject = Arc::downgrade(&subject);
            }
            return subject;
        }
        self.sweep(&mut table);
        let id: Arc<str> = Arc::from(id);
        let subject = Arc::new(Subject {
            id: Arc::clone(&id),
            invalidated: AtomicU64::new(0),
            dead: AtomicBool::new(false),
        });
        table.slots.insert(
            id,
            Slot {
                subject: Arc::downgrade(&subject),
                invalidated: None,
            },
        );
        subject
    }

    /// Invalidates every decision about `id` fetched before now; `dead` when
    /// the token is revoked or expired. Returns the invalidation's number.
    pub fn invalidate(&self, id: &str, dead: bool) -> u64 {
        let mut table = self.table.lock();
        // Under the table lock: a concurrent `subject(id)` either sees this
        // record or is updated below, never neither.
        let n = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let now = Instant::now();
        match table.slots.get_mut(id) {
            Some(slot) => {
                let was_dead = slot.invalidated.is_some_and(|(_, d, _)| d);
                slot.invalidated = Some((n, dead || was_dead, now));
                if let Some(subject) = slot.subject.upgrade() {
                    subject.invalidated.store(n, Ordering::SeqCst);
                    if dead {
                        subject.dead.store(true, Ordering::SeqCst);
                    }
                }
            }
            None => {
                self.sweep(&mut table);
                table.slots.insert(
                    Arc::from(id),
                    Slot {
                        subject: Weak::new(),
                        invalidated: Some((n, dead, now)),
                    },
                );
            }
        }
        n
    }

    /// Invalidates every decision fetched before now.
    pub fn flush(&self) -> u64 {
        let n = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.flushed.store(n, Ordering::SeqCst);
        n
    }

    /// True when `id` is known to be revoked or expired.
    pub fn is_dead(&self, id: &str) -> bool {
        self.table
            .lock()
            .slots
            .get(id)
            .is_some_and(|s| s.invalidated.is_some_and(|(_, d, _)| d))
    }

    /// Drops slots that no entry references and whose invalidation (if any)
    /// is older than the retention, once the table doubled since last time.
    fn sweep(&self, table: &mut Table) {
        if table.slots.len() < table.sweep_at {
            return;
        }
        let retention = self.retention;
        table.slots.retain(|_, slot| {
            slot.subject.strong_count() > 0
                || slot
                    .invalidated
                    .is_some_and(|(_, _, at)| at.elapsed() < retention)
        });
        table.sweep_at = (table.slots.len() * 2).max(MIN_SWEEP);
    }

    #[cfg(test)]
    fn slots(&self) -> usize {
        self.table.lock().slots.len()
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
        assert!(e.slots() <= MIN_SWEEP * 2);
        assert!(e.is_dead("revoked"));
    }
}
