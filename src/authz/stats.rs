//! What the decision cache counts: per-instance [`CacheStats`] (for tests
//! and diagnostics) and the Prometheus metrics, whose handles are resolved
//! once so that a cache hit never looks up a metric by name.

use std::sync::atomic::{AtomicU64, Ordering};

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

#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) inner_calls: AtomicU64,
    pub(crate) stale_served: AtomicU64,
}

impl Counts {
    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            coalesced: self.coalesced.load(Ordering::Relaxed),
            inner_calls: self.inner_calls.load(Ordering::Relaxed),
            stale_served: self.stale_served.load(Ordering::Relaxed),
        }
    }
}

/// Metric handles, resolved once: a hit must not look up metric names.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) hits: metrics::Counter,
    pub(crate) misses: metrics::Counter,
    pub(crate) coalesced: metrics::Counter,
    pub(crate) stale_served: metrics::Counter,
    pub(crate) entries: metrics::Gauge,
    pub(crate) call_seconds: metrics::Histogram,
    /// `fluxgate_authz_calls_total` by result, in [`CALL_RESULTS`] order.
    pub(crate) calls: [metrics::Counter; 5],
}

/// The `result` label values of `fluxgate_authz_calls_total`.
pub(crate) const CALL_RESULTS: [&str; 5] =
    ["allowed", "forbidden", "invalid", "unavailable", "timeout"];

impl Metrics {
    pub(crate) fn new() -> Self {
        Self {
            hits: metrics::counter!("fluxgate_cache_hits_total"),
            misses: metrics::counter!("fluxgate_cache_misses_total"),
            coalesced: metrics::counter!("fluxgate_cache_coalesced_total"),
            stale_served: metrics::counter!("fluxgate_stale_served_total"),
            entries: metrics::gauge!("fluxgate_cache_entries"),
            call_seconds: metrics::histogram!("fluxgate_authz_call_seconds"),
            calls: CALL_RESULTS
                .map(|r| metrics::counter!("fluxgate_authz_calls_total", "result" => r)),
        }
    }
}

/// Describes the proxy's authorization metrics and registers them at zero,
/// so `/metrics` lists them before the first request (also in `fluxgate
/// serve`, whose in-process authorizer has no cache in front).
pub fn describe_metrics() {
    metrics::describe_counter!(
        "fluxgate_cache_hits_total",
        "Permission checks answered from the decision cache"
    );
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
    let _ = Metrics::new();
    for reason in super::invalidation::REASONS {
        metrics::counter!("fluxgate_invalidations_total", "reason" => reason).absolute(0);
    }
}
