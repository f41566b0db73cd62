//! Counters that every serving thread adds to, each thread on a cache line
//! of its own, summed when read.
//!
//! An atomic that two cores add to moves its cache line between them at
//! every add, which costs far more than the add. A [`Striped`] counter
//! spreads the adds over [`STRIPES`] lines, 128 bytes apart (a line and
//! the neighbour some cores fetch with it): each thread adds to one stripe,
//! handed out in turn when it first counts, so threads share a stripe only
//! past [`STRIPES`] of them. The adds stay atomic, so a count is never
//! lost, whoever shares a stripe. Reading sums the stripes: exact once the
//! adds it should see have happened, as for any relaxed counter.
//!
//! The per-request metrics ([`super::requests`]) need label sets and
//! histograms, and are counted per thread without atomic adds; this is for
//! plain counters counted on the hot path from code that knows no thread.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Stripes per counter.
const STRIPES: usize = 16;

/// One stripe, alone on its lines.
#[derive(Debug)]
#[repr(align(128))]
struct Stripe(AtomicU64);

/// A counter added to from many threads at once.
#[derive(Debug)]
pub struct Striped {
    stripes: [Stripe; STRIPES],
}

impl Default for Striped {
    fn default() -> Self {
        Self::new()
    }
}

impl Striped {
    /// A counter at zero.
    pub const fn new() -> Self {
        Self {
            stripes: [const { Stripe(AtomicU64::new(0)) }; STRIPES],
        }
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.stripes[stripe()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The sum of every add so far.
    pub fn sum(&self) -> u64 {
        self.stripes
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

/// This thread's stripe: handed out in turn at its first count; the first
/// while its storage is torn down (the add is atomic either way).
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.try_with(|s| *s).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_from_many_threads_are_all_counted() {
        // Four times as many threads as stripes, all adding at once from a
        // barrier, so stripes are shared: a load and a store in place of the
        // atomic add lose counts here. Thread t adds t + 1 each time.
        const THREADS: u64 = 4 * STRIPES as u64;
        const ADDS: u64 = 20_000;
        let counter = Striped::new();
        let start = std::sync::Barrier::new(THREADS as usize);
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let (counter, start) = (&counter, &start);
                scope.spawn(move || {
                    start.wait();
                    for _ in 0..ADDS {
                        counter.add(t + 1);
                    }
                });
            }
        });
        assert_eq!(counter.sum(), ADDS * THREADS * (THREADS + 1) / 2);
    }

    #[test]
    fn a_thread_keeps_its_stripe_alone_on_its_lines() {
        assert_eq!(std::mem::align_of::<Stripe>(), 128);
        let here = stripe();
        assert_eq!(stripe(), here, "a thread keeps its stripe");
    }
}
