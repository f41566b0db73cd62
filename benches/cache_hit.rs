//! The decision cache's hit path, its memory per entry, and hits while the
//! table is full and evicting.
//!
//! - `cache_hit/*` (criterion): one `check` answered from a warm cache —
//!   hashing the token (keyed SipHash-2-4, 128 bits), the table lookup, the
//!   invalidation check, building the verdict. Target: under 1 µs with a
//!   100,000-token working set. `one_token` repeats one hot token;
//!   `rotating_{10k,100k,1m}_tokens` cycle through that many cached tokens,
//!   so most lookups miss the CPU caches; `fingerprint` is the hashing part
//!   alone and `sha512` what hashing cost before (the token store's hash).
//! - `memory_per_entry` (printed first): the resident memory 10,000,
//!   100,000 and 1,000,000 cached decisions add, read from
//!   `/proc/self/status`, one decision per token and four per token, each
//!   in a fresh child process so freed memory of one cannot hide the cost of
//!   the next. Target: at most 256 bytes per decision at 1,000,000 (aim 128).
//! - `churn` (printed after the memory): a table bounded at 1,000,000
//!   decisions and full; for a few seconds two tasks check tokens of a hot
//!   set of 100,000 (hits) while a third keeps asking about new tokens
//!   (misses whose answers evict): hit latency p50/p99, hits and
//!   evictions per second.
//!
//! `cargo bench --bench cache_hit` runs all; `-- cache_hit` runs only the
//! criterion part, `-- memory` only the memory, `-- churn` only the churn.

#[allow(dead_code, clippy::unwrap_used)]
#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::Criterion;
use fluxgate::authz::cache::{CacheConfig, CachedAuthorizer};
use fluxgate::authz::key::Fingerprint;
use fluxgate::authz::{Authorizer, AuthzError, Need, NeedDecision, Verdict};
use fluxgate::credentials::Token;
use futures_util::StreamExt as _;

/// Decisions in the largest memory measurement and the churn table.
const MILLION: usize = 1_000_000;
/// The child-process switch of the memory and churn measurements.
const SCENARIO_ENV: &str = "FLUXGATE_BENCH_CACHE_SCENARIO";

/// Allows everything; the subject is a UUID derived from the token, like a
/// real token id (36 characters).
#[derive(Debug)]
struct AllowAll;

