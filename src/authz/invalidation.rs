//! The invalidation follower: follows the token service's
//! `WatchTokenChanges` stream and invalidates a token's cached decisions on
//! every revoke, permission change or expiry of it.
//!
//! - The stream opens with a `sync`. `resumed = false` means changes may
//!   have been missed (first connection, the token service lost or pruned
//!   its history): the whole cache is flushed.
//! - Each change carries the next revision. On reconnect the follower asks
//!   to resume after the last revision it applied, so an outage loses
//!   nothing; a gap in the revisions flushes too.
//! - Reconnects back off from 100 ms to 5 s (with jitter), reset once a
//!   stream syncs. While disconnected the cache keeps nothing longer than
//!   its disconnected TTL, and `/readyz` fails unless stale grace is on.
//! - The stream carries token ids only; they are safe to log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::cache::CachedAuthorizer;
use super::failover::{AuthzEndpoints, FailoverChannel};
use crate::proto::tokens::token_service_client::TokenServiceClient;
use crate::proto::tokens::watch_token_changes_response::Event;
use crate::proto::tokens::{ChangeKind, TokenChange, WatchTokenChangesRequest};

/// The `reason` label values of `fluxgate_invalidations_total`.
pub(crate) const REASONS: [&str; 5] = [
    "revoked",
    "permissions_changed",
    "expired",
    "unknown",
    "flush",
];

/// First reconnect delay.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often expired entries are swept and the entry gauge updated.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(1);

/// Where the follower is, shared with the cache.
#[derive(Debug)]
pub(crate) struct WatchState {
    connected: AtomicBool,
    /// Last applied revision plus one (0: none yet).
    revision: AtomicU64,
    syncs: AtomicU64,
    flushes: AtomicU64,
    invalidations: AtomicU64,
    gauge: metrics::Gauge,
}

impl WatchState {
    pub(crate) fn new() -> Self {
        Self {
            connected: AtomicBool::new(false),
            revision: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            gauge: metrics::gauge!("fluxgate_watch_connected"),
        }
    }

    /// True while a synced change stream is open.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::SeqCst);
        self.gauge.set(if connected { 1.0 } else { 0.0 });
    }

    fn set_revision(&self, revision: u64) {
        self.revision
            .store(revision.saturating_add(1), Ordering::SeqCst);
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
}

impl CachedAuthorizer {
    /// Where the change-stream follower is.
    pub fn watch_status(&self) -> WatchStatus {
        let w = &self.shared.watch;
        WatchStatus {
            connected: w.is_connected(),
            revision: w.revision.load(Ordering::SeqCst).checked_sub(1),
            syncs: w.syncs.load(Ordering::SeqCst),
            flushes: w.flushes.load(Ordering::SeqCst),
            invalidations: w.invalidations.load(Ordering::SeqCst),
        }
    }

    /// Follows the change stream of the token service at `endpoints` (one
    /// replica or several: a reconnect goes to the next when one is gone)
    /// until `shutdown`, and keeps the cache's housekeeping going meanwhile.
    pub fn follow(
        &self,
        endpoints: impl Into<AuthzEndpoints>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let channel = endpoints.into().channel(|endpoint| {
            endpoint
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                // A token service that vanishes without closing the connection
                // (partition, power loss) is noticed within ~15 s.
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true)
        });
        let follower = Follower {
            cache: self.clone(),
            client: TokenServiceClient::new(channel),
            last: None,
        };
        let cache = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = follower.run(shutdown) => {}
                () = maintain(cache) => {}
            }
        })
    }

    /// Flushes the cache because changes may have been missed; `first`
    /// for the first sync, where that is routine.
    fn record_flush(&self, why: &str, first: bool) {
        self.flush();
        self.shared.watch.flushes.fetch_add(1, Ordering::SeqCst);
        metrics::counter!("fluxgate_invalidations_total", "reason" => "flush").increment(1);
        if first {
            tracing::debug!(reason = why, "flushed the decision cache");
        } else {
            tracing::warn!(reason = why, "flushed the decision cache");
        }
    }
}

async fn maintain(cache: CachedAuthorizer) {
    let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        cache.run_maintenance().await;
    }
}

/// How a stream ended.
struct Ended {
    /// It synced before ending (the connection worked: reset the backoff).
    synced: bool,
    why: String,
}

