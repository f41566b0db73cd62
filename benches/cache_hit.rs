//! The decision cache's hit path, and its memory per entry.
//!
//! - `cache_hit/*` (criterion): one `check` answered from a warm cache —
//!   hashing the token (SHA-512), building the key, the moka lookup, the
//!   invalidation check. Target: under 1 µs. `one_token` repeats one hot
//!   token; `rotating_100k_tokens` cycles through 100,000 cached tokens, so
//!   most of each lookup misses the CPU caches; `sha512_fingerprint` is the
//!   hashing part alone.
//! - `memory_per_entry` (printed before the criterion runs): the resident
//!   memory a million cached decisions add, read from `/proc/self/status`,
//!   each scenario in a fresh child process so freed memory of one cannot
//!   hide the cost of the next.
//!
//! `cargo bench --bench cache_hit` runs both; `-- cache_hit` skips the
//! memory measurement, `-- memory` runs only it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::Criterion;
use fluxgate::authz::cache::{CacheConfig, CachedAuthorizer};
use fluxgate::authz::key::Fingerprint;
use fluxgate::authz::{Authorizer, AuthzError, Need, NeedDecision, Verdict};
use fluxgate::credentials::Token;
use futures_util::StreamExt as _;

/// Entries in the memory measurement.
const ENTRIES: usize = 1_000_000;
/// Tokens cached for the rotating hit benchmark.
const WARM_TOKENS: usize = 100_000;
/// The child-process switch of the memory measurement.
const SCENARIO_ENV: &str = "FLUXGATE_BENCH_MEMORY_SCENARIO";

/// Allows everything; the subject is a UUID derived from the token, like a
/// real token id (36 bytes).
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

/// Fills `cache` with `tokens × databases` read decisions.
async fn fill(cache: &CachedAuthorizer, tokens: usize, databases: usize) {
    let needs: Vec<Need> = (0..databases)
        .map(|d| Need::read(format!("db{d}")))
        .collect();
    let needs = &needs;
    futures_util::stream::iter(0..tokens)
        .for_each_concurrent(64, |i| async move {
            cache.check(&token(i), needs).await.expect("allowed");
        })
        .await;
    cache.run_maintenance().await;
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// In the child: fill a cache per `scenario` and print bytes per entry.
fn measure(scenario: &str) {
    let (tokens, databases) = match scenario {
        "one-per-token" => (ENTRIES, 1),
        _ => (ENTRIES / 4, 4),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let cache = new_cache(ENTRIES as u64 + ENTRIES as u64 / 10);
        // Warm the allocator and the runtime with a small fill elsewhere.
        fill(&new_cache(10_000), 1000, 1).await;
        let before = resident_bytes();
        fill(&cache, tokens, databases).await;
        let after = resident_bytes();
        let entries = cache.entry_count();
        println!(
            "memory_per_entry/{scenario}: {entries} entries ({tokens} tokens × {databases} databases), \
             RSS +{} MiB, {} bytes per entry",
            (after - before) / (1 << 20),
            (after - before) / entries.max(1)
        );
    });
}

/// Runs each memory scenario in a child process.
fn memory_per_entry() {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    for scenario in ["one-per-token", "four-per-token"] {
        match std::process::Command::new(&exe)
            .env(SCENARIO_ENV, scenario)
            .output()
        {
            Ok(out) => print!("{}", String::from_utf8_lossy(&out.stdout)),
            Err(e) => eprintln!("memory_per_entry/{scenario}: cannot run: {e}"),
        }
    }
}

fn hits(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let warm = new_cache(WARM_TOKENS as u64 * 2);
    rt.block_on(fill(&warm, WARM_TOKENS, 1));
    let tokens: Vec<Token> = (0..WARM_TOKENS).map(token).collect();
    let need = [Need::read("db0")];

    let mut group = c.benchmark_group("cache_hit");
    group.bench_function("sha512_fingerprint", |b| {
        b.iter(|| Fingerprint::of(std::hint::black_box(&tokens[0])));
    });
    // Timed inside one task: the figure is the check alone, without the
    // cost of entering the runtime for every iteration.
    group.bench_function("one_token", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (warm, token, need) = (&warm, &tokens[0], &need);
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(warm.check(token, need).await.expect("hit"));
                }
                start.elapsed()
            }
        });
    });
    group.bench_function("rotating_100k_tokens", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (warm, tokens, need) = (&warm, &tokens, &need);
            async move {
                let start = Instant::now();
                for i in 0..iters {
                    let t = &tokens[(i as usize) % WARM_TOKENS];
                    std::hint::black_box(warm.check(t, need).await.expect("hit"));
                }
                start.elapsed()
            }
        });
    });
    group.finish();
    let stats = warm.stats();
    assert_eq!(
        stats.inner_calls, WARM_TOKENS as u64,
        "every benchmarked check was a hit"
    );
}

fn main() {
    if let Ok(scenario) = std::env::var(SCENARIO_ENV) {
        measure(&scenario);
        return;
    }
    // A filter argument selects what runs, as criterion does.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter
        .as_deref()
        .is_none_or(|f| "memory_per_entry".contains(f))
    {
        memory_per_entry();
    }
    if filter
        .as_deref()
        .is_none_or(|f| "cache_hit".contains(f) || f.starts_with("cache_hit"))
    {
        let mut c = Criterion::default().configure_from_args();
        hits(&mut c);
        c.final_summary();
    }
}
