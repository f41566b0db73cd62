//! The token service at scale: 10,000, 100,000 and 1,000,000 database
//! tokens in its SQLite store.
//!
//! `cargo bench --bench tokens_scale` seeds, for each size, a fresh SQLite
//! store in a temporary directory (batches of `Write::Create` through the
//! store, one transaction each: what `token create` writes, without one
//! call per token), keeping the token strings of an even sample of up to
//! 10,000 of them. It then re-executes itself as a child process per size
//! (so memory figures are that process's alone), which measures:
//!
//! - start-up: opening the store, and loading every token into the
//!   registry (`TokenRegistry::open`);
//! - memory: resident set growth over the load (`VmRSS` of
//!   `/proc/self/status`), per token;
//! - Authorize over a real tonic server on 127.0.0.1 (`serve_with`, as
//!   `fluxgate authz` serves) from a tonic client in the same process,
//!   4 HTTP/2 connections × 8 streams, for `FLUXGATE_BENCH_SECS` (5):
//!   calls/s, p50 and p99; every answer is checked (valid, permission
//!   granted). The sampled tokens are used in turn, so lookups spread over
//!   the whole table;
//! - listing every token through the management API page by page, at the
//!   default page size (1000) and at the largest (10,000): total time and
//!   p50/p99 per page, every token counted once;
//! - `fluxgate token list --format json` and the table form (the binary
//!   built with this benchmark) to /dev/null-like sinks: wall time, and the
//!   number of ids printed (must be every token).
//!
//! Settings (environment): `FLUXGATE_SCALE_SIZES` (`10000,100000,1000000`),
//! `FLUXGATE_BENCH_SECS` (5), `FLUXGATE_SCALE_CLI` (`off` skips the CLI
//! runs), `FLUXGATE_BENCH_BIN`, `FLUXGATE_BENCH_RESULTS`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fluxgate::proto::iox_authz::AuthorizeRequest;
use fluxgate::proto::iox_authz::iox_authorizer_service_client::IoxAuthorizerServiceClient;
use fluxgate::proto::tokens as pb;
use fluxgate::proto::tokens::token_service_client::TokenServiceClient;
use fluxgate::tokens::model::{DatabasePermission, TokenKind};
use fluxgate::tokens::store::TokenStore;
use fluxgate::tokens::throttle::InvalidTokenThrottle;
use fluxgate::tokens::{SqliteStore, TokenRegistry, server};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const SAMPLE: usize = 10_000;
const CONNECTIONS: usize = 4;
const STREAMS: usize = 8;

/// What a child measured for one size.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Figures {
    tokens: usize,
    seed_s: f64,
    open_s: f64,
    load_s: f64,
    rss_before_mib: f64,
    rss_after_mib: f64,
    bytes_per_token: f64,
    authorize_calls_per_s: f64,
    authorize_p50_us: f64,
    authorize_p99_us: f64,
    authorize_errors: u64,
    list_default_s: f64,
    list_default_pages: usize,
    list_default_page_p50_ms: f64,
    list_default_page_p99_ms: f64,
    list_max_s: f64,
    list_max_pages: usize,
    list_max_page_p50_ms: f64,
    list_max_page_p99_ms: f64,
    cli_json_s: Option<f64>,
    cli_json_ids: Option<usize>,
    cli_table_s: Option<f64>,
    cli_table_rows: Option<usize>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        let dir = Path::new(&args[at + 1]);
        let n: usize = args[at + 2].parse().unwrap();
        let seed_s: f64 = args[at + 3].parse().unwrap();
        let figures = child(dir, n, seed_s);
        println!("{}", serde_json::to_string(&figures).unwrap());
        return;
    }
    // `cargo bench` passes `--bench`; anything else is a filter we ignore.
    let sizes: Vec<usize> = std::env::var("FLUXGATE_SCALE_SIZES")
        .unwrap_or_else(|_| "10000,100000,1000000".to_owned())
        .split(',')
        .map(|s| s.trim().parse().expect("FLUXGATE_SCALE_SIZES: numbers"))
        .collect();
    println!("token service at scale — {}", support::machine());
    let mut all = Vec::new();
    for n in sizes {
        let tmp = tempfile::tempdir().unwrap();
        let seed_s = seed(tmp.path(), n);
        println!("{n} tokens seeded in {seed_s:.1} s; measuring…");
        let exe = std::env::current_exe().unwrap();
        let output = support::clean_command(&exe)
            .args(["--child", tmp.path().to_str().unwrap()])
            .arg(n.to_string())
            .arg(seed_s.to_string())
            .envs(
                std::env::vars()
                    .filter(|(k, _)| k.starts_with("FLUXGATE_BENCH") || k == "FLUXGATE_SCALE_CLI"),
            )
            .stderr(Stdio::inherit())
            .output()
            .expect("run the measuring child");
        assert!(output.status.success(), "child failed: {}", output.status);
        let line = String::from_utf8(output.stdout).unwrap();
        let figures: Figures = serde_json::from_str(line.trim()).expect("child figures");
        println!("{}", serde_json::to_string_pretty(&figures).unwrap());
        all.push(figures);
    }
    let report = report(&all);
    println!("\n{report}");
    let path = support::results_dir().join("tokens_scale.txt");
    std::fs::write(&path, &report).unwrap();
    println!("written to {}", path.display());
}

