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
//!   misses of the same key share it ([`coalesce`](super::coalesce)).
//!   Errors and timeouts are never cached.
//! - Fail closed: without `--stale-grace`, an error is an error. With it,
//!   an allow that went stale less than the grace ago is served while the
//!   token service cannot answer — never for a token known to be revoked or
//!   expired, never past the token's expiry, and, while the change stream
//!   is down, never later than the grace after it broke. What that trades:
//!   a token revoked during the outage (the proxy cannot know) may be
//!   served for up to the grace.
//! - The invalidation follower ([`invalidation`](super::invalidation))
//!   invalidates a token's entries on every change of it, through
//!   [`CachedAuthorizer::invalidate_subject`] and [`CachedAuthorizer::flush`];
//!   the [`store`](super::store) makes that O(1) and also covers answers
//!   still in flight.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use futures_util::FutureExt as _;

use super::coalesce::{Answer, Coalescer, Join};
pub use super::config::CacheConfig;
use super::config::FETCH_ATTEMPTS;
use super::entry::{Cached, millis};
use super::key::{DecisionKey, Fingerprint, KeyRef};
pub use super::stats::{CacheStats, describe_metrics};
use super::stats::{CallResult, Invalidation, Stats};
use super::store::DecisionStore;
use super::subject::SubjectId;
use super::watch::{WatchState, WatchStatus};
use super::{Authorizer, AuthzError, CacheUse, Need, NeedDecision, Verdict};
use crate::credentials::Token;

/// A caching [`Authorizer`]. Cheap to clone; clones share one cache.
#[derive(Clone)]
pub struct CachedAuthorizer {
    shared: Arc<Shared>,
}

/// The state every clone and fetch task share.
struct Shared {
    inner: Arc<dyn Authorizer>,
    config: CacheConfig,
    store: DecisionStore,
    calls: Arc<Coalescer<DecisionKey, Fetched>>,
    watch: WatchState,
    stats: Stats,
}

/// What one Authorize call found out, for the checks that joined it.
#[derive(Debug)]
struct Fetched {
    keys: Vec<DecisionKey>,
    decisions: Vec<NeedDecision>,
    /// The token's expiry, when the authorizer told.
    expires_at: Option<SystemTime>,
}

