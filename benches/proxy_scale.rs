//! The proxy at scale: `fluxgate proxy` serving while its decision cache
//! holds 10,000, 100,000 and 1,000,000 decisions, and while it evicts.
//!
//! `cargo bench --bench proxy_scale` seeds one SQLite token store with the
//! largest size plus `FLUXGATE_PROXY_SCALE_FRESH` (200,000) more database
//! tokens (batches of `Write::Create`, as `tokens_scale` does), keeping
//! every token string in memory only, and serves it from this process
//! over tonic on 127.0.0.1, as `fluxgate authz` does. An upstream in this
//! process answers every write with 204. Then, for each size N, a fresh
//! `fluxgate proxy` (the binary built with this benchmark, or
//! `FLUXGATE_BENCH_BIN`) with `--cache-max-entries N` is measured in three
//! steps, 32 keep-alive HTTP/1.1 connections each, every request a
//! one-line `POST /write?db=bench` that must be answered 204:
//!
//! 1. **fill**: tokens 0…N once each, so every request is a miss that asks
//!    the token service and adds one decision. Fill rate, and the proxy's
//!    resident set before and after (`VmRSS` of `/proc/<pid>/status`), per
//!    decision.
//! 2. **hits**: for `FLUXGATE_BENCH_SECS` (5), a uniformly random token of
//!    the N on every request: lookups spread over the whole table, all
//!    hits but for the few decisions evicted while it filled. Requests/s, p50, p99, the proxy's CPU per 10,000 requests.
//! 3. **churn**: for as long, 28 connections send random tokens of a hot
//!    tenth of the N (the last filled) while 4 send tokens never seen, each
//!    once: each of those is a miss whose decision evicts another, with the
//!    table full. Both groups' requests/s, p50 and p99, evictions/s (misses
//!    the table did not grow by, from the proxy's `/metrics`), the resident
//!    set after.
//!
//! Results go to `target/bench-results/proxy_scale.txt`. Settings:
//! `FLUXGATE_PROXY_SCALE_SIZES` (`10000,100000,1000000`),
//! `FLUXGATE_PROXY_SCALE_FRESH`, `FLUXGATE_BENCH_SECS`,
//! `FLUXGATE_BENCH_BIN`, `FLUXGATE_BENCH_RESULTS`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fluxgate::tokens::model::{DatabasePermission, TokenKind};
use fluxgate::tokens::store::TokenStore;
use fluxgate::tokens::{SqliteStore, TokenRegistry, server};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use support::{
    CpuMeter, ProcessGuard, RunResult, admin_metrics, clean_command, clock_ticks, drive_http1,
    fluxgate_binary, free_port, machine, merge, metric, opt, resident_bytes_of, results_dir,
    serve_http1, setting, table,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const DB: &str = "bench";
const CONNECTIONS: usize = 32;
/// Of the churn step's connections, those that send tokens never seen.
const FRESH_CONNECTIONS: usize = 4;

/// Which token each request of one connection carries.
enum Pick {
    /// Tokens `next, next + step, …` below `end`, each once.
    Each {
        next: usize,
        step: usize,
        end: usize,
    },
    /// A uniformly random token of `low..low + len` (xorshift state).
    Random { low: usize, len: usize, state: u64 },
}

impl Pick {
    fn next(&mut self) -> Option<usize> {
        match self {
            Pick::Each { next, step, end } => {
                let at = *next;
                *next += *step;
                (at < *end).then_some(at)
            }
            Pick::Random { low, len, state } => {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                Some(*low + (*state % *len as u64) as usize)
            }
        }
    }

    /// `CONNECTIONS` picks that share tokens `low..end` out, each once.
    fn each(low: usize, end: usize, connections: usize) -> Vec<Pick> {
        (0..connections)
            .map(|k| Pick::Each {
                next: low + k,
                step: connections,
                end,
            })
            .collect()
    }

    fn random(low: usize, len: usize, connections: usize, seed: u64) -> Vec<Pick> {
        (0..connections as u64)
            .map(|k| Pick::Random {
                low,
                len,
                state: (seed + k + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            })
            .collect()
    }
}

/// Fails the run on any error: every request must have been answered 204.
fn check(result: &RunResult, what: &str) {
    assert!(
        result.errors == 0,
        "{what}: {} errors, first: {:?}",
        result.errors,
        result.first_error
    );
}

/// Sends writes to `addr`, one connection per pick, until each pick runs
/// out or `until` passes; the groups of `split` (connection counts, in
/// order) are measured apart.
async fn drive(
    addr: SocketAddr,
    tokens: &Arc<Vec<HeaderValue>>,
    picks: Vec<Pick>,
    until: Option<Instant>,
    split: &[usize],
) -> Vec<RunResult> {
    let started = Instant::now();
    let host = HeaderValue::from_str(&addr.to_string()).unwrap();
    let workers: Vec<_> = picks
        .into_iter()
        .map(|mut pick| {
            let (tokens, host) = (Arc::clone(tokens), host.clone());
            move || {
                let request = Request::post(format!("/write?db={DB}&precision=s"))
                    .header(header::HOST, host.clone())
                    .header(header::AUTHORIZATION, tokens[pick.next()?].clone())
                    .body(Full::new(Bytes::from_static(b"m v=1i 1\n")))
                    .unwrap();
                Some((request, StatusCode::NO_CONTENT))
            }
        })
        .collect();
    let outputs = drive_http1(addr, workers, until).await;
    let seconds = started.elapsed().as_secs_f64();
    let mut outputs = outputs.into_iter();
    split
        .iter()
        .map(|&n| merge(outputs.by_ref().take(n), seconds))
        .collect()
}

/// One size's figures.
#[derive(Default)]
struct Figures {
    decisions: usize,
    fill_s: f64,
    fill_rps: f64,
    rss_before_mib: f64,
    rss_full_mib: f64,
    bytes_per_decision: f64,
    entries_full: f64,
    hit_rps: f64,
    hit_p50_ms: f64,
    hit_p99_ms: f64,
    hit_cpu_per_10k: f64,
    hit_misses: f64,
    churn_hot_rps: f64,
    churn_hot_p50_ms: f64,
    churn_hot_p99_ms: f64,
    churn_fresh_rps: f64,
    churn_fresh_p50_ms: f64,
    churn_fresh_p99_ms: f64,
    evictions_per_s: f64,
    entries_after_churn: f64,
    rss_after_churn_mib: f64,
}

/// The proxy's cache counters now: (entries, hits, misses).
async fn cache_counters(admin: u16) -> (f64, f64, f64) {
    let text = admin_metrics(admin).await.expect("the proxy's /metrics");
    let get = |name| metric(&text, name).unwrap_or(0.0);
    (
        get("fluxgate_cache_entries"),
        get("fluxgate_cache_hits_total"),
        get("fluxgate_cache_misses_total"),
    )
}

/// Measures a fresh proxy with room for `n` decisions.
async fn measure(
    n: usize,
    fresh: std::ops::Range<usize>,
    tokens: &Arc<Vec<HeaderValue>>,
    ends: (SocketAddr, SocketAddr, &Path),
    secs: f64,
) -> Figures {
    let (authz, upstream, dir) = ends;
    let listen = free_port();
    let admin = free_port();
    let log_path = dir.join(format!("proxy-{n}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = clean_command(&fluxgate_binary());
    cmd.args(["proxy", "--authz", &format!("http://{authz}")])
        .arg("--authz-token-file")
        .arg(dir.join("proxy-token"))
        .args([
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--upstream",
            &format!("http://{upstream}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
            "--cache-max-entries",
            &n.to_string(),
            // Nothing expires while a million decisions are filled.
            "--cache-allow-ttl",
            "1h",
            "--log-level",
            "warn",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut proxy = ProcessGuard::new("fluxgate proxy", cmd.spawn().expect("start fluxgate"));
    proxy.wait_for_port(listen, &log_path);
    let pid = proxy.pid();
    let addr = SocketAddr::from(([127, 0, 0, 1], listen));
    let mut f = Figures {
        decisions: n,
        ..Figures::default()
    };

    // The connections, buffers and pools exist before the baseline: 32
    // requests with one token.
    let warm = drive(
        addr,
        tokens,
        Pick::each(0, CONNECTIONS, CONNECTIONS),
        None,
        &[CONNECTIONS],
    )
    .await;
    check(&warm[0], "warm-up");
    let before = resident_bytes_of(pid);

    let started = Instant::now();
    let fill = drive(
        addr,
        tokens,
        Pick::each(0, n, CONNECTIONS),
        None,
        &[CONNECTIONS],
    )
    .await;
    check(&fill[0], "fill");
    f.fill_s = started.elapsed().as_secs_f64();
    f.fill_rps = n as f64 / f.fill_s;
    let full = resident_bytes_of(pid);
    f.rss_before_mib = before as f64 / 1048576.0;
    f.rss_full_mib = full as f64 / 1048576.0;
    f.bytes_per_decision = full.saturating_sub(before) as f64 / n as f64;
    let (entries, _, misses_full) = cache_counters(admin).await;
    f.entries_full = entries;

    let cpu = CpuMeter::start(vec![pid], clock_ticks());
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let hits = drive(
        addr,
        tokens,
        Pick::random(0, n, CONNECTIONS, 1),
        Some(until),
        &[CONNECTIONS],
    )
    .await;
    check(&hits[0], "hits");
    let cpu_s = cpu.seconds();
    let (_, _, misses_hits) = cache_counters(admin).await;
    f.hit_rps = hits[0].rps();
    f.hit_p50_ms = hits[0].p50_us / 1e3;
    f.hit_p99_ms = hits[0].p99_us / 1e3;
    f.hit_cpu_per_10k = cpu_s * 10_000.0 / hits[0].requests.max(1) as f64;
    f.hit_misses = misses_hits - misses_full;

    let hot = (n / 10).max(1);
    let mut picks = Pick::random(n - hot, hot, CONNECTIONS - FRESH_CONNECTIONS, 2);
    picks.extend(Pick::each(fresh.start, fresh.end, FRESH_CONNECTIONS));
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let churn = drive(
        addr,
        tokens,
        picks,
        Some(until),
        &[CONNECTIONS - FRESH_CONNECTIONS, FRESH_CONNECTIONS],
    )
    .await;
    check(&churn[0], "churn, hot tokens");
    check(&churn[1], "churn, new tokens");
    let (entries_after, _, misses_after) = cache_counters(admin).await;
    f.churn_hot_rps = churn[0].rps();
    f.churn_hot_p50_ms = churn[0].p50_us / 1e3;
    f.churn_hot_p99_ms = churn[0].p99_us / 1e3;
    f.churn_fresh_rps = churn[1].rps();
    f.churn_fresh_p50_ms = churn[1].p50_us / 1e3;
    f.churn_fresh_p99_ms = churn[1].p99_us / 1e3;
    f.evictions_per_s =
        ((misses_after - misses_hits) - (entries_after - entries)).max(0.0) / churn[0].seconds;
    f.entries_after_churn = entries_after;
    f.rss_after_churn_mib = resident_bytes_of(pid) as f64 / 1048576.0;
    proxy.stop();
    f
}

/// Seeds `n` database tokens (write on `bench`) into a new SQLite store in
/// `dir`; returns their `Authorization` header values.
async fn seed(dir: &Path, n: usize) -> Vec<HeaderValue> {
    let write = DatabasePermission {
        database: DB.into(),
        read: false,
        write: true,
    };
    let mut tokens = Vec::with_capacity(n);
    support::seed_database_tokens(dir, n, &[write], |_, token| {
        let mut value = HeaderValue::from_str(&format!("Token {token}")).unwrap();
        value.set_sensitive(true);
        tokens.push(value);
    })
    .await;
    tokens
}

async fn upstream(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let _ = request.into_body().collect().await;
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

fn report(all: &[Figures], secs: f64, fresh: usize) -> String {
    let fill: Vec<Vec<String>> = all
        .iter()
        .map(|f| {
            vec![
                f.decisions.to_string(),
                format!("{:.1}", f.fill_s),
                format!("{:.0}", f.fill_rps),
                format!("{:.0}", f.entries_full),
                format!("{:.1}", f.rss_before_mib),
                format!("{:.1}", f.rss_full_mib),
                format!("{:.0}", f.bytes_per_decision),
            ]
        })
        .collect();
    let hits: Vec<Vec<String>> = all
        .iter()
        .map(|f| {
            vec![
                f.decisions.to_string(),
                format!("{:.0}", f.hit_rps),
                format!("{:.2}", f.hit_p50_ms),
                format!("{:.2}", f.hit_p99_ms),
                opt(Some(f.hit_cpu_per_10k), 3),
                format!("{:.0}", f.hit_misses),
            ]
        })
        .collect();
    let churn: Vec<Vec<String>> = all
        .iter()
        .map(|f| {
            vec![
                f.decisions.to_string(),
                format!("{:.0}", f.churn_hot_rps),
                format!("{:.2} / {:.2}", f.churn_hot_p50_ms, f.churn_hot_p99_ms),
                format!("{:.0}", f.churn_fresh_rps),
                format!("{:.2} / {:.2}", f.churn_fresh_p50_ms, f.churn_fresh_p99_ms),
                format!("{:.0}", f.evictions_per_s),
                format!("{:.0}", f.entries_after_churn),
                format!("{:.1}", f.rss_after_churn_mib),
            ]
        })
        .collect();
    format!(
        "fluxgate proxy at scale — {}\n{CONNECTIONS} connections; hits and churn {secs} s each; \
         {fresh} tokens kept for the churn\n\nFill (every request a miss):\n{}\n\
         Hits (uniformly random token of all N):\n{}\n\
         Churn (28 connections on the hot tenth, {FRESH_CONNECTIONS} on new tokens):\n{}",
        machine(),
        table(
            &[
                "decisions",
                "fill s",
                "fill req/s",
                "entries",
                "RSS before MiB",
                "RSS full MiB",
                "bytes/decision",
            ],
            &fill,
        ),
        table(
            &[
                "decisions",
                "req/s",
                "p50 ms",
                "p99 ms",
                "CPU s/10k req",
                "misses"
            ],
            &hits,
        ),
        table(
            &[
                "decisions",
                "hot req/s",
                "hot p50 / p99 ms",
                "new req/s",
                "new p50 / p99 ms",
                "evictions/s",
                "entries after",
                "RSS after MiB",
            ],
            &churn,
        ),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; anything else is a filter we ignore.
    let sizes: Vec<usize> = std::env::var("FLUXGATE_PROXY_SCALE_SIZES")
        .unwrap_or_else(|_| "10000,100000,1000000".to_owned())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("FLUXGATE_PROXY_SCALE_SIZES: numbers")
        })
        .collect();
    let fresh: usize = setting("FLUXGATE_PROXY_SCALE_FRESH", 200_000);
    let secs: f64 = setting("FLUXGATE_BENCH_SECS", 5.0);
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let tmp = tempfile::Builder::new()
        .prefix("fluxgate-proxy-scale-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = runtime.block_on(async {
        println!("proxy at scale — {}", machine());
        let started = Instant::now();
        let store_dir = dir.join("tokens");
        let tokens = Arc::new(seed(&store_dir, largest + fresh).await);
        println!(
            "{} tokens seeded in {:.1} s",
            tokens.len(),
            started.elapsed().as_secs_f64()
        );
        let store: Arc<dyn TokenStore> = Arc::new(SqliteStore::open(&store_dir).await.unwrap());
        let registry = TokenRegistry::open(store).await.unwrap();
        let (_, proxy_token) = registry
            .create(TokenKind::Proxy, "proxy scale".into(), vec![], None)
            .await
            .unwrap();
        support::write_secret(&dir.join("proxy-token"), proxy_token.into_string().as_bytes());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authz = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let serving = tokio::spawn({
            let (registry, stop) = (Arc::clone(&registry), stop.clone());
            async move { server::serve(listener, registry, stop.cancelled_owned()).await }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = listener.local_addr().unwrap();
        tokio::spawn(serve_http1(listener, upstream));

        let mut all = Vec::new();
        for &n in &sizes {
            println!("{n} decisions: filling…");
            let f = measure(
                n,
                largest..largest + fresh,
                &tokens,
                (authz, upstream_addr, dir),
                secs,
            )
            .await;
            println!(
                "{n}: fill {:.0}/s, {:.0} B/decision; hits {:.0}/s p50 {:.2} ms; churn hot {:.0}/s p99 {:.2} ms, new {:.0}/s, {:.0} evictions/s",
                f.fill_rps,
                f.bytes_per_decision,
                f.hit_rps,
                f.hit_p50_ms,
                f.churn_hot_rps,
                f.churn_hot_p99_ms,
                f.churn_fresh_rps,
                f.evictions_per_s
            );
            all.push(f);
        }
        stop.cancel();
        let _ = serving.await;
        report(&all, secs, fresh)
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    println!("\n{text}");
    let path = results_dir().join("proxy_scale.txt");
    std::fs::write(&path, &text).unwrap();
    println!("written to {}", path.display());
}
