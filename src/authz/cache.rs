//! The proxy's decision cache: a [`CachedAuthorizer`] in front of any
//! [`Authorizer`] (normally the gRPC [`AuthzClient`](super::client::AuthzClient)).
//!
//! - Decisions are cached per (token fingerprint, database, action) — see
//!   [`key`](super::key) — as allow or forbidden (with the token id) or
//!   invalid token. The token itself is never stored.
//! - Allows live `--cache-allow-ttl`, denies `--cache-deny-ttl`, both with
//!   jitter so entries warmed together do not expire together. An allow
//!   never outlives the token's expiry. While the change stream is down
//!   (or not followed at all), no decision older than
//!   `--cache-disconnected-allow-ttl` is served: checked at lookup against
//!   when it was fetched, so allows cached before the stream broke are
//!   bound too. They are served again once the stream is back and caught
//!   up (or asked again).
//! - The needs a check misses are asked in one Authorize call; concurrent
//!   misses of the same key share it (see the `flight` module).
//!   Errors and timeouts are never cached.
//! - Fail closed: without `--stale-grace`, an error is an error. With it,
//!   an allow that went stale less than the grace ago is served while the
//!   token service cannot answer — never for a token known to be revoked or
//!   expired, never past the token's expiry, and, while the change stream
//!   is down, never later than the grace after it broke. What that trades:
//!   a token revoked during the outage (the proxy cannot know) may be
//!   served for up to the grace.
//! - The invalidation follower ([`invalidation`](super::invalidation))
//!   invalidates a token's entries on every change of it; the `epoch`
//!   module makes that O(1) and also covers answers still in flight.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use moka::future::Cache;

use super::entry::{Cached, Clock, EntryExpiry, jittered, millis};
use super::epoch::{Epochs, Subject};
use super::flight::{Flights, Join};
use super::invalidation::WatchState;
use super::key::{ANY_ACTION, DecisionKey, Fingerprint, Interner, KeyRef, action_byte};
pub use super::stats::{CacheStats, describe_metrics};
use super::stats::{Counts, Metrics};
use super::{Authorizer, AuthzError, CacheUse, Need, NeedDecision, Verdict};
use crate::config::CacheOptions;
use crate::credentials::Token;

/// Settings of a [`CachedAuthorizer`].
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// How long an allow is reused.
    pub allow_ttl: Duration,
    /// How long a forbidden or invalid-token answer is reused.
    pub deny_ttl: Duration,
    /// Relative TTL jitter: each TTL is scaled by a random factor in
    /// `1 ± jitter` (0.1 = ±10 %).
    pub jitter: f64,
    /// Most entries kept.
    pub max_entries: u64,
    /// How long past its TTL an allow may be served while the token
    /// service is unavailable; `None` (the default) fails closed.
    pub stale_grace: Option<Duration>,
    /// Longest TTL of anything cached while the change stream is down.
    pub disconnected_ttl: Duration,
    /// Deadline of one call to the inner authorizer.
    pub fetch_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            allow_ttl: Duration::from_secs(60),
            deny_ttl: Duration::from_secs(5),
            jitter: 0.1,
            max_entries: 100_000,
            stale_grace: None,
            disconnected_ttl: Duration::from_secs(5),
            fetch_timeout: Duration::from_secs(2),
        }
    }
}

impl CacheConfig {
    /// The settings of `options`, with calls bounded by `fetch_timeout`.
    pub fn from_options(options: &CacheOptions, fetch_timeout: Duration) -> Self {
        Self {
            allow_ttl: options.cache_allow_ttl.0,
            deny_ttl: options.cache_deny_ttl.0,
            jitter: f64::from(options.cache_ttl_jitter) / 100.0,
            max_entries: options.cache_max_entries,
            stale_grace: options.stale_grace.map(|g| g.0).filter(|g| !g.is_zero()),
            disconnected_ttl: options.cache_disconnected_allow_ttl.0,
            fetch_timeout,
        }
    }

    /// The longest any entry can live, plus the longest fetch: how long an
    /// invalidation must be remembered.
    fn longest_lifetime(&self) -> Duration {
        let ttl = self.allow_ttl.max(self.deny_ttl).mul_f64(1.0 + self.jitter);
        ttl + self.stale_grace.unwrap_or_default()
            + self.fetch_timeout * super::flight::FETCH_ATTEMPTS
            + Duration::from_secs(1)
    }
}

