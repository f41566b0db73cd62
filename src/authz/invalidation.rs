//! The invalidation follower: follows the token service's
//! `WatchTokenChanges` stream and invalidates a token's cached decisions on
//! every revoke, permission change or expiry of it.
//!
//! - The stream opens with a `sync`. `resumed = false` means changes may
//!   have been missed (first connection, the token service lost or pruned
//!   its history): the whole cache is flushed. So is it when the sync names
//!   a different token store than the last one seen (`store_id`: a new data
//!   directory, a restored backup, whose revisions mean nothing here),
//!   whatever `resumed` says. An empty store id is "unknown".
//! - Each change carries the next revision. On reconnect the follower asks
//!   to resume after the last revision it applied, so an outage loses
//!   nothing; a gap in the revisions flushes too. The cache counts as
//!   connected only once the replay reached the sync's head revision.
//! - Reconnects back off from 100 ms to 5 s (with jitter), reset once a
//!   stream syncs. While disconnected the cache serves no allow older than
//!   its disconnected TTL and no stale allow past `--stale-grace` after the
//!   stream broke; `/readyz` fails unless stale grace is on.
//! - The stream needs a caller credential: the proxy token of
//!   `--authz-token-file`, or the client certificate of mutual TLS.
//! - `--authz-watch`: `auto` follows the stream, and falls back to none
//!   when the authorizer does not implement it (an IOx authorizer serving
//!   Authorize only): the proxy is then ready when Authorize answers, and
//!   every allow lives the disconnected TTL at most. `required` never falls
//!   back; `off` never follows.
//! - The stream carries token ids only; they are safe to log.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::cache::CachedAuthorizer;
use super::client::ProxyCredential;
use super::failover::{AuthzEndpoints, FailoverChannel};
use super::stats::Invalidation;
pub use super::watch::WatchStatus;
use crate::proto::tokens::token_service_client::TokenServiceClient;
use crate::proto::tokens::watch_token_changes_response::Event;
use crate::proto::tokens::{ChangeKind, TokenChange, WatchTokenChangesRequest};

/// First reconnect delay.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often expired entries are swept and the entry gauge updated.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(1);
/// How often `auto` asks again whether an authorizer without the change
/// stream has gained one (after an upgrade).
const REPROBE_EVERY: Duration = Duration::from_secs(60);

pub use crate::config::WatchMode;

/// How a cache follows the change stream.
#[derive(Debug, Clone, Default)]
pub struct FollowOptions {
    /// `--authz-watch`.
    pub mode: WatchMode,
    /// The proxy token presented on the stream (`--authz-token-file`).
    pub credential: Option<ProxyCredential>,
}

impl CachedAuthorizer {
    /// Follows the change stream of the token service at `endpoints` (one
    /// replica or several: a reconnect goes to the next when one is gone)
    /// until `shutdown` (mode `auto`, no credential), and keeps the cache's
    /// housekeeping going meanwhile.
    pub fn follow(
        &self,
        endpoints: impl Into<AuthzEndpoints>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        self.follow_with(endpoints, FollowOptions::default(), shutdown)
    }

    /// [`CachedAuthorizer::follow`] with `options`.
    pub fn follow_with(
        &self,
        endpoints: impl Into<AuthzEndpoints>,
        options: FollowOptions,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        if options.mode == WatchMode::Off {
            self.watch().set_streamless(true);
            tracing::info!(
                "not following the token change stream (--authz-watch off): allows live the disconnected TTL at most"
            );
            return tokio::spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = maintain(cache) => {}
                }
            });
        }
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
            mode: options.mode,
            credential: options.credential,
            last: None,
            store_id: None,
            catching_up_to: None,
        };
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
        self.watch().count_flush();
        self.count_invalidation(Invalidation::Flush);
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
    /// The call failed with this code before any message.
    code: Option<tonic::Code>,
}

impl Ended {
    fn before_sync(why: String) -> Self {
        Self {
            synced: false,
            why,
            code: None,
        }
    }
}

struct Follower {
    cache: CachedAuthorizer,
    client: TokenServiceClient<FailoverChannel>,
    mode: WatchMode,
    credential: Option<ProxyCredential>,
    last: Option<u64>,
    /// The last non-empty store id seen.
    store_id: Option<String>,
    /// Set between a resuming sync and the replay reaching its head: the
    /// cache is not connected until then.
    catching_up_to: Option<u64>,
}

