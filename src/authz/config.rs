//! The decision cache's settings ([`CacheConfig`]) and what they mean for
//! one answer: how long it is served fresh, how long it is kept for stale
//! grace, how long an invalidation must be remembered.

use std::time::Duration;

use super::entry::{jittered, millis};
use crate::config::CacheOptions;

/// Authorize attempts per fetch when the token keeps changing mid-call.
pub(crate) const FETCH_ATTEMPTS: u32 = 3;

/// Settings of a [`CachedAuthorizer`](super::cache::CachedAuthorizer).
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
    pub(crate) fn longest_lifetime(&self) -> Duration {
        let ttl = self.allow_ttl.max(self.deny_ttl).mul_f64(1.0 + self.jitter);
        ttl + self.stale_grace.unwrap_or_default()
            + self.fetch_timeout * FETCH_ATTEMPTS
            + Duration::from_secs(1)
    }

    /// The stale grace in ms (0: none).
    pub(crate) fn grace_ms(&self) -> u64 {
        self.stale_grace.map_or(0, millis)
    }

    /// A TTL scaled by the jitter factor and, while the change stream is
    /// down (no invalidations arrive), bounded by the disconnected TTL.
    fn ttl(&self, base: Duration, connected: bool) -> Duration {
        let ttl = jittered(base, self.jitter);
        if connected {
            ttl
        } else {
            ttl.min(self.disconnected_ttl)
        }
    }

    /// For an answer fetched at `now` (cache clock ms): until when it is
    /// served fresh and when it goes (an allow is kept the stale grace
    /// longer), neither past the token's expiry (`expires`, an allow's);
    /// `None` when it is not worth keeping.
    pub(crate) fn lifetime(
        &self,
        allowed: bool,
        connected: bool,
        now: u64,
        expires: Option<u64>,
    ) -> Option<(u64, u64)> {
        let base = if allowed {
            self.allow_ttl
        } else {
            self.deny_ttl
        };
        let mut fresh_until = now.saturating_add(millis(self.ttl(base, connected)));
        let mut evict_at = fresh_until;
        if allowed {
            evict_at = fresh_until.saturating_add(self.grace_ms());
            if let Some(e) = expires {
                fresh_until = fresh_until.min(e);
                evict_at = evict_at.min(e);
            }
        }
        (fresh_until > now).then_some((fresh_until, evict_at))
    }

    /// Until when "this token is invalid" is served, for an answer fetched
    /// at `now`.
    pub(crate) fn invalid_token_until(&self, connected: bool, now: u64) -> u64 {
        now.saturating_add(millis(self.ttl(self.deny_ttl, connected)))
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

    #[test]
    fn allows_never_outlive_the_token_and_keep_the_grace() {
        let c = CacheConfig {
            jitter: 0.0,
            stale_grace: Some(Duration::from_secs(10)),
            ..CacheConfig::default()
        };
        assert_eq!(c.lifetime(true, true, 1000, None), Some((61_000, 71_000)));
        assert_eq!(c.lifetime(true, true, 1000, Some(2000)), Some((2000, 2000)));
        assert_eq!(c.lifetime(true, true, 1000, Some(1000)), None);
        assert_eq!(c.lifetime(false, true, 1000, None), Some((6000, 6000)));
        // Disconnected: the disconnected TTL bounds both.
        assert_eq!(c.lifetime(true, false, 0, None), Some((5000, 15_000)));
        assert_eq!(c.invalid_token_until(false, 0), 5000);
    }
}
