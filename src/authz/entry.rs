//! One cached decision and its lifetime: the compact entry the decision
//! cache stores (who, which fetch, when fetched, how long fresh, how long
//! kept for stale grace, allow or not), the clock its times are counted on,
//! and TTL jitter.

use std::time::{Duration, Instant};

use super::NeedDecision;
use super::subject::SubjectId;

/// Milliseconds since the cache was created: compact timestamps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            base: Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> u64 {
        self.at(Instant::now())
    }

    fn at(&self, t: Instant) -> u64 {
        millis(t.saturating_duration_since(self.base))
    }

    /// The instant `ms` stands for.
    pub(crate) fn instant(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }
}

/// `ttl` scaled by a random factor in `1 ± jitter`.
pub(crate) fn jittered(ttl: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 || ttl.is_zero() {
        return ttl;
    }
    let jitter = jitter.min(0.5);
    ttl.mul_f64(rand::random_range((1.0 - jitter)..=(1.0 + jitter)))
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A cached decision: 48 bytes (the table adds its key and ~10 bytes of
/// index; see the memory figures in `benches/cache_hit.rs`).
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    /// The token's id; `None` for an invalid token.
    pub(crate) subject: Option<SubjectId>,
    /// [`Epochs`](super::epoch::Epochs) stamp of the fetch that produced it.
    pub(crate) stamp: u64,
    /// When it was fetched ([`Clock`] ms): bounds it while the change
    /// stream is down.
    pub(crate) fetched_at: u64,
    /// Served as a hit for that many ms after `fetched_at`.
    fresh_for: u32,
    /// Low 31 bits: kept that many ms longer, for stale grace (never past
    /// the token's expiry). Top bit: an allow.
    grace_and_allowed: u32,
}

const ALLOWED_BIT: u32 = 1 << 31;

impl Cached {
    pub(crate) fn new(
        subject: Option<SubjectId>,
        allowed: bool,
        stamp: u64,
        fetched_at: u64,
        fresh_until: u64,
        evict_at: u64,
    ) -> Self {
        let fresh_for = fresh_until.saturating_sub(fetched_at);
        let grace = evict_at
            .saturating_sub(fresh_until)
            .min(u64::from(!ALLOWED_BIT));
        let grace = u32::try_from(grace).unwrap_or(!ALLOWED_BIT);
        Self {
            subject,
            stamp,
            fetched_at,
            fresh_for: u32::try_from(fresh_for).unwrap_or(u32::MAX),
            grace_and_allowed: grace | if allowed { ALLOWED_BIT } else { 0 },
        }
    }

    pub(crate) fn allowed(&self) -> bool {
        self.grace_and_allowed & ALLOWED_BIT != 0
    }

    /// Served as a hit until then ([`Clock`] ms), while connected.
    pub(crate) fn fresh_until(&self) -> u64 {
        self.fetched_at.saturating_add(u64::from(self.fresh_for))
    }

    /// When the entry goes ([`Clock`] ms).
    pub(crate) fn evict_at(&self) -> u64 {
        self.fresh_until()
            .saturating_add(u64::from(self.grace_and_allowed & !ALLOWED_BIT))
    }

    pub(crate) fn decision(&self) -> NeedDecision {
        match &self.subject {
            None => NeedDecision::InvalidToken,
            Some(s) if self.allowed() => NeedDecision::Allowed {
                subject: s.to_shared(),
            },
            Some(s) => NeedDecision::Forbidden {
                subject: s.to_shared(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_bounds() {
        let ttl = Duration::from_secs(60);
        assert_eq!(jittered(ttl, 0.0), ttl);
        let samples: Vec<Duration> = (0..1000).map(|_| jittered(ttl, 0.1)).collect();
        assert!(
            samples
                .iter()
                .all(|d| *d >= Duration::from_secs(54) && *d <= Duration::from_secs(66))
        );
        assert!(samples.iter().any(|d| *d != samples[0]), "it varies");
    }

    #[test]
    fn entries_are_compact() {
        // Part of the ≤ 128 bytes per decision aim (see benches/).
        assert!(std::mem::size_of::<Cached>() <= 48);
    }
}
