//! Where the change-stream follower is, as the decision cache sees it: the
//! one piece of state the follower ([`invalidation`](super::invalidation))
//! writes and the cache reads (is the stream up, since when is it down, is
//! none expected), plus the follower's counters for [`WatchStatus`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::entry::Clock;

/// The follower's state, shared with the cache.
#[derive(Debug)]
pub(crate) struct WatchState {
    clock: Clock,
    connected: AtomicBool,
    /// No change stream is expected (`--authz-watch off`, or `auto` found
    /// an authorizer without one): readiness needs only Authorize.
    streamless: AtomicBool,
    /// When the stream last broke (cache clock ms; 0: never connected).
    broke_at: AtomicU64,
    /// Last applied revision plus one (0: none yet).
    revision: AtomicU64,
    syncs: AtomicU64,
    flushes: AtomicU64,
    invalidations: AtomicU64,
    /// Changes of `connected` or `streamless`.
    transitions: AtomicU64,
    gauge: metrics::Gauge,
}

impl WatchState {
    /// A follower not connected yet, timing on `clock` (the cache's).
    pub(crate) fn new(clock: Clock) -> Self {
        Self {
            clock,
            connected: AtomicBool::new(false),
            streamless: AtomicBool::new(false),
            broke_at: AtomicU64::new(0),
            revision: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
            gauge: metrics::gauge!("fluxgate_watch_connected"),
        }
    }

    /// True while a synced change stream is open.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// True when no change stream is expected.
    pub(crate) fn is_streamless(&self) -> bool {
        self.streamless.load(Ordering::SeqCst)
    }

    /// When the stream broke (cache clock ms), while it is expected and
    /// down.
    pub(crate) fn broke_at(&self) -> Option<u64> {
        (!self.is_connected() && !self.is_streamless())
            .then(|| self.broke_at.load(Ordering::SeqCst))
    }

    /// Records the stream up or down now.
    pub(crate) fn set_connected(&self, connected: bool) {
        let was = self.connected.swap(connected, Ordering::SeqCst);
        if was && !connected {
            self.broke_at.store(self.clock.now(), Ordering::SeqCst);
        }
        if was != connected {
            self.transitions.fetch_add(1, Ordering::SeqCst);
        }
        self.gauge.set(if connected { 1.0 } else { 0.0 });
    }

    /// Records whether a change stream is expected at all.
    pub(crate) fn set_streamless(&self, streamless: bool) {
        if self.streamless.swap(streamless, Ordering::SeqCst) != streamless {
            self.transitions.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Changes with every change of the stream's state: what decisions
    /// may be served and for how long depends on it.
    pub(crate) fn transitions(&self) -> u64 {
        self.transitions.load(Ordering::SeqCst)
    }

    /// Records the last revision applied.
    pub(crate) fn set_revision(&self, revision: u64) {
        self.revision
            .store(revision.saturating_add(1), Ordering::SeqCst);
    }

    /// Counts a stream that synced.
    pub(crate) fn count_sync(&self) {
        self.syncs.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a whole-cache flush.
    pub(crate) fn count_flush(&self) {
        self.flushes.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a change that invalidated a token's decisions.
    pub(crate) fn count_invalidation(&self) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
    }

    /// A snapshot.
    pub(crate) fn status(&self) -> WatchStatus {
        WatchStatus {
            connected: self.is_connected(),
            revision: self.revision.load(Ordering::SeqCst).checked_sub(1),
            syncs: self.syncs.load(Ordering::SeqCst),
            flushes: self.flushes.load(Ordering::SeqCst),
            invalidations: self.invalidations.load(Ordering::SeqCst),
            streamless: self.is_streamless(),
        }
    }
}

/// A snapshot of the follower's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchStatus {
    /// A synced change stream is open.
    pub connected: bool,
    /// The last revision applied.
    pub revision: Option<u64>,
    /// Streams that synced so far (1 + reconnects).
    pub syncs: u64,
    /// Whole-cache flushes: the first sync, then each time the stream
    /// could not resume or skipped a revision.
    pub flushes: u64,
    /// Changes that invalidated a token's decisions.
    pub invalidations: u64,
    /// No change stream is followed on purpose (`--authz-watch off`, or
    /// `auto` against an authorizer without one).
    pub streamless: bool,
}
