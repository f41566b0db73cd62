//! Per-caller throttling of Authorize answers for invalid tokens, so the
//! token service is no unthrottled validity oracle.
//!
//! Authorize stays callable without a caller credential (InfluxDB's own
//! authorizer clients call it that way), so callers are told apart by
//! address: an IPv4 address, or an IPv6 /64 (one host usually holds a whole
//! /64). Each may get `--authorize-invalid-rate` invalid answers a minute
//! (with a burst of as many); past that, every Authorize call from it —
//! valid token or not, so a hit cannot be told from a miss — answers
//! RESOURCE_EXHAUSTED until its budget refills. Callers with a proxy token
//! or a verified client certificate are exempt: proxies throttle their own
//! clients, and are many clients behind one address.
//!
//! Memory is bounded: idle callers are dropped (`retain_recent`), and past
//! [`MAX_CALLERS`] tracked addresses new ones share one budget.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::RwLock;

/// Default invalid answers per minute per caller.
pub const DEFAULT_PER_MINUTE: u32 = 20;

/// Most callers tracked one by one; past it, new callers share a budget.
pub const MAX_CALLERS: usize = 100_000;

/// Checks between two sweeps of idle callers.
const SWEEP_EVERY: u64 = 1024;

/// Who a throttled caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    /// An IPv4 address, or an IPv6 /64 (host bits zero).
    Address(IpAddr),
    /// Callers without a known address.
    Unknown,
    /// Every new caller once [`MAX_CALLERS`] are tracked.
    Overflow,
}

impl Caller {
    /// The caller at `addr` (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn of(addr: Option<SocketAddr>) -> Self {
        match addr.map(|a| a.ip().to_canonical()) {
            None => Caller::Unknown,
            Some(IpAddr::V4(v4)) => Caller::Address(IpAddr::V4(v4)),
            Some(IpAddr::V6(v6)) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Caller::Address(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
        }
    }
}

/// The throttle's verdict for a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// Go on.
    No,
    /// Refuse; the budget allows another attempt after this long.
    For(Duration),
}

/// Invalid-token budgets per caller.
#[derive(Debug)]
pub struct InvalidTokenThrottle {
    per_minute: NonZeroU32,
    limiter: DefaultKeyedRateLimiter<Caller>,
    clock: DefaultClock,
    /// Callers out of budget, and until when.
    blocked: RwLock<HashMap<Caller, Instant>>,
    checks: AtomicU64,
}

impl Default for InvalidTokenThrottle {
    fn default() -> Self {
        Self::per_minute(NonZeroU32::new(DEFAULT_PER_MINUTE).unwrap_or(NonZeroU32::MIN))
    }
}

impl InvalidTokenThrottle {
    /// `n` invalid answers a minute per caller, in bursts of up to `n`.
    pub fn per_minute(n: NonZeroU32) -> Self {
        Self {
            per_minute: n,
            limiter: RateLimiter::keyed(Quota::per_minute(n)),
            clock: DefaultClock::default(),
            blocked: RwLock::new(HashMap::new()),
            checks: AtomicU64::new(0),
        }
    }

    /// The budget per minute.
    pub fn rate(&self) -> NonZeroU32 {
        self.per_minute
    }

    /// Whether `caller` is out of budget now (before any answer is given).
    pub fn check(&self, caller: Caller) -> Throttled {
        let blocked = self.blocked.read();
        if blocked.is_empty() {
            return Throttled::No;
        }
        match blocked.get(&caller) {
            Some(until) => {
                let now = Instant::now();
                if *until > now {
                    Throttled::For(*until - now)
                } else {
                    Throttled::No
                }
            }
            None => Throttled::No,
        }
    }

    /// Counts one invalid answer for `caller`; `For` when it exceeds the
    /// budget (the answer must then not be given).
    pub fn invalid(&self, caller: Caller) -> Throttled {
        let key = self.key(caller);
        match self.limiter.check_key(&key) {
            Ok(()) => Throttled::No,
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let mut blocked = self.blocked.write();
                if blocked.len() >= MAX_CALLERS {
                    let now = Instant::now();
                    blocked.retain(|_, until| *until > now);
                }
                blocked.insert(key, Instant::now() + wait);
                Throttled::For(wait)
            }
        }
    }

    /// The key `caller` is counted under, sweeping idle callers now and
    /// then so the table stays bounded.
    fn key(&self, caller: Caller) -> Caller {
        let n = self.checks.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(SWEEP_EVERY) || self.limiter.len() >= MAX_CALLERS {
            self.sweep();
        }
        if self.limiter.len() >= MAX_CALLERS {
            Caller::Overflow
        } else {
            caller
        }
    }

    /// Forgets callers whose budget is full again.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let now = Instant::now();
        self.blocked.write().retain(|_, until| *until > now);
    }

    /// Callers tracked now (for tests and diagnostics).
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ip: &str) -> Caller {
        Caller::of(Some(SocketAddr::new(ip.parse().unwrap(), 1234)))
    }

    #[test]
    fn callers_are_addresses_and_ipv6_slash_64s() {
        assert_eq!(at("192.0.2.7"), at("::ffff:192.0.2.7"));
        assert_ne!(at("192.0.2.7"), at("192.0.2.8"));
        assert_eq!(at("2001:db8:1:2::1"), at("2001:db8:1:2:ffff::9"));
        assert_ne!(at("2001:db8:1:2::1"), at("2001:db8:1:3::1"));
        assert_eq!(Caller::of(None), Caller::Unknown);
    }

    #[test]
    fn a_caller_is_blocked_past_its_budget_and_others_are_not() {
        let t = InvalidTokenThrottle::per_minute(NonZeroU32::new(3).unwrap());
        let a = at("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(t.check(a), Throttled::No);
            assert_eq!(t.invalid(a), Throttled::No);
        }
        let Throttled::For(wait) = t.invalid(a) else {
            panic!("the fourth invalid answer is over budget");
        };
        assert!(wait <= Duration::from_secs(20), "{wait:?}");
        assert!(matches!(t.check(a), Throttled::For(_)));
        assert_eq!(t.check(at("192.0.2.2")), Throttled::No);
        assert_eq!(t.invalid(at("192.0.2.2")), Throttled::No);
    }

    #[test]
    fn idle_callers_are_swept() {
        // At 600,000 a minute a budget refills within 100 µs.
        let t = InvalidTokenThrottle::per_minute(NonZeroU32::new(600_000).unwrap());
        for i in 0..100u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(t.invalid(Caller::Address(ip)), Throttled::No);
        }
        assert_eq!(t.tracked(), 100);
        // Lets the budgets refill (not synchronization: time must pass).
        std::thread::sleep(Duration::from_millis(5));
        t.sweep();
        assert_eq!(t.tracked(), 0);
    }
}
