//! Brute-force throttling: a client address that presents too many invalid
//! tokens is answered 429 (`RESOURCE_EXHAUSTED` on gRPC), with
//! `Retry-After`, before its requests cost an Authorize call.
//!
//! One token bucket per client: it holds `--invalid-token-rate` credits
//! and refills at that many per minute; each invalid token spends one, and
//! an empty bucket refuses every request from the address that carries a
//! token, valid or not — an exception for tokens that happen to be valid
//! would itself answer the question a guesser asks. IPv6 clients are keyed
//! by their /64, which one host usually controls whole.
//!
//! `governor`, the usual rate-limiting crate, spends a credit on every check;
//! this needs a check that spends nothing (is the address blocked?) and a
//! spend only on an invalid answer, so it is written here, small and
//! bounded: the table keeps at most [`MAX_CLIENTS`] addresses, dropping
//! those whose bucket has refilled first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

/// Most client addresses tracked at once.
pub const MAX_CLIENTS: usize = 65_536;

/// Per-address throttling of invalid tokens.
#[derive(Debug)]
pub struct Throttle {
    /// Credits (and refills per minute); 0 disables throttling.
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    /// Some address has spent credits: until then (the usual case) a check
    /// takes no lock.
    active: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    credits: f64,
    at: Instant,
}

impl Throttle {
    /// Allows `per_minute` invalid tokens per client address per minute
    /// (as a burst, refilled continuously); 0: unlimited.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
            active: AtomicBool::new(false),
        }
    }

    fn key(addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut segments = v6.segments();
                    segments[4..].fill(0);
                    IpAddr::from(segments)
                }
            },
            v4 => v4,
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let rate = f64::from(self.per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.credits = (bucket.credits + elapsed * rate).min(f64::from(self.per_minute));
        bucket.at = now;
    }

    /// `Err(seconds)` while `addr` may not present a token.
    pub fn check(&self, addr: IpAddr) -> Result<(), u64> {
        if self.per_minute == 0 || !self.active.load(Ordering::Relaxed) {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let Some(bucket) = buckets.get_mut(&Self::key(addr)) else {
            return Ok(());
        };
        self.refill(bucket, now);
        if bucket.credits >= 1.0 {
            return Ok(());
        }
        let missing = 1.0 - bucket.credits;
        let seconds = (missing * 60.0 / f64::from(self.per_minute)).ceil();
        Err(seconds as u64)
    }

    /// Spends a credit of `addr` for an invalid token.
    pub fn invalid(&self, addr: IpAddr) {
        if self.per_minute == 0 {
            return;
        }
        let now = Instant::now();
        let full = f64::from(self.per_minute);
        let mut buckets = self.buckets.lock();
        self.active.store(true, Ordering::Relaxed);
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&Self::key(addr)) {
            self.sweep(&mut buckets, now);
        }
        let bucket = buckets.entry(Self::key(addr)).or_insert(Bucket {
            credits: full,
            at: now,
        });
        self.refill(bucket, now);
        bucket.credits = (bucket.credits - 1.0).max(0.0);
        if bucket.credits < 1.0 {
            metrics::counter!("fluxgate_clients_throttled_total").increment(1);
        }
    }

    /// Drops addresses whose bucket has refilled; if none has, the table
    /// is full of throttled clients and starts over (logged: it means an
    /// attack from more addresses than are tracked).
    fn sweep(&self, buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let full = f64::from(self.per_minute);
        let rate = full / 60.0;
        buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.credits + elapsed * rate < full
        });
        if buckets.len() >= MAX_CLIENTS {
            tracing::warn!(
                clients = buckets.len(),
                "invalid-token throttle table full; forgetting every client"
            );
            buckets.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_tokens_beyond_the_rate_block_the_address() {
        let t = Throttle::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..2 {
            t.invalid(a);
            assert!(t.check(a).is_ok());
        }
        t.invalid(a);
        let wait = t.check(a).unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        assert!(t.check(b).is_ok(), "other clients are not affected");
    }

    #[test]
    fn ipv6_is_keyed_by_its_64() {
        let t = Throttle::new(1);
        t.invalid("2001:db8::1".parse().unwrap());
        assert!(t.check("2001:db8::ffff:1".parse().unwrap()).is_err());
        assert!(t.check("2001:db8:0:1::1".parse().unwrap()).is_ok());
        t.invalid("::ffff:192.0.2.9".parse().unwrap());
        assert!(t.check("192.0.2.9".parse().unwrap()).is_err());
    }

    #[test]
    fn zero_disables_and_the_table_is_bounded() {
        let off = Throttle::new(0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10 {
            off.invalid(a);
        }
        assert!(off.check(a).is_ok());
        let t = Throttle::new(1);
        for i in 0..(MAX_CLIENTS as u32 + 10) {
            t.invalid(IpAddr::from(i.to_be_bytes()));
        }
        assert!(t.buckets.lock().len() <= MAX_CLIENTS);
    }
}