impl Fetched {
    /// The decision for `key`, if this call asked about it.
    fn decision(&self, key: &KeyRef<'_>) -> Option<NeedDecision> {
        self.keys
            .iter()
            .position(|k| k.borrowed() == *key)
            .and_then(|i| self.decisions.get(i).cloned())
    }
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
    /// change stream until [`CachedAuthorizer::follow`] connects. Made
    /// inside the process's runtime: the calls it shares between requests
    /// run there, not on whichever listener thread asked first (made
    /// outside any runtime, they run on the asker's).
    pub fn new(inner: Arc<dyn Authorizer>, config: CacheConfig) -> Self {
        let store = DecisionStore::new(config.max_entries, config.longest_lifetime());
        let watch = WatchState::new(store.clock());
        Self {
            shared: Arc::new(Shared {
                inner,
                config,
                store,
                calls: Arc::new(Coalescer::new()),
                watch,
                stats: Stats::new(),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &CacheConfig {
        &self.shared.config
    }

    /// What the cache did so far.
    pub fn stats(&self) -> CacheStats {
        self.shared.stats.snapshot()
    }

    /// Where the change-stream follower is.
    pub fn watch_status(&self) -> WatchStatus {
        self.shared.watch.status()
    }

    /// Entries held (approximate until [`Self::run_maintenance`]).
    pub fn entry_count(&self) -> u64 {
        self.shared.store.entry_count()
    }

    /// Removes entries gone by now and updates the entry gauge.
    pub async fn run_maintenance(&self) {
        self.shared.store.run_maintenance();
        self.shared.publish_entries();
    }

    /// Invalidates every decision about token `id` (`dead`: revoked or
    /// expired, never to be served again, not even stale).
    pub fn invalidate_subject(&self, id: &str, dead: bool) {
        self.shared.store.invalidate_subject(id, dead);
    }

    /// Drops every decision, including answers still in flight.
    pub fn flush(&self) {
        self.shared.store.flush();
        self.shared.publish_entries();
    }

    /// The follower's state, which the follower writes.
    pub(crate) fn watch(&self) -> &WatchState {
        &self.shared.watch
    }

    /// Counts an invalidation in the metrics.
    pub(crate) fn count_invalidation(&self, why: Invalidation) {
        self.shared.stats.invalidated(why);
    }
}

impl Shared {
    fn publish_entries(&self) {
        self.stats.entries(self.store.entry_count());
    }

    /// Until when a fresh `cached` may be served (cache clock ms): its
    /// TTL, and while the change stream is not followed, the disconnected
    /// TTL.
    fn served_until(&self, cached: &Cached) -> u64 {
        let until = cached.fresh_until();
        if self.watch.is_connected() {
            until
        } else {
            until.min(
                cached
                    .fetched_at
                    .saturating_add(millis(self.config.disconnected_ttl)),
            )
        }
    }

    /// The cached decision for `key` if fresh and current, and until when
    /// it may be served.
    fn fresh(&self, key: &KeyRef<'_>, now: u64) -> Option<(NeedDecision, u64)> {
        let cached = self.store.current(key, now)?;
        let until = self.served_until(&cached);
        (now < until).then(|| (cached.decision(), until))
    }

    /// Fills `decisions[i]` from the cache for each `i` of `candidates`;
    /// returns the indices still missing, and until when the decisions
    /// found may be served.
    fn lookup(
        &self,
        fingerprint: Fingerprint,
        needs: &[Need],
        candidates: impl Iterator<Item = usize>,
        decisions: &mut [NeedDecision],
    ) -> (Vec<usize>, u64) {
        let now = self.store.clock().now();
        let mut missing = Vec::new();
        let mut hits = 0;
        let mut served_until = u64::MAX;
        for i in candidates {
            let need = &needs[i];
            let key = KeyRef::new(fingerprint, &need.database, need.action);
            match self.fresh(&key, now) {
                Some((d, until)) => {
                    decisions[i] = d;
                    served_until = served_until.min(until);
                    hits += 1;
                }
                None => missing.push(i),
            }
        }
        if !missing.is_empty() {
            // An invalid token is invalid for every database and action.
            let token = KeyRef::token_level(fingerprint);
            if let Some((NeedDecision::InvalidToken, until)) = self.fresh(&token, now) {
                for &i in &missing {
                    decisions[i] = NeedDecision::InvalidToken;
                }
                served_until = served_until.min(until);
                hits += missing.len() as u64;
                missing.clear();
            }
        }
        if hits > 0 {
            self.stats.hits(hits);
        }
        (missing, served_until)
    }

    /// Caches a fresh verdict for `keys` (one per decision), fetched with
    /// `stamp`, about `subjects` (one per decision).
    fn record(
        &self,
        fingerprint: Fingerprint,
        keys: &[DecisionKey],
        verdict: &Verdict,
        subjects: &[Option<SubjectId>],
        stamp: u64,
    ) {
        let now = self.store.clock().now();
        let connected = self.watch.is_connected();
        // The token's expiry on this process's monotonic clock.
        let expires = verdict
            .expires_at
            .map(|t| now.saturating_add(t.duration_since(SystemTime::now()).map_or(0, millis)));
        let mut token_invalid = false;
        for ((key, decision), subject) in keys.iter().zip(&verdict.decisions).zip(subjects) {
            let allowed = matches!(decision, NeedDecision::Allowed { .. });
            let Some((fresh_until, evict_at)) =
                self.config.lifetime(allowed, connected, now, expires)
            else {
                continue;
            };
            token_invalid |= matches!(decision, NeedDecision::InvalidToken);
            let value = Cached::new(subject.clone(), allowed, stamp, now, fresh_until, evict_at);
            self.store.insert(key, value);
        }
        if token_invalid {
            let until = self.config.invalid_token_until(connected, now);
            let value = Cached::new(None, false, stamp, now, until, until);
            self.store.insert(&self.store.token_key(fingerprint), value);
        }
        self.publish_entries();
    }

    /// When the token service failed: the decision for `need` from a stale
    /// allow, if the grace allows it.
    fn stale(&self, key: &KeyRef<'_>, need: &Need, error: &AuthzError) -> Option<NeedDecision> {
        self.config.stale_grace?;
        let now = self.store.clock().now();
        let cached = self.store.current(key, now)?;
        if now < self.served_until(&cached) {
            // Refreshed by another call in the meantime.
            self.stats.hits(1);
            return Some(cached.decision());
        }
        let subject = cached.subject.as_ref()?;
        if !cached.allowed() || self.store.is_dead(subject) || now >= cached.evict_at() {
            return None;
        }
        let grace = self.config.grace_ms();
        if let Some(broke_at) = self.watch.broke_at()
            && now >= broke_at.saturating_add(grace)
        {
            // The grace counts from the moment the stream broke: past it,
            // revocations of the whole outage may be pending.
            return None;
        }
        self.stats.stale_served();
        tracing::warn!(
            subject = %subject,
            database = %need.database,
            action = need.action.as_str(),
            stale_ms = now.saturating_sub(cached.fresh_until()),
            error = %error,
            "token service unavailable; serving a stale allow within --stale-grace"
        );
        Some(cached.decision())
    }

    /// The call that asks for `needs` (stored as `keys`), to run in its own
    /// task.
    fn fetch_call(
        self: &Arc<Self>,
        token: &Token,
        fingerprint: Fingerprint,
        needs: Vec<Need>,
        keys: Vec<DecisionKey>,
    ) -> futures_util::future::BoxFuture<'static, Answer<Fetched>> {
        let (shared, token) = (Arc::clone(self), token.clone());
        async move { shared.fetch(&token, fingerprint, &needs, keys).await }.boxed()
    }

    /// Asks the inner authorizer and caches the answer. Asks again when the
    /// token changed (or the cache was flushed) while the call was in
    /// flight, since that answer may predate the change.
    async fn fetch(
        &self,
        token: &Token,
        fingerprint: Fingerprint,
        needs: &[Need],
        keys: Vec<DecisionKey>,
    ) -> Answer<Fetched> {
        for _ in 0..FETCH_ATTEMPTS {
            let stamp = self.store.stamp();
            let verdict = self.call(token, needs).await?;
            if verdict.decisions.len() != needs.len() {
                return Err(AuthzError::Unavailable(format!(
                    "the authorizer answered {} decisions for {} permissions",
                    verdict.decisions.len(),
                    needs.len()
                )));
            }
            let subjects = subjects(&verdict.decisions);
            if !subjects
                .iter()
                .all(|s| self.store.admits(stamp, s.as_ref()))
            {
                tracing::debug!("the token changed during its authorization; asking again");
                continue;
            }
            self.record(fingerprint, &keys, &verdict, &subjects, stamp);
            return Ok(Arc::new(Fetched {
                keys,
                decisions: verdict.decisions,
                expires_at: verdict.expires_at,
            }));
        }
        Err(AuthzError::Unavailable(
            "the token changed during every authorization attempt".to_owned(),
        ))
    }

    /// One call to the inner authorizer, bounded and measured.
    async fn call(&self, token: &Token, needs: &[Need]) -> Result<Verdict, AuthzError> {
        self.stats.call_started();
        let started = Instant::now();
        let result =
            match tokio::time::timeout(self.config.fetch_timeout, self.inner.check(token, needs))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(AuthzError::Timeout),
            };
        let outcome = match &result {
            Ok(v) if v.decisions.contains(&NeedDecision::InvalidToken) => CallResult::Invalid,
            Ok(v)
                if v.decisions
                    .iter()
                    .all(|d| matches!(d, NeedDecision::Allowed { .. })) =>
            {
                CallResult::Allowed
            }
            Ok(_) => CallResult::Forbidden,
            Err(AuthzError::Unavailable(_)) => CallResult::Unavailable,
            Err(AuthzError::Timeout) => CallResult::Timeout,
        };
        self.stats.call_ended(outcome, started.elapsed());
        result
    }
}

/// The token id of each decision (`None` for an invalid token); decisions
/// about one token share one.
fn subjects(decisions: &[NeedDecision]) -> Vec<Option<SubjectId>> {
    let mut last: Option<(&Arc<str>, SubjectId)> = None;
    decisions
        .iter()
        .map(|d| match d {
            NeedDecision::Allowed { subject } | NeedDecision::Forbidden { subject } => {
                if let Some((id, packed)) = &last
                    && *id == subject
                {
                    return Some(packed.clone());
                }
                let packed = SubjectId::from_shared(subject);
                last = Some((subject, packed.clone()));
                Some(packed)
            }
            NeedDecision::InvalidToken => None,
        })
        .collect()
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
        let mut completions = s.calls.completions();
        let (mut missing, mut served_until) =
            s.lookup(fingerprint, needs, 0..needs.len(), &mut decisions);
        let mut looked_again = 0;
        let (waiting, missing) = loop {
            if missing.is_empty() {
                return Ok(Verdict {
                    decisions,
                    // The expiry only bounded how long the entries live.
                    expires_at: None,
                    cache: CacheUse::Hit,
                    reusable_until: Some(s.store.clock().instant(served_until)),
                });
            }
            let keys: Vec<DecisionKey> = missing
                .iter()
                .map(|&i| s.store.key(fingerprint, &needs[i]))
                .collect();
            let (join, coalesced) = s.calls.join(&keys, completions, looked_again, |new| {
                let needs = new.iter().map(|&n| needs[missing[n]].clone()).collect();
                let keys = new.iter().map(|&n| keys[n].clone()).collect();
                s.fetch_call(token, fingerprint, needs, keys)
            });
            if coalesced > 0 {
                s.stats.coalesced(coalesced);
            }
            match join {
                Join::Wait(waiting) => break (waiting, missing),
                Join::LookAgain => {
                    looked_again += 1;
                    completions = s.calls.completions();
                    let (still, until) =
                        s.lookup(fingerprint, needs, missing.into_iter(), &mut decisions);
                    missing = still;
                    served_until = served_until.min(until);
                }
            }
        };
        s.stats.misses(missing.len() as u64);

        let answers = waiting.wait().await;
        let mut expires_at: Option<SystemTime> = None;
        let mut cache = CacheUse::Miss;
        for (&i, &call) in missing.iter().zip(&waiting.call_of) {
            let need = &needs[i];
            let key = KeyRef::new(fingerprint, &need.database, need.action);
            let error = match &answers[call] {
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
            match s.stale(&key, need, error) {
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
            // Reused once it is a hit.
            reusable_until: None,
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

    fn generation(&self) -> Option<u64> {
        // Both only grow: the sum changes when either does.
        Some(self.shared.store.generation() + self.shared.watch.transitions())
    }

    fn reused(&self, verdict: &Verdict) {
        self.shared.stats.hits(verdict.decisions.len() as u64);
    }
}