fn report(all: &[Figures]) -> String {
    let opt = |v: Option<f64>, d: usize| support::opt(v, d);
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|f| {
            vec![
                f.tokens.to_string(),
                format!("{:.1}", f.seed_s),
                format!("{:.2}", f.open_s),
                format!("{:.2}", f.load_s),
                format!("{:.0}", f.bytes_per_token),
                format!("{:.0}", f.authorize_calls_per_s),
                format!("{:.0}", f.authorize_p50_us),
                format!("{:.0}", f.authorize_p99_us),
                format!(
                    "{:.2} ({} p, {:.2}/{:.2} ms)",
                    f.list_default_s,
                    f.list_default_pages,
                    f.list_default_page_p50_ms,
                    f.list_default_page_p99_ms
                ),
                format!(
                    "{:.2} ({} p, {:.1}/{:.1} ms)",
                    f.list_max_s, f.list_max_pages, f.list_max_page_p50_ms, f.list_max_page_p99_ms
                ),
                opt(f.cli_json_s, 2),
                opt(f.cli_table_s, 2),
            ]
        })
        .collect();
    support::table(
        &[
            "tokens",
            "seed s",
            "open s",
            "load s",
            "B/token",
            "Authorize/s",
            "p50 µs",
            "p99 µs",
            "list@1000 s (pages, p50/p99)",
            "list@10000 s (pages, p50/p99)",
            "CLI json s",
            "CLI table s",
        ],
        &rows,
    )
}

fn permissions() -> Vec<DatabasePermission> {
    vec![DatabasePermission {
        database: "bench".into(),
        read: true,
        write: true,
    }]
}

/// Seeds `n` database tokens into a new SQLite store in `dir`; keeps an
/// even sample of their strings in `dir/sample`. Returns the seconds taken.
fn seed(dir: &Path, n: usize) -> f64 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let started = Instant::now();
        let every = (n / SAMPLE).max(1);
        let mut sample = String::new();
        support::seed_database_tokens(dir, n, &permissions(), |i, token| {
            if i % every == 0 {
                sample.push_str(&token);
                sample.push('\n');
            }
        })
        .await;
        support::write_secret(&dir.join("sample"), sample.as_bytes());
        started.elapsed().as_secs_f64()
    })
}

fn child(dir: &Path, n: usize, seed_s: f64) -> Figures {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut f = Figures {
            tokens: n,
            seed_s,
            ..Figures::default()
        };
        let sample: Vec<Vec<u8>> = std::fs::read_to_string(dir.join("sample"))
            .unwrap()
            .lines()
            .map(|l| l.as_bytes().to_vec())
            .collect();
        let before = support::resident_bytes();
        let started = Instant::now();
        let store: Arc<dyn TokenStore> = Arc::new(SqliteStore::open(dir).await.unwrap());
        f.open_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let registry = TokenRegistry::open(store).await.unwrap();
        f.load_s = started.elapsed().as_secs_f64();
        let after = support::resident_bytes();
        f.rss_before_mib = before as f64 / 1048576.0;
        f.rss_after_mib = after as f64 / 1048576.0;
        f.bytes_per_token = after.saturating_sub(before) as f64 / n as f64;

        let (_, mgmt) = registry
            .create(TokenKind::Management, "bench".into(), vec![], None)
            .await
            .unwrap();
        let mgmt = mgmt.into_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let signal = stop.clone();
        let serving = Arc::clone(&registry);
        let server = tokio::spawn(async move {
            server::serve_with(
                listener,
                serving,
                None,
                Arc::new(InvalidTokenThrottle::default()),
                signal.cancelled_owned(),
            )
            .await
            .unwrap();
        });
        let url = format!("http://{addr}");

        authorize(&url, Arc::new(sample), &mut f).await;
        let (s, pages, p50, p99) = list_all(&url, &mgmt, 0, n).await;
        (
            f.list_default_s,
            f.list_default_pages,
            f.list_default_page_p50_ms,
            f.list_default_page_p99_ms,
        ) = (s, pages, p50, p99);
        let (s, pages, p50, p99) = list_all(&url, &mgmt, 10_000, n).await;
        (
            f.list_max_s,
            f.list_max_pages,
            f.list_max_page_p50_ms,
            f.list_max_page_p99_ms,
        ) = (s, pages, p50, p99);
        if std::env::var("FLUXGATE_SCALE_CLI").as_deref() != Ok("off") {
            let token_file = dir.join("management-token");
            support::write_secret(&token_file, mgmt.as_bytes());
            let (s, ids) = cli_list(&url, &token_file, true).await;
            (f.cli_json_s, f.cli_json_ids) = (Some(s), Some(ids));
            let (s, rows) = cli_list(&url, &token_file, false).await;
            (f.cli_table_s, f.cli_table_rows) = (Some(s), Some(rows));
        }
        stop.cancel();
        let _ = server.await;
        f
    })
}

