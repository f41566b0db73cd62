//! Which cached decisions are still current: a local invalidation sequence
//! and the recent invalidations of token ids (subjects).
//!
//! Every fetch of a decision is stamped with the sequence number current
//! when it started. Processing an invalidation of subject X takes the next
//! number `n` and records it for X; a flush records it globally. A decision
//! is current when its stamp is at least the flush number and X's number,
//! and X is not dead (revoked or expired). That one comparison covers both
//! the entries already cached and the Authorize calls still in flight when
//! the invalidation arrived: their answer may predate the change, and is
//! neither cached nor served.
//!
//! Only invalidated ids have a record (kept as long as an entry fetched
//! before the invalidation can live), so a cached token costs nothing here.
//! A decision stamped at or after the latest invalidation of any id is
//! current without looking a record up: the usual case.
//!
//! The sequence is local (not the token service's revision), so it keeps
//! working when the token service restarts with a different history. It
//! only grows: [`Epochs::generation`] changes with every invalidation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use super::subject::SubjectId;

/// The last invalidation of an id.
#[derive(Debug, Clone, Copy)]
struct Record {
    seq: u64,
    /// Revoked or expired: never usable again, not even stale.
    dead: bool,
    at: Instant,
}

#[derive(Debug)]
struct Records {
    by_id: HashMap<SubjectId, Record>,
    sweep_at: usize,
}

/// Smallest record count at which old records are swept.
const MIN_SWEEP: usize = 4096;

/// The invalidation state of one cache.
#[derive(Debug)]
pub(crate) struct Epochs {
    seq: AtomicU64,
    flushed: AtomicU64,
    /// Number of the latest invalidation of any id.
    latest: AtomicU64,
    /// The latest invalidation or flush whose effect readers can see: what
    /// [`Epochs::generation`] answers. Raised only after the record (or the
    /// flush mark) is in place, so a reader that sees a new generation and
    /// looks a decision up finds the invalidation — never an allow from
    /// before it that it would then remember under the new generation.
    published: AtomicU64,
    records: RwLock<Records>,
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
            latest: AtomicU64::new(0),
            published: AtomicU64::new(0),
            records: RwLock::new(Records {
                by_id: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
            retention,
        }
    }

