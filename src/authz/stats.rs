//! What the decision cache counts: per-instance [`CacheStats`] (for tests
//! and diagnostics) and the Prometheus metrics, both through one [`Stats`]
//! whose metric handles are resolved once, so that a cache hit never looks
//! up a metric by name.
//!
//! Hits are counted on nearly every request, from every serving thread at
//! once: they go to [`Striped`] counters (the instance's and the process's
//! `fluxgate_cache_hits_total`), so that counting one does not move a
//! cache line between cores. The rest are counted on misses, which cost
//! an Authorize call anyway.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::telemetry::{self, Striped};

/// Counts of one cache's work (the same events as its metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Needs answered from the cache.
    pub hits: u64,
    /// Needs not in the cache (or no longer fresh).
    pub misses: u64,
    /// Missed needs that joined an Authorize call already in flight.
    pub coalesced: u64,
    /// Calls to the inner authorizer.
    pub inner_calls: u64,
    /// Needs answered with a stale allow.
    pub stale_served: u64,
}

/// The `result` label values of `fluxgate_authz_calls_total`.
const CALL_RESULTS: [&str; 5] = ["allowed", "forbidden", "invalid", "unavailable", "timeout"];

/// How an Authorize call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallResult {
    /// Every permission granted.
    Allowed = 0,
    /// Some permission not granted.
    Forbidden = 1,
    /// The token is not valid.
    Invalid = 2,
    /// The call failed.
    Unavailable = 3,
    /// The call did not answer in time.
    Timeout = 4,
}

/// The `reason` label values of `fluxgate_invalidations_total`.
const INVALIDATION_REASONS: [&str; 5] = [
    "revoked",
    "permissions_changed",
    "expired",
    "unknown",
    "flush",
];

/// Why a token's decisions (or all of them) were invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalidation {
    /// The token was revoked.
    Revoked = 0,
    /// Its permissions were replaced.
    PermissionsChanged = 1,
    /// It expired.
    Expired = 2,
    /// A change kind this build does not know (it may take rights away).
    Unknown = 3,
    /// The whole cache (changes may have been missed).
    Flush = 4,
}

impl Invalidation {
    /// The `reason` label.
    pub(crate) fn as_str(self) -> &'static str {
        INVALIDATION_REASONS[self as usize]
    }
}

/// One cache's counters and metric handles.
#[derive(Debug)]
pub(crate) struct Stats {
    hits: Striped,
    misses: AtomicU64,
    coalesced: AtomicU64,
    inner_calls: AtomicU64,
    stale_served: AtomicU64,
    metrics: Metrics,
}

/// Metric handles, resolved once.
#[derive(Debug)]
struct Metrics {
    misses: metrics::Counter,
    coalesced: metrics::Counter,
    stale_served: metrics::Counter,
    entries: metrics::Gauge,
    call_seconds: metrics::Histogram,
    /// `fluxgate_authz_calls_total` by result, in [`CallResult`] order.
    calls: [metrics::Counter; 5],
    /// `fluxgate_invalidations_total` by reason, in [`Invalidation`] order.
    invalidations: [metrics::Counter; 5],
}

impl Metrics {
    fn new() -> Self {
        Self {
            misses: metrics::counter!("fluxgate_cache_misses_total"),
            coalesced: metrics::counter!("fluxgate_cache_coalesced_total"),
            stale_served: metrics::counter!("fluxgate_stale_served_total"),
            entries: metrics::gauge!("fluxgate_cache_entries"),
            call_seconds: metrics::histogram!("fluxgate_authz_call_seconds"),
            calls: CALL_RESULTS
                .map(|r| metrics::counter!("fluxgate_authz_calls_total", "result" => r)),
            invalidations: INVALIDATION_REASONS
                .map(|r| metrics::counter!("fluxgate_invalidations_total", "reason" => r)),
        }
    }
}

impl Stats {
    pub(crate) fn new() -> Self {
        Self {
            hits: Striped::new(),
            misses: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            inner_calls: AtomicU64::new(0),
            stale_served: AtomicU64::new(0),
            metrics: Metrics::new(),
        }
    }

    /// What was counted so far.
    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.sum(),
            misses: self.misses.load(Ordering::Relaxed),
            coalesced: self.coalesced.load(Ordering::Relaxed),
            inner_calls: self.inner_calls.load(Ordering::Relaxed),
            stale_served: self.stale_served.load(Ordering::Relaxed),
        }
    }

    /// `n` needs answered from the cache.
    pub(crate) fn hits(&self, n: u64) {
        self.hits.add(n);
        telemetry::cache_hits(n);
    }

    /// `n` needs missed.
    pub(crate) fn misses(&self, n: u64) {
        self.misses.fetch_add(n, Ordering::Relaxed);
        self.metrics.misses.increment(n);
    }

    /// `n` missed needs joined a call in flight.
    pub(crate) fn coalesced(&self, n: u64) {
        self.coalesced.fetch_add(n, Ordering::Relaxed);
        self.metrics.coalesced.increment(n);
    }

    /// A stale allow served.
    pub(crate) fn stale_served(&self) {
        self.stale_served.fetch_add(1, Ordering::Relaxed);
        self.metrics.stale_served.increment(1);
    }

    /// A call to the inner authorizer starts.
    pub(crate) fn call_started(&self) {
        self.inner_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// A call to the inner authorizer ended with `result` after `took`.
    pub(crate) fn call_ended(&self, result: CallResult, took: Duration) {
        self.metrics.call_seconds.record(took.as_secs_f64());
        self.metrics.calls[result as usize].increment(1);
    }

    /// The cache holds `n` entries.
    pub(crate) fn entries(&self, n: u64) {
        self.metrics.entries.set(n as f64);
    }

    /// Decisions were invalidated.
    pub(crate) fn invalidated(&self, why: Invalidation) {
        self.metrics.invalidations[why as usize].increment(1);
    }
}

/// Describes the proxy's authorization metrics and registers them at zero,
/// so `/metrics` lists them before the first request (also in `fluxgate
/// serve`, whose in-process authorizer has no cache in front).
pub fn describe_metrics() {
    metrics::describe_counter!(
        "fluxgate_cache_misses_total",
        "Permission checks not in the decision cache"
    );
    metrics::describe_counter!(
        "fluxgate_cache_coalesced_total",
        "Cache misses that joined an Authorize call already in flight"
    );
    metrics::describe_counter!(
        "fluxgate_authz_calls_total",
        "Authorize calls to the token service, by result"
    );
    metrics::describe_histogram!(
        "fluxgate_authz_call_seconds",
        metrics::Unit::Seconds,
        "Duration of Authorize calls to the token service"
    );
    metrics::describe_gauge!(
        "fluxgate_cache_entries",
        "Decisions in the cache (approximate)"
    );
    metrics::describe_counter!(
        "fluxgate_stale_served_total",
        "Stale allows served while the token service was unavailable"
    );
    metrics::describe_counter!(
        "fluxgate_invalidations_total",
        "Token changes that invalidated cached decisions, by reason"
    );
    metrics::describe_gauge!(
        "fluxgate_watch_connected",
        "1 while the token change stream is followed"
    );
    let metrics = Metrics::new();
    for counter in &metrics.invalidations {
        counter.absolute(0);
    }
}