async fn authorize(url: &str, sample: Arc<Vec<Vec<u8>>>, f: &mut Figures) {
    let secs: u64 = support::setting("FLUXGATE_BENCH_SECS", 5);
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    // Warm-up, then the measured window.
    let start = Instant::now() + Duration::from_millis(500);
    let end = start + Duration::from_secs(secs);
    for _ in 0..CONNECTIONS {
        let channel = Channel::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
            .unwrap();
        for _ in 0..STREAMS {
            let mut client = IoxAuthorizerServiceClient::new(channel.clone());
            let (sample, next, errors) =
                (Arc::clone(&sample), Arc::clone(&next), Arc::clone(&errors));
            tasks.push(tokio::spawn(async move {
                let mut h = support::histogram();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let token = sample[i % sample.len()].clone();
                    let sent = Instant::now();
                    if sent >= end {
                        return h;
                    }
                    let answer = client
                        .authorize(AuthorizeRequest {
                            token,
                            permissions: vec![support::write_bench()],
                        })
                        .await;
                    let ok = answer.is_ok_and(|a| {
                        let a = a.into_inner();
                        a.valid && a.permissions.len() == 1
                    });
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if sent >= start {
                        h.record(sent.elapsed().as_nanos() as u64).unwrap();
                    }
                }
            }));
        }
    }
    let mut total = support::histogram();
    for t in tasks {
        total.add(t.await.unwrap()).unwrap();
    }
    f.authorize_calls_per_s = total.len() as f64 / secs as f64;
    f.authorize_p50_us = total.value_at_quantile(0.5) as f64 / 1e3;
    f.authorize_p99_us = total.value_at_quantile(0.99) as f64 / 1e3;
    f.authorize_errors = errors.load(Ordering::Relaxed);
}

/// Lists every database token page by page; checks each is listed once.
/// Returns (seconds, pages, page p50 ms, page p99 ms).
async fn list_all(url: &str, mgmt: &str, page_size: u32, n: usize) -> (f64, usize, f64, f64) {
    let channel = Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = TokenServiceClient::new(channel);
    let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {mgmt}").parse().unwrap();
    let mut h = support::histogram();
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut page_token = String::new();
    let started = Instant::now();
    loop {
        let mut request = tonic::Request::new(pb::ListTokensRequest {
            include_revoked: false,
            page_size,
            page_token,
        });
        request.metadata_mut().insert("authorization", auth.clone());
        let sent = Instant::now();
        let page = client
            .list_database_tokens(request)
            .await
            .unwrap()
            .into_inner();
        h.record(sent.elapsed().as_nanos() as u64).unwrap();
        for t in page.tokens {
            assert!(seen.insert(t.id), "a token listed twice");
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let total = started.elapsed().as_secs_f64();
    assert_eq!(seen.len(), n, "every token listed");
    (
        total,
        h.len() as usize,
        h.value_at_quantile(0.5) as f64 / 1e6,
        h.value_at_quantile(0.99) as f64 / 1e6,
    )
}

/// Runs `fluxgate token list` (JSON or table) and counts what it printed:
/// `"id":` keys, or table rows. Returns (seconds, count).
async fn cli_list(url: &str, token_file: &Path, json: bool) -> (f64, usize) {
    let binary = support::fluxgate_binary();
    let url = url.to_owned();
    let token_file = token_file.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut cmd = support::clean_command(&binary);
        cmd.args(["token", "list", "--authz", &url, "--token-file"])
            .arg(&token_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if json {
            cmd.args(["--format", "json"]);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().expect("run fluxgate token list");
        let stdout = child.stdout.take().unwrap();
        let mut count = 0;
        for line in BufReader::with_capacity(1 << 20, stdout).lines() {
            let line = line.unwrap();
            if json {
                count += usize::from(line.trim_start().starts_with("\"id\":"));
            } else {
                count += 1;
            }
        }
        let status = child.wait().unwrap();
        let seconds = started.elapsed().as_secs_f64();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(status.success(), "token list failed: {err}");
        let _ = std::io::stderr().flush();
        // The table's header is not a token.
        (seconds, if json { count } else { count.saturating_sub(1) })
    })
    .await
    .unwrap()
}