#[async_trait]
impl Authorizer for AllowAll {
    async fn check(&self, token: &Token, needs: &[Need]) -> Result<Verdict, AuthzError> {
        let hash = token.hash();
        let mut n = [0u8; 16];
        n.copy_from_slice(&hash.as_bytes()[16..32]);
        let subject: Arc<str> = Arc::from(uuid::Uuid::from_bytes(n).to_string());
        Ok(Verdict {
            cache: fluxgate::authz::CacheUse::None,
            decisions: vec![NeedDecision::Allowed { subject }; needs.len()],
            expires_at: None,
            reusable_until: None,
        })
    }

    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A token shaped like fluxgate's (prefix + 64 base64 characters).
fn token(i: usize) -> Token {
    Token::new(format!("fgdb_{i:0>64}").into_bytes()).expect("non-empty")
}

fn new_cache(max_entries: u64) -> CachedAuthorizer {
    CachedAuthorizer::new(
        Arc::new(AllowAll),
        CacheConfig {
            allow_ttl: Duration::from_secs(3600),
            deny_ttl: Duration::from_secs(3600),
            disconnected_ttl: Duration::from_secs(3600),
            max_entries,
            ..CacheConfig::default()
        },
    )
}

fn needs(databases: usize) -> Vec<Need> {
    (0..databases)
        .map(|d| Need::read(format!("db{d}")))
        .collect()
}

/// Fills `cache` with tokens `from..to` × `databases` read decisions.
async fn fill(cache: &CachedAuthorizer, from: usize, to: usize, databases: usize) {
    let needs = &needs(databases);
    futures_util::stream::iter(from..to)
        .for_each_concurrent(64, |i| async move {
            cache.check(&token(i), needs).await.expect("allowed");
        })
        .await;
    cache.run_maintenance().await;
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime")
}

/// In the child: fill a cache with `decisions` per `shape` and print bytes
/// per decision.
fn measure(shape: &str, decisions: usize) {
    let databases = if shape == "four-per-token" { 4 } else { 1 };
    let tokens = decisions / databases;
    runtime(2).block_on(async {
        let cache = new_cache(decisions as u64 + decisions as u64 / 10);
        // Warm the allocator and the runtime with a small fill elsewhere.
        fill(&new_cache(10_000), 0, 1000, 1).await;
        let before = support::resident_bytes();
        fill(&cache, 0, tokens, databases).await;
        let after = support::resident_bytes();
        let entries = cache.entry_count();
        println!(
            "memory_per_entry/{shape}/{decisions}: {entries} entries ({tokens} tokens × {databases} databases), \
             RSS +{:.1} MiB, {} bytes per decision",
            (after - before) as f64 / f64::from(1 << 20),
            (after - before) / entries.max(1)
        );
    });
}

/// In the child: hits on a hot set while new tokens evict (see the header).
fn churn() {
    const HOT: usize = 100_000;
    const SECS: u64 = 4;
    runtime(2).block_on(async {
        let cache = new_cache(MILLION as u64);
        fill(&cache, 0, MILLION, 1).await;
        let stop = Arc::new(AtomicBool::new(false));
        let inserted = Arc::new(AtomicU64::new(0));
        let churner = {
            let (cache, stop, inserted) = (cache.clone(), Arc::clone(&stop), Arc::clone(&inserted));
            tokio::spawn(async move {
                let need = needs(1);
                let mut next = MILLION;
                while !stop.load(Ordering::Relaxed) {
                    cache.check(&token(next), &need).await.expect("allowed");
                    next += 1;
                    inserted.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let hitters: Vec<_> = (0..2)
            .map(|h| {
                let (cache, stop) = (cache.clone(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let need = needs(1);
                    let tokens: Vec<Token> = (0..HOT).map(token).collect();
                    let mut latency = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
                    let (mut hits, mut misses) = (0u64, 0u64);
                    let mut i = h * 7919;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..256 {
                            let t = &tokens[i % HOT];
                            i += 1;
                            let started = Instant::now();
                            let v = cache.check(t, &need).await.expect("allowed");
                            let ns = started.elapsed().as_nanos() as u64;
                            if v.cache == fluxgate::authz::CacheUse::Hit {
                                hits += 1;
                                let _ = latency.record(ns);
                            } else {
                                misses += 1;
                            }
                        }
                        tokio::task::yield_now().await;
                    }
                    (latency, hits, misses)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(SECS)).await;
        stop.store(true, Ordering::Relaxed);
        let _ = churner.await;
        let mut latency = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
        let (mut hits, mut misses) = (0, 0);
        for h in hitters {
            let (l, h, m) = h.await.expect("hitter");
            latency.add(l).expect("same precision");
            hits += h;
            misses += m;
        }
        cache.run_maintenance().await;
        println!(
            "churn/1m_full: {} entries (bound 1,000,000); hot set {HOT} tokens: {:.0} hits/s, \
             hit p50 {} ns, p99 {} ns, {misses} hot misses (evicted hot entries asked again); \
             {:.0} new decisions/s, each evicting one",
            cache.entry_count(),
            hits as f64 / SECS as f64,
            latency.value_at_quantile(0.5),
            latency.value_at_quantile(0.99),
            inserted.load(Ordering::Relaxed) as f64 / SECS as f64,
        );
    });
}

/// Runs `scenario` in a child process and prints what it prints.
fn child(scenario: &str) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    match std::process::Command::new(&exe)
        .env(SCENARIO_ENV, scenario)
        .output()
    {
        Ok(out) => {
            print!("{}", String::from_utf8_lossy(&out.stdout));
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Err(e) => eprintln!("{scenario}: cannot run: {e}"),
    }
}

fn hits(c: &mut Criterion) {
    let rt = runtime(1);
    let mut group = c.benchmark_group("cache_hit");
    let tokens: Vec<Token> = (0..MILLION).map(token).collect();
    group.bench_function("fingerprint", |b| {
        b.iter(|| Fingerprint::of(std::hint::black_box(&tokens[0])));
    });
    group.bench_function("sha512", |b| {
        b.iter(|| std::hint::black_box(&tokens[0]).hash());
    });
    let need = [Need::read("db0")];
    for (name, warm_tokens) in [
        ("one_token", 1),
        ("rotating_10k_tokens", 10_000),
        ("rotating_100k_tokens", 100_000),
        ("rotating_1m_tokens", MILLION),
    ] {
        let warm = new_cache(warm_tokens as u64 * 2);
        rt.block_on(fill(&warm, 0, warm_tokens, 1));
        // Timed inside one task: the figure is the check alone, without the
        // cost of entering the runtime for every iteration.
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (warm, tokens, need) = (&warm, &tokens, &need);
                async move {
                    let start = Instant::now();
                    for i in 0..iters {
                        let t = &tokens[(i as usize) % warm_tokens];
                        std::hint::black_box(warm.check(t, need).await.expect("hit"));
                    }
                    start.elapsed()
                }
            });
        });
        assert_eq!(
            warm.stats().inner_calls,
            warm_tokens as u64,
            "every benchmarked check was a hit"
        );
    }
    group.finish();
}

fn main() {
    if let Ok(scenario) = std::env::var(SCENARIO_ENV) {
        match scenario.split_once(':') {
            Some((shape, n)) => measure(shape, n.parse().expect("a count")),
            None => churn(),
        }
        return;
    }
    // A filter argument selects what runs, as criterion does.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wants = |name: &str| {
        filter
            .as_deref()
            .is_none_or(|f| name.starts_with(f) || f.starts_with(name))
    };
    if wants("memory_per_entry") {
        for decisions in [10_000, 100_000, MILLION] {
            for shape in ["one-per-token", "four-per-token"] {
                child(&format!("{shape}:{decisions}"));
            }
        }
    }
    if wants("churn") {
        child("churn");
    }
    if wants("cache_hit") {
        let mut c = Criterion::default().configure_from_args();
        hits(&mut c);
        c.final_summary();
    }
}