impl Follower {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        let mut refused_logged = false;
        loop {
            let ended = tokio::select! {
                () = shutdown.cancelled() => break,
                ended = self.stream_once() => ended,
            };
            let watch = self.cache.watch();
            let was_connected = watch.is_connected();
            watch.set_connected(false);
            self.catching_up_to = None;
            if ended.synced {
                backoff = BACKOFF_MIN;
                refused_logged = false;
            }
            let mut delay = backoff.mul_f64(rand::random_range(0.5..=1.0));
            match ended.code {
                Some(tonic::Code::Unimplemented) if self.mode == WatchMode::Auto => {
                    if !watch.is_streamless() {
                        tracing::warn!(
                            "the authorizer does not implement the token change stream; going on without it: allows live --cache-disconnected-allow-ttl at most, so a revocation takes up to that long to apply (--authz-watch required refuses this)"
                        );
                    }
                    watch.set_streamless(true);
                    delay = REPROBE_EVERY;
                }
                Some(tonic::Code::Unimplemented) => {
                    // --authz-watch required: say it once, keep asking.
                    if !refused_logged {
                        tracing::error!(reason = %ended.why, "the authorizer does not implement the token change stream, which --authz-watch required needs; not ready until it does (--authz-watch auto goes on without it)");
                        refused_logged = true;
                    }
                }
                Some(code @ (tonic::Code::Unauthenticated | tonic::Code::PermissionDenied)) => {
                    // A configuration error: say it loudly once, keep trying
                    // (the token may be created or fixed meanwhile).
                    if !refused_logged {
                        tracing::error!(code = ?code, reason = %ended.why, "the token service refuses this proxy's change stream: give --authz-token-file a proxy token (`fluxgate proxy-token create`) or use mutual TLS");
                        refused_logged = true;
                    }
                }
                _ if was_connected => {
                    tracing::warn!(reason = %ended.why, "lost the token change stream; reconnecting (allows older than --cache-disconnected-allow-ttl are not served meanwhile)");
                }
                _ => {
                    tracing::debug!(reason = %ended.why, retry_in = ?backoff, "cannot follow the token change stream");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        self.cache.watch().set_connected(false);
    }

    /// Opens the stream, syncs, applies changes until it ends.
    async fn stream_once(&mut self) -> Ended {
        let mut request = tonic::Request::new(WatchTokenChangesRequest {
            after_revision: self.last,
        });
        if let Some(credential) = &self.credential {
            credential.attach(&mut request);
        }
        let mut stream = match self.client.watch_token_changes(request).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                return Ended {
                    synced: false,
                    why: format!("cannot open the stream: {status}"),
                    code: Some(status.code()),
                };
            }
        };
        let first = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ended::before_sync("the stream ended before its sync".to_owned()),
            Err(status) => {
                return Ended {
                    synced: false,
                    why: format!("the stream failed before its sync: {status}"),
                    code: Some(status.code()),
                };
            }
        };
        let Some(Event::Sync(sync)) = first.event else {
            return Ended::before_sync("the stream did not start with a sync".to_owned());
        };
        let watch = self.cache.watch();
        if watch.is_streamless() {
            tracing::info!("the authorizer now serves the token change stream; following it");
            watch.set_streamless(false);
        }
        let other_store = !sync.store_id.is_empty()
            && self
                .store_id
                .as_deref()
                .is_some_and(|seen| seen != sync.store_id);
        if other_store {
            // Its revisions say nothing about the old store's: drop all.
            tracing::warn!(
                was = self.store_id.as_deref().unwrap_or_default(),
                now = %sync.store_id,
                "the token service now serves a different token store"
            );
            self.cache
                .record_flush("the token service serves a different token store", false);
        } else if !sync.resumed {
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
        if !sync.store_id.is_empty() {
            self.store_id = Some(sync.store_id.clone());
        }
        self.last = Some(first.revision);
        watch.set_revision(first.revision);
        watch.count_sync();
        if first.revision >= sync.head_revision || other_store {
            self.set_connected();
        } else {
            // Changes missed during the outage come first: until they are
            // applied, the cache must not trust what it holds.
            self.catching_up_to = Some(sync.head_revision);
        }
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
                        code: None,
                    };
                }
                Err(status) => {
                    return Ended {
                        synced: true,
                        why: format!("the stream failed: {status}"),
                        code: None,
                    };
                }
            }
        }
    }

    fn set_connected(&mut self) {
        self.catching_up_to = None;
        self.cache.watch().set_connected(true);
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
        self.cache.watch().set_revision(revision);
        let caught_up = self.catching_up_to.is_some_and(|head| revision >= head);
        self.invalidate(revision, change);
        if caught_up {
            self.set_connected();
        }
    }

    /// Invalidates what `change` makes stale.
    fn invalidate(&self, revision: u64, change: &TokenChange) {
        let (dead, reason) = match ChangeKind::try_from(change.kind) {
            Ok(ChangeKind::Created) => return,
            Ok(ChangeKind::Revoked) => (true, Invalidation::Revoked),
            Ok(ChangeKind::PermissionsChanged) => (false, Invalidation::PermissionsChanged),
            Ok(ChangeKind::Expired) => (true, Invalidation::Expired),
            // A kind this build does not know may take rights away.
            Ok(ChangeKind::Unspecified) | Err(_) => (false, Invalidation::Unknown),
        };
        if change.token_id.is_empty() {
            return;
        }
        self.cache.invalidate_subject(&change.token_id, dead);
        self.cache.watch().count_invalidation();
        self.cache.count_invalidation(reason);
        tracing::debug!(token_id = %change.token_id, reason = reason.as_str(), revision, "invalidated cached decisions");
    }
}