struct Follower {
    cache: CachedAuthorizer,
    client: TokenServiceClient<FailoverChannel>,
    last: Option<u64>,
}

impl Follower {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let ended = tokio::select! {
                () = shutdown.cancelled() => break,
                ended = self.stream_once() => ended,
            };
            let watch = &self.cache.shared.watch;
            let was_connected = watch.is_connected();
            watch.set_connected(false);
            if ended.synced {
                backoff = BACKOFF_MIN;
            }
            if was_connected {
                tracing::warn!(reason = %ended.why, "lost the token change stream; reconnecting (cached allows now expire early)");
            } else {
                tracing::debug!(reason = %ended.why, retry_in = ?backoff, "cannot follow the token change stream");
            }
            let delay = backoff.mul_f64(rand::random_range(0.5..=1.0));
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        self.cache.shared.watch.set_connected(false);
    }

    /// Opens the stream, syncs, applies changes until it ends.
    async fn stream_once(&mut self) -> Ended {
        let request = WatchTokenChangesRequest {
            after_revision: self.last,
        };
        let mut stream = match self.client.watch_token_changes(request).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                return Ended {
                    synced: false,
                    why: format!("cannot open the stream: {status}"),
                };
            }
        };
        let first = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Ended {
                    synced: false,
                    why: "the stream ended before its sync".to_owned(),
                };
            }
            Err(status) => {
                return Ended {
                    synced: false,
                    why: format!("the stream failed before its sync: {status}"),
                };
            }
        };
        let Some(Event::Sync(sync)) = first.event else {
            return Ended {
                synced: false,
                why: "the stream did not start with a sync".to_owned(),
            };
        };
        if !sync.resumed {
            // Whatever happened before this point is unknown.
            match self.last {
                Some(_) => self
                    .cache
                    .record_flush("the token change stream cannot resume", false),
                None => self
                    .cache
                    .record_flush("first sync with the token change stream", true),
            }
        }
        self.last = Some(first.revision);
        let watch = &self.cache.shared.watch;
        watch.set_revision(first.revision);
        watch.syncs.fetch_add(1, Ordering::SeqCst);
        watch.set_connected(true);
        tracing::info!(
            revision = first.revision,
            head = sync.head_revision,
            resumed = sync.resumed,
            "following token changes"
        );
        loop {
            match stream.message().await {
                Ok(Some(m)) => match m.event {
                    Some(Event::Change(change)) => self.apply(m.revision, &change),
                    // Not sent mid-stream today; nothing to do if it were.
                    Some(Event::Sync(_)) | None => {}
                },
                Ok(None) => {
                    return Ended {
                        synced: true,
                        why: "the token service ended the stream".to_owned(),
                    };
                }
                Err(status) => {
                    return Ended {
                        synced: true,
                        why: format!("the stream failed: {status}"),
                    };
                }
            }
        }
    }

    /// Applies the change at `revision`.
    fn apply(&mut self, revision: u64, change: &TokenChange) {
        if let Some(last) = self.last {
            if revision <= last {
                return;
            }
            if revision != last + 1 {
                tracing::warn!(
                    expected = last + 1,
                    got = revision,
                    "gap in the token change stream"
                );
                self.cache
                    .record_flush("gap in the token change stream", false);
            }
        }
        self.last = Some(revision);
        self.cache.shared.watch.set_revision(revision);
        let (dead, reason) = match ChangeKind::try_from(change.kind) {
            Ok(ChangeKind::Created) => return,
            Ok(ChangeKind::Revoked) => (true, REASONS[0]),
            Ok(ChangeKind::PermissionsChanged) => (false, REASONS[1]),
            Ok(ChangeKind::Expired) => (true, REASONS[2]),
            // A kind this build does not know may take rights away.
            Ok(ChangeKind::Unspecified) | Err(_) => (false, REASONS[3]),
        };
        if change.token_id.is_empty() {
            return;
        }
        self.cache.invalidate_subject(&change.token_id, dead);
        self.cache
            .shared
            .watch
            .invalidations
            .fetch_add(1, Ordering::SeqCst);
        metrics::counter!("fluxgate_invalidations_total", "reason" => reason).increment(1);
        tracing::debug!(token_id = %change.token_id, reason, revision, "invalidated cached decisions");
    }
}
