//! Authorize calls in flight, shared by every check that misses the same key.
//!
//! A check's missed needs go out in one Authorize call. Needs another check
//! is already asking about join that call instead of starting their own, so
//! N concurrent misses of a key cost one call. The call runs in its own task
//! and its result is shared: a caller that goes away (client disconnect,
//! proxy timeout) cancels nothing and nobody waits on it. The task stores
//! the answer in the cache before it leaves the in-flight table, so every
//! later check finds one or the other.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use futures_util::future::{BoxFuture, FutureExt as _, Shared as SharedFuture, join_all};
use parking_lot::Mutex;

use super::cache::Shared;
use super::epoch::Subject;
use super::key::{DecisionKey, Fingerprint, KeyRef};
use super::{AuthzError, Need, NeedDecision, Verdict};
use crate::credentials::Token;

/// Authorize attempts per fetch when the token keeps changing mid-call.
pub(crate) const FETCH_ATTEMPTS: u32 = 3;

/// Times a check looks at the cache again because a call landed meanwhile.
const MAX_LOOK_AGAIN: u32 = 2;

/// What a call found out.
#[derive(Debug)]
pub(crate) struct Outcome {
    keys: Vec<DecisionKey>,
    decisions: Vec<NeedDecision>,
    /// The token's expiry, when the authorizer told.
    pub(crate) expires_at: Option<SystemTime>,
}

impl Outcome {
    /// The decision for `key`, if this call asked about it.
    pub(crate) fn decision(&self, key: &KeyRef<'_>) -> Option<NeedDecision> {
        self.keys
            .iter()
            .position(|k| k.borrowed() == *key)
            .and_then(|i| self.decisions.get(i).cloned())
    }
}

type CallResult = Result<Arc<Outcome>, AuthzError>;

/// One call in flight.
struct Flight {
    id: u64,
    result: SharedFuture<BoxFuture<'static, CallResult>>,
}

/// The in-flight table.
pub(crate) struct Flights {
    table: Mutex<HashMap<DecisionKey, Arc<Flight>>>,
    /// Calls landed so far; bumped under the table lock after the answer is
    /// in the cache.
    completions: AtomicU64,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Flights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights")
            .field("in_flight", &self.table.lock().len())
            .finish_non_exhaustive()
    }
}

impl Flights {
    pub(crate) fn new() -> Self {
        Self {
            table: Mutex::new(HashMap::new()),
            completions: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
        }
    }

    /// Calls landed so far.
    pub(crate) fn completions(&self) -> u64 {
        self.completions.load(Ordering::SeqCst)
    }
}

/// What a check does about its misses.
pub(crate) enum Join {
    /// A call landed since the check looked: look at the cache again.
    LookAgain,
    /// Wait for these calls.
    Wait(Waiting),
}

/// The calls a check waits for.
pub(crate) struct Waiting {
    flights: Vec<Arc<Flight>>,
    /// (index of the need, index of its call in `flights`).
    pub(crate) needs: Vec<(usize, usize)>,
}

impl Waiting {
    /// Every call's result, in `flights` order.
    pub(crate) async fn wait(&self) -> Vec<CallResult> {
        join_all(self.flights.iter().map(|f| f.result.clone())).await
    }
}

/// Removes a call's keys from the table when its task ends, however it
/// ends (answer, error, panic).
struct Landing {
    shared: Arc<Shared>,
    keys: Vec<DecisionKey>,
    id: u64,
}

impl Drop for Landing {
    fn drop(&mut self) {
        let flights = &self.shared.flights;
        let mut table = flights.table.lock();
        for key in &self.keys {
            if table.get(key).is_some_and(|f| f.id == self.id) {
                table.remove(key);
            }
        }
        flights.completions.fetch_add(1, Ordering::SeqCst);
    }
}