/// A caching [`Authorizer`]. Cheap to clone; clones share one cache.
#[derive(Clone)]
pub struct CachedAuthorizer {
    pub(crate) shared: Arc<Shared>,
}

/// The state every clone, fetch task and the follower share.
pub(crate) struct Shared {
    pub(crate) inner: Arc<dyn Authorizer>,
    pub(crate) config: CacheConfig,
    pub(crate) clock: Clock,
    cache: Cache<DecisionKey, Cached>,
    pub(crate) epochs: Epochs,
    databases: Interner,
    pub(crate) flights: Flights,
    pub(crate) watch: WatchState,
    pub(crate) counts: Counts,
    pub(crate) metrics: Metrics,
}

impl std::fmt::Debug for CachedAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedAuthorizer")
            .field("inner", &self.shared.inner)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl CachedAuthorizer {
    /// A cache in front of `inner`. It counts as disconnected from the
    /// change stream until [`CachedAuthorizer::follow`] connects.
    pub fn new(inner: Arc<dyn Authorizer>, config: CacheConfig) -> Self {
        let clock = Clock::new();
        let cache = Cache::builder()
            .name("fluxgate-decisions")
            .max_capacity(config.max_entries)
            .expire_after(EntryExpiry { clock })
            .build();
        let epochs = Epochs::new(config.longest_lifetime());
        Self {
            shared: Arc::new(Shared {
                inner,
                config,
                clock,
                cache,
                epochs,
                databases: Interner::new(),
                flights: Flights::new(),
                watch: WatchState::new(),
                counts: Counts::default(),
                metrics: Metrics::new(),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &CacheConfig {
        &self.shared.config
    }

    /// What the cache did so far.
    pub fn stats(&self) -> CacheStats {
        self.shared.counts.snapshot()
    }

    /// Entries held (approximate until [`Self::run_maintenance`]).
    pub fn entry_count(&self) -> u64 {
        self.shared.cache.entry_count()
    }

    /// Applies pending evictions and updates the entry gauge.
    pub async fn run_maintenance(&self) {
        self.shared.cache.run_pending_tasks().await;
        self.shared.publish_entries();
    }

    /// Invalidates every decision about token `id` (`dead`: revoked or
    /// expired, never to be served again, not even stale).
    pub fn invalidate_subject(&self, id: &str, dead: bool) {
        // Entries are not scanned: each carries its subject, whose
        // invalidation number every hit compares. They age out or are
        // dropped when next read.
        self.shared.epochs.invalidate(id, dead);
    }

    /// Drops every decision, including answers still in flight.
    pub fn flush(&self) {
        self.shared.epochs.flush();
        self.shared.cache.invalidate_all();
        self.shared.publish_entries();
    }
}

impl Shared {
    fn publish_entries(&self) {
        self.metrics.entries.set(self.cache.entry_count() as f64);
    }

    fn hit(&self, n: u64) {
        self.counts.hits.fetch_add(n, Ordering::Relaxed);
        self.metrics.hits.increment(n);
    }

    /// True when `cached` may be served as a hit at `now`: within its TTL
    /// and, unless the change stream is followed and caught up, no older
    /// than the disconnected TTL (nothing would have told the cache of a
    /// revocation since).
    fn is_fresh(&self, cached: &Cached, now: u64) -> bool {
        if now >= cached.fresh_until() {
            return false;
        }
        self.watch.is_connected()
            || now
                < cached
                    .fetched_at
                    .saturating_add(millis(self.config.disconnected_ttl))
    }

    /// The cached decision for `key`, if fresh and current. Drops it when
    /// it is no longer current.
    async fn fresh(&self, key: &KeyRef<'_>, now: u64) -> Option<NeedDecision> {
        let cached = self.cache.get(key).await?;
        if !self
            .epochs
            .is_current(cached.stamp, cached.subject.as_deref())
        {
            self.cache.invalidate(key).await;
            return None;
        }
        self.is_fresh(&cached, now).then(|| cached.decision())
    }

    /// Fills `decisions[i]` from the cache for each `i` of `candidates`;
    /// returns the indices still missing.
    async fn lookup(
        &self,
        fingerprint: Fingerprint,
        needs: &[Need],
        candidates: impl Iterator<Item = usize>,
        decisions: &mut [NeedDecision],
    ) -> Vec<usize> {
        let now = self.clock.now();
        let mut missing = Vec::new();
        let mut hits = 0;
        for i in candidates {
            let need = &needs[i];
            let key = KeyRef::new(fingerprint, &need.database, need.action);
            match self.fresh(&key, now).await {
                Some(d) => {
                    decisions[i] = d;
                    hits += 1;
                }
                None => missing.push(i),
            }
        }
        if !missing.is_empty() {
            // An invalid token is invalid for every database and action.
            let token = KeyRef::token_level(fingerprint);
            if let Some(NeedDecision::InvalidToken) = self.fresh(&token, now).await {
                for &i in &missing {
                    decisions[i] = NeedDecision::InvalidToken;
                }
                hits += missing.len() as u64;
                missing.clear();
            }
        }
        if hits > 0 {
            self.hit(hits);
        }
        missing
    }

    /// The owned key of `need`.
    pub(crate) fn key(&self, fingerprint: Fingerprint, need: &Need) -> DecisionKey {
        DecisionKey::new(
            fingerprint,
            self.databases.intern(&need.database),
            action_byte(need.action),
        )
    }

    /// A TTL scaled by the jitter factor.
    fn jittered(&self, ttl: Duration) -> Duration {
        jittered(ttl, self.config.jitter)
    }

    /// Caches a fresh verdict for `keys` (one per decision), fetched with
    /// `stamp`, about `subjects` (one per decision).
    pub(crate) async fn store(
        &self,
        fingerprint: Fingerprint,
        keys: &[DecisionKey],
        verdict: &Verdict,
        subjects: &[Option<Arc<Subject>>],
        stamp: u64,
    ) {
        let now = self.clock.now();
        let connected = self.watch.is_connected();
        // The token's expiry on this process's monotonic clock.
        let expires = verdict
            .expires_at
            .map(|t| now.saturating_add(t.duration_since(SystemTime::now()).map_or(0, millis)));
        let grace = self.config.stale_grace.map_or(0, millis);
        let mut token_invalid = false;
        for ((key, decision), subject) in keys.iter().zip(&verdict.decisions).zip(subjects) {
            let allowed = matches!(decision, NeedDecision::Allowed { .. });
            let base = if allowed {
                self.config.allow_ttl
            } else {
                self.config.deny_ttl
            };
            let mut ttl = self.jittered(base);
            if !connected {
                // No invalidations arrive: keep nothing for long.
                ttl = ttl.min(self.config.disconnected_ttl);
            }
            let mut fresh_until = now.saturating_add(millis(ttl));
            let mut evict_at = fresh_until;
            if allowed {
                evict_at = fresh_until.saturating_add(grace);
                if let Some(e) = expires {
                    fresh_until = fresh_until.min(e);
                    evict_at = evict_at.min(e);
                }
            }
            if fresh_until <= now {
                continue;
            }
            token_invalid |= matches!(decision, NeedDecision::InvalidToken);
            let value = Cached::new(subject.clone(), allowed, stamp, now, fresh_until, evict_at);
            self.cache.insert(key.clone(), value).await;
        }
        if token_invalid {
            let ttl = self.jittered(self.config.deny_ttl);
            let ttl = if connected {
                ttl
            } else {
                ttl.min(self.config.disconnected_ttl)
            };
            let until = now.saturating_add(millis(ttl));
            let key = DecisionKey::new(fingerprint, self.databases.intern(""), ANY_ACTION);
            let value = Cached::new(None, false, stamp, now, until, until);
            self.cache.insert(key, value).await;
        }
        self.publish_entries();
    }

    /// When the token service failed: the decision for `need` from a stale
    /// allow, if the grace allows it.
    async fn stale(
        &self,
        key: &KeyRef<'_>,
        need: &Need,
        error: &AuthzError,
    ) -> Option<NeedDecision> {
        self.config.stale_grace?;
        let cached = self.cache.get(key).await?;
        let now = self.clock.now();
        if !self
            .epochs
            .is_current(cached.stamp, cached.subject.as_deref())
        {
            return None;
        }
        if self.is_fresh(&cached, now) {
            // Refreshed by another call in the meantime.
            self.hit(1);
            return Some(cached.decision());
        }
        let subject = cached.subject.as_ref()?;
        if !cached.allowed() || subject.is_dead() || now >= cached.evict_at() {
            return None;
        }
        let grace = self.config.stale_grace.map_or(0, millis);
        if let Some(broke_at) = self.watch.broke_at()
            && now >= broke_at.saturating_add(grace)
        {
            // The grace counts from the moment the stream broke: past it,
            // revocations of the whole outage may be pending.
            return None;
        }
        self.counts.stale_served.fetch_add(1, Ordering::Relaxed);
        self.metrics.stale_served.increment(1);
        tracing::warn!(
            subject = %subject.id(),
            database = %need.database,
            action = need.action.as_str(),
            stale_ms = now.saturating_sub(cached.fresh_until()),
            error = %error,
            "token service unavailable; serving a stale allow within --stale-grace"
        );
        Some(cached.decision())
    }
}

#[async_trait]
impl Authorizer for CachedAuthorizer {
    async fn check(&self, token: &Token, needs: &[Need]) -> Result<Verdict, AuthzError> {
        let s = &self.shared;
        if needs.is_empty() {
            // Nothing to cache; the inner authorizer decides what that means.
            return s.inner.check(token, needs).await;
        }
        let fingerprint = Fingerprint::of(token);
        // Placeholders, each overwritten below or the check fails.
        let mut decisions = vec![NeedDecision::InvalidToken; needs.len()];
        // Read before looking up: a fetch landing after this is seen by
        // `join` (see there).
        let mut completions = s.flights.completions();
        let mut missing = s
            .lookup(fingerprint, needs, 0..needs.len(), &mut decisions)
            .await;
        let mut looked_again = 0;
        let waiting = loop {
            if missing.is_empty() {
                return Ok(Verdict {
                    decisions,
                    // The expiry only bounded how long the entries live.
                    expires_at: None,
                    cache: CacheUse::Hit,
                });
            }
            match s.join(
                token,
                fingerprint,
                needs,
                &missing,
                completions,
                looked_again,
            ) {
                Join::Wait(waiting) => break waiting,
                Join::LookAgain => {
                    looked_again += 1;
                    completions = s.flights.completions();
                    missing = s
                        .lookup(fingerprint, needs, missing.into_iter(), &mut decisions)
                        .await;
                }
            }
        };
        s.counts
            .misses
            .fetch_add(waiting.needs.len() as u64, Ordering::Relaxed);
        s.metrics.misses.increment(waiting.needs.len() as u64);

        let results = waiting.wait().await;
        let mut expires_at: Option<SystemTime> = None;
        let mut cache = CacheUse::Miss;
        for &(i, flight) in &waiting.needs {
            let need = &needs[i];
            let key = KeyRef::new(fingerprint, &need.database, need.action);
            let error = match &results[flight] {
                Ok(outcome) => match outcome.decision(&key) {
                    Some(d) => {
                        decisions[i] = d;
                        if let Some(e) = outcome.expires_at {
                            expires_at = Some(expires_at.map_or(e, |x| x.min(e)));
                        }
                        continue;
                    }
                    None => {
                        return Err(AuthzError::Unavailable(
                            "the authorizer did not answer every permission".to_owned(),
                        ));
                    }
                },
                Err(error) => error,
            };
            match s.stale(&key, need, error).await {
                Some(d) => {
                    decisions[i] = d;
                    cache = CacheUse::Stale;
                }
                None => return Err(error.clone()),
            }
        }
        Ok(Verdict {
            decisions,
            expires_at,
            cache,
        })
    }

    async fn ready(&self) -> Result<(), String> {
        self.shared.inner.ready().await?;
        let watch = &self.shared.watch;
        if watch.is_connected() || watch.is_streamless() || self.shared.config.stale_grace.is_some()
        {
            Ok(())
        } else {
            Err("not following the token service's change stream".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_map_to_the_config() {
        use clap::Parser as _;
        let cli = crate::config::Cli::try_parse_from([
            "fluxgate",
            "proxy",
            "--upstream",
            "http://127.0.0.1:8181",
            "--cache-ttl-jitter",
            "20",
            "--stale-grace",
            "30s",
            "--cache-disconnected-allow-ttl",
            "2s",
        ])
        .expect("valid flags");
        let crate::config::Command::Proxy(args) = cli.command else {
            panic!("not proxy");
        };
        let c = CacheConfig::from_options(&args.cache, Duration::from_secs(1));
        assert_eq!(c.allow_ttl, Duration::from_secs(60));
        assert_eq!(c.deny_ttl, Duration::from_secs(5));
        assert_eq!(c.max_entries, 100_000);
        assert!((c.jitter - 0.2).abs() < 1e-9);
        assert_eq!(c.stale_grace, Some(Duration::from_secs(30)));
        assert_eq!(c.disconnected_ttl, Duration::from_secs(2));
        assert_eq!(c.fetch_timeout, Duration::from_secs(1));
    }
}