    /// The stamp for a fetch starting now.
    pub(crate) fn stamp(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Changes with every invalidation and flush, once its effect is
    /// visible to [`Epochs::is_current`].
    pub(crate) fn generation(&self) -> u64 {
        self.published.load(Ordering::SeqCst)
    }

    /// True when a decision about `subject` (none for an invalid token)
    /// fetched with `stamp` may still be used. For decisions that were
    /// stored through [`Epochs::admits`].
    pub(crate) fn is_current(&self, stamp: u64, subject: Option<&SubjectId>) -> bool {
        if stamp < self.flushed.load(Ordering::SeqCst) {
            return false;
        }
        let Some(subject) = subject else {
            return true;
        };
        // Stored decisions passed `admits`, so a dead id's were never
        // stored: past the latest invalidation nothing can have changed.
        if stamp >= self.latest.load(Ordering::SeqCst) {
            return true;
        }
        self.records
            .read()
            .by_id
            .get(subject)
            .is_none_or(|r| !r.dead && stamp >= r.seq)
    }

    /// True when a fresh answer about `subject` fetched with `stamp` may be
    /// stored and served: [`Epochs::is_current`], and never for a dead id.
    pub(crate) fn admits(&self, stamp: u64, subject: Option<&SubjectId>) -> bool {
        self.is_current(stamp, subject) && subject.is_none_or(|s| !self.is_dead(s))
    }

    /// True when `subject` is known to be revoked or expired.
    pub(crate) fn is_dead(&self, subject: &SubjectId) -> bool {
        self.records
            .read()
            .by_id
            .get(subject)
            .is_some_and(|r| r.dead)
    }

    /// Invalidates every decision about `id` fetched before now; `dead` when
    /// the token is revoked or expired. Returns the invalidation's number.
    pub(crate) fn invalidate(&self, id: &str, dead: bool) -> u64 {
        let id = SubjectId::of(id);
        let now = Instant::now();
        let mut records = self.records.write();
        if records.by_id.len() >= records.sweep_at {
            let retention = self.retention;
            records
                .by_id
                .retain(|_, r| now.duration_since(r.at) < retention);
            records.sweep_at = (records.by_id.len() * 2).max(MIN_SWEEP);
        }
        let n = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let was_dead = records.by_id.get(&id).is_some_and(|r| r.dead);
        records.by_id.insert(
            id,
            Record {
                seq: n,
                dead: dead || was_dead,
                at: now,
            },
        );
        // After the record: whoever sees `latest` finds it.
        self.latest.store(n, Ordering::SeqCst);
        self.published.fetch_max(n, Ordering::SeqCst);
        n
    }

    /// Invalidates every decision fetched before now.
    pub(crate) fn flush(&self) -> u64 {
        let n = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        // Two flushes may finish out of order: the mark never goes back.
        self.flushed.fetch_max(n, Ordering::SeqCst);
        self.published.fetch_max(n, Ordering::SeqCst);
        n
    }

    #[cfg(test)]
    fn records(&self) -> usize {
        self.records.read().by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SubjectId {
        SubjectId::of(s)
    }

    #[test]
    fn invalidation_after_fetch_start_makes_the_fetch_stale() {
        let e = Epochs::new(Duration::from_secs(60));
        let (x, y) = (id("x"), id("y"));
        let stamp = e.stamp();
        assert!(e.is_current(stamp, Some(&x)));
        e.invalidate("x", false);
        assert!(!e.is_current(stamp, Some(&x)), "fetched before the change");
        assert!(!e.admits(stamp, Some(&x)));
        assert!(e.is_current(stamp, Some(&y)), "other subjects unaffected");
        assert!(
            e.is_current(e.stamp(), Some(&x)),
            "fetched after the change"
        );
        assert!(e.is_current(stamp, None));
    }

    #[test]
    fn dead_ids_are_never_admitted_again() {
        let e = Epochs::new(Duration::from_secs(60));
        e.invalidate("x", true);
        assert!(e.is_dead(&id("x")));
        assert!(!e.admits(e.stamp(), Some(&id("x"))), "dead stays dead");
        e.invalidate("x", false);
        assert!(e.is_dead(&id("x")), "a later change does not revive it");
        assert!(e.admits(e.stamp(), Some(&id("y"))));
    }

    #[test]
    fn uuids_match_whatever_form_they_are_kept_in() {
        let e = Epochs::new(Duration::from_secs(60));
        let uuid = "0b7c3f9e-2d4a-4c1b-9f8e-7a6b5c4d3e2f";
        let stamp = e.stamp();
        e.invalidate(uuid, false);
        let arc: std::sync::Arc<str> = std::sync::Arc::from(uuid);
        assert!(!e.is_current(stamp, Some(&SubjectId::from_shared(&arc))));
    }

    #[test]
    fn flush_invalidates_everything_before_it() {
        let e = Epochs::new(Duration::from_secs(60));
        let stamp = e.stamp();
        let generation = e.generation();
        e.flush();
        assert!(!e.is_current(stamp, None));
        assert!(e.is_current(e.stamp(), None));
        assert_ne!(e.generation(), generation);
    }

    /// Races `change` (in a loop on another thread) against a reader that
    /// waits for the generation to pass a fetch's stamp and then asks
    /// whether that fetch is still current: it never may be.
    fn race(change: fn(&Epochs), subject: Option<&str>) {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let e = Arc::new(Epochs::new(Duration::from_secs(60)));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (e, stop) = (Arc::clone(&e), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    change(&e);
                }
            })
        };
        let subject = subject.map(id);
        for round in 0..100_000 {
            let stamp = e.stamp();
            let deadline = Instant::now() + Duration::from_secs(10);
            while e.generation() <= stamp && Instant::now() < deadline {
                std::hint::spin_loop();
            }
            assert!(
                !e.is_current(stamp, subject.as_ref()),
                "round {round}: a generation past the stamp was visible before its invalidation"
            );
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    }

    /// A connection that sees a new generation looks its decision up again;
    /// if the invalidation behind that generation were not visible yet, it
    /// would remember the old allow under the new generation and serve a
    /// revoked token until the next unrelated change.
    #[test]
    fn a_new_generation_is_seen_only_with_its_invalidation() {
        race(
            |e| {
                e.invalidate("x", true);
            },
            Some("x"),
        );
    }

    #[test]
    fn a_new_generation_is_seen_only_with_its_flush() {
        race(
            |e| {
                e.flush();
            },
            None,
        );
    }

    #[test]
    fn old_records_are_swept_but_recent_ones_kept() {
        let e = Epochs::new(Duration::ZERO);
        for i in 0..(MIN_SWEEP * 3) {
            e.invalidate(&format!("s{i}"), false);
        }
        assert!(e.records() <= MIN_SWEEP * 2, "{}", e.records());
        let kept = Epochs::new(Duration::from_secs(60));
        kept.invalidate("revoked", true);
        for i in 0..(MIN_SWEEP * 3) {
            kept.invalidate(&format!("s{i}"), false);
        }
        assert!(kept.is_dead(&id("revoked")));
    }
}