impl Shared {
    /// Joins calls in flight for the `missing` needs and starts one call for
    /// the rest.
    ///
    /// A call that landed between the check's cache lookup and now has
    /// already left the table, but its answer is in the cache: `completions`
    /// (read before the lookup) tells, and the check looks again.
    pub(crate) fn join(
        self: &Arc<Self>,
        token: &Token,
        fingerprint: Fingerprint,
        needs: &[Need],
        missing: &[usize],
        completions: u64,
        looked_again: u32,
    ) -> Join {
        let keys: Vec<DecisionKey> = missing
            .iter()
            .map(|&i| self.key(fingerprint, &needs[i]))
            .collect();
        let mut table = self.flights.table.lock();
        if looked_again < MAX_LOOK_AGAIN && self.flights.completions() != completions {
            return Join::LookAgain;
        }
        let mut flights: Vec<Arc<Flight>> = Vec::new();
        let mut assigned: Vec<(usize, Option<usize>)> = Vec::with_capacity(missing.len());
        let mut new_keys: Vec<DecisionKey> = Vec::new();
        let mut new_needs: Vec<Need> = Vec::new();
        let mut coalesced = 0u64;
        for (key, &i) in keys.into_iter().zip(missing) {
            if let Some(flight) = table.get(&key) {
                let at = match flights.iter().position(|f| Arc::ptr_eq(f, flight)) {
                    Some(at) => at,
                    None => {
                        flights.push(Arc::clone(flight));
                        flights.len() - 1
                    }
                };
                coalesced += 1;
                assigned.push((i, Some(at)));
            } else {
                if !new_keys.contains(&key) {
                    new_needs.push(needs[i].clone());
                    new_keys.push(key);
                }
                assigned.push((i, None));
            }
        }
        let new_at = flights.len();
        if !new_keys.is_empty() {
            let flight = self.start(token, fingerprint, new_needs, new_keys.clone());
            for key in new_keys {
                table.insert(key, Arc::clone(&flight));
            }
            flights.push(flight);
        }
        drop(table);
        if coalesced > 0 {
            self.counts
                .coalesced
                .fetch_add(coalesced, Ordering::Relaxed);
            self.metrics.coalesced.increment(coalesced);
        }
        Join::Wait(Waiting {
            flights,
            needs: assigned
                .into_iter()
                .map(|(i, at)| (i, at.unwrap_or(new_at)))
                .collect(),
        })
    }

    /// Starts a call for `needs` (keyed `keys`) in its own task.
    fn start(
        self: &Arc<Self>,
        token: &Token,
        fingerprint: Fingerprint,
        needs: Vec<Need>,
        keys: Vec<DecisionKey>,
    ) -> Arc<Flight> {
        let id = self.flights.next_id.fetch_add(1, Ordering::Relaxed);
        let landing = Landing {
            shared: Arc::clone(self),
            keys,
            id,
        };
        let token = token.clone();
        let task = tokio::spawn(async move {
            let landing = landing;
            landing
                .shared
                .fetch(&token, fingerprint, &needs, &landing.keys)
                .await
        });
        let result = async move {
            task.await.unwrap_or_else(|e| {
                Err(AuthzError::Unavailable(format!(
                    "the authorization task failed: {e}"
                )))
            })
        }
        .boxed()
        .shared();
        Arc::new(Flight { id, result })
    }

    /// Asks the inner authorizer and caches the answer. Asks again when the
    /// token changed (or the cache was flushed) while the call was in
    /// flight, since that answer may predate the change.
    async fn fetch(
        &self,
        token: &Token,
        fingerprint: Fingerprint,
        needs: &[Need],
        keys: &[DecisionKey],
    ) -> CallResult {
        for _ in 0..FETCH_ATTEMPTS {
            let stamp = self.epochs.stamp();
            let verdict = self.call(token, needs).await?;
            if verdict.decisions.len() != needs.len() {
                return Err(AuthzError::Unavailable(format!(
                    "the authorizer answered {} decisions for {} permissions",
                    verdict.decisions.len(),
                    needs.len()
                )));
            }
            let subjects = self.subjects(&verdict.decisions);
            if !subjects
                .iter()
                .all(|s| self.epochs.is_current(stamp, s.as_deref()))
            {
                tracing::debug!("the token changed during its authorization; asking again");
                continue;
            }
            self.store(fingerprint, keys, &verdict, &subjects, stamp)
                .await;
            return Ok(Arc::new(Outcome {
                keys: keys.to_vec(),
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
        self.counts.inner_calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result =
            match tokio::time::timeout(self.config.fetch_timeout, self.inner.check(token, needs))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(AuthzError::Timeout),
            };
        self.metrics
            .call_seconds
            .record(started.elapsed().as_secs_f64());
        let result_index = match &result {
            Ok(v) if v.decisions.contains(&NeedDecision::InvalidToken) => 2,
            Ok(v)
                if v.decisions
                    .iter()
                    .all(|d| matches!(d, NeedDecision::Allowed { .. })) =>
            {
                0
            }
            Ok(_) => 1,
            Err(AuthzError::Unavailable(_)) => 3,
            Err(AuthzError::Timeout) => 4,
        };
        self.metrics.calls[result_index].increment(1);
        result
    }

    /// The shared subject of each decision (`None` for an invalid token).
    fn subjects(&self, decisions: &[NeedDecision]) -> Vec<Option<Arc<Subject>>> {
        let mut last: Option<Arc<Subject>> = None;
        decisions
            .iter()
            .map(|d| match d {
                NeedDecision::Allowed { subject } | NeedDecision::Forbidden { subject } => {
                    if let Some(l) = &last
                        && l.id() == subject
                    {
                        return Some(Arc::clone(l));
                    }
                    let s = self.epochs.subject(subject);
                    last = Some(Arc::clone(&s));
                    Some(s)
                }
                NeedDecision::InvalidToken => None,
            })
            .collect()
    }
}
