//! Authorize throughput of the token service next to the framework's
//! ceiling on this machine: a trivial tonic unary service (gRPC health
//! `Check`) served the same way.
//!
//! `cargo bench --bench authorize` starts, on 127.0.0.1, each as its own
//! process with the same tokio runtime (`Runtime::new()`, one worker per
//! core) and the same `tonic::transport::Server` defaults:
//!
//! - the token service: the `fluxgate authz` binary built with this
//!   benchmark, over a temporary SQLite store, with one database token
//!   (read + write on `bench`) created through `fluxgate token create`;
//! - the same over a PostgreSQL store (a throwaway cluster on 127.0.0.1,
//!   started like the tests' one, `tests/common/postgres.rs`): Authorize is
//!   answered from memory either way, so the two should match;
//! - the trivial service: this benchmark re-executed as a server that
//!   serves only `grpc.health.v1.Health` (`Check` of `""` → SERVING).
//!
//! Each round drives, for a fixed time and at fixed concurrency (default 4
//! HTTP/2 connections × 8 streams = 32 calls in flight), first with a tonic
//! client in this process, then with `h2load` (nghttp2-client, when
//! installed) sending the same length-prefixed protobuf:
//!
//! - `Authorize` of the token for one permission (write on `bench`), as the
//!   proxy asks on a cache miss — every answer is checked (valid, the one
//!   permission granted);
//! - `Check` on the trivial service.
//!
//! h2load only checks HTTP status, so one call with the exact bytes it sends
//! is made first and its `grpc-status` and message checked. The report gives
//! medians over rounds of calls/s, p50/p99 (tonic client), CPU seconds per
//! 10,000 calls of the server process, and the ratio Authorize / trivial
//! (target ≥ 70 %).
//!
//! Settings (environment): `FLUXGATE_BENCH_SECS` (5), `FLUXGATE_BENCH_ROUNDS`
//! (3), `FLUXGATE_BENCH_GRPC_CONNECTIONS` (4), `FLUXGATE_BENCH_GRPC_STREAMS`
//! (8), `FLUXGATE_BENCH_H2LOAD` (`off` skips h2load),
//! `FLUXGATE_BENCH_POSTGRES` (`off` skips the PostgreSQL-backed service),
//! `FLUXGATE_BENCH_BIN`, `FLUXGATE_BENCH_RESULTS`.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/common/postgres.rs"]
mod postgres;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::{BufMut as _, Bytes, BytesMut};
use fluxgate::proto::iox_authz::iox_authorizer_service_client::IoxAuthorizerServiceClient;
use fluxgate::proto::iox_authz::{AuthorizeRequest, AuthorizeResponse};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use support::{
    CpuMeter, ProcessGuard, RunResult, clean_command, clock_ticks, free_port, histogram, machine,
    median, opt, results_dir, setting, table,
};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// Set in the re-executed child: the address the trivial service listens on.
const TRIVIAL_ENV: &str = "FLUXGATE_BENCH_TRIVIAL_LISTEN";
const AUTHORIZE_PATH: &str = "/influxdata.iox.authz.v1.IoxAuthorizerService/Authorize";
const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Authorize,
    Trivial,
}

impl Service {
    fn path(self) -> &'static str {
        match self {
            Service::Authorize => AUTHORIZE_PATH,
            Service::Trivial => CHECK_PATH,
        }
    }
}

fn authorize_request(token: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        token: token.as_bytes().to_vec(),
        permissions: vec![support::write_bench()],
    }
}

/// A gRPC message as sent on the wire: uncompressed flag, length, bytes.
fn grpc_frame(message: &impl prost::Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + body.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(body.len()).unwrap());
    frame.put_slice(&body);
    frame.freeze()
}

/// The trivial service, in the re-executed child.
fn serve_trivial(listen: &str) {
    let addr: SocketAddr = listen.parse().unwrap();
    // As fluxgate's main: a default multi-thread runtime.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let (_reporter, health) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
}

/// Drives `service` at `addr` with tonic clients: `connections` channels,
/// `streams` calls in flight on each, for `duration`.
async fn drive(
    service: Service,
    addr: SocketAddr,
    token: &str,
    connections: usize,
    streams: usize,
    duration: Duration,
) -> RunResult {
    let url = format!("http://{addr}");
    let request = authorize_request(token);
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::new();
    for _ in 0..connections {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
            .unwrap();
        for _ in 0..streams {
            let (channel, request) = (channel.clone(), request.clone());
            workers.push(tokio::spawn(async move {
                let mut h = histogram();
                let mut errors = 0u64;
                let mut first_error: Option<String> = None;
                let mut authorizer = IoxAuthorizerServiceClient::new(channel.clone());
                let mut health = HealthClient::new(channel);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let ok = match service {
                        Service::Authorize => match authorizer.authorize(request.clone()).await {
                            Ok(r) => {
                                let r = r.into_inner();
                                r.valid && r.permissions.len() == 1
                            }
                            Err(status) => {
                                first_error.get_or_insert(format!("{status}"));
                                false
                            }
                        },
                        Service::Trivial => match health
                            .check(HealthCheckRequest {
                                service: String::new(),
                            })
                            .await
                        {
                            Ok(r) => r.into_inner().status == ServingStatus::Serving as i32,
                            Err(status) => {
                                first_error.get_or_insert(format!("{status}"));
                                false
                            }
                        },
                    };
                    if ok {
                        h.record(t.elapsed().as_nanos() as u64).unwrap();
                    } else {
                        errors += 1;
                    }
                }
                (h, errors, first_error)
            }));
        }
    }
    let mut all = histogram();
    let mut errors = 0;
    let mut first_error = None;
    for w in workers {
        let (h, e, f) = w.await.unwrap();
        all.add(&h).unwrap();
        errors += e;
        first_error = first_error.or(f);
    }
    RunResult::from_histogram(&all, errors, started.elapsed().as_secs_f64(), first_error)
}

/// Sends `frame` to `path` once over raw HTTP/2, as h2load will, and
/// returns the grpc-status and the answer's message bytes.
async fn raw_call(addr: SocketAddr, path: &str, frame: Bytes) -> (String, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(frame))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let in_headers = response.headers().get("grpc-status").cloned();
    let collected = response.into_body().collect().await.unwrap();
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status").cloned())
        .or(in_headers)
        .map(|v| v.to_str().unwrap_or("?").to_owned())
        .unwrap_or_else(|| "missing".to_owned());
    let body = collected.to_bytes();
    let message = if body.len() >= 5 {
        body.slice(5..)
    } else {
        Bytes::new()
    };
    (status, message)
}

/// h2load's answer: calls/s, mean latency in µs, succeeded, failed+errored.
fn parse_h2load(text: &str) -> Option<(f64, f64, u64, u64)> {
    let finished = text.lines().find(|l| l.starts_with("finished in"))?;
    let rps: f64 = finished
        .split(',')
        .nth(1)?
        .trim()
        .strip_suffix("req/s")?
        .trim()
        .parse()
        .ok()?;
    let requests = text.lines().find(|l| l.starts_with("requests:"))?;
    let count = |name: &str| -> Option<u64> {
        requests
            .split(',')
            .find(|p| p.trim().ends_with(name))?
            .split_whitespace()
            .find_map(|w| w.parse().ok())
    };
    let succeeded = count("succeeded")?;
    let failed = count("failed").unwrap_or(0) + count("errored").unwrap_or(0);
    let time_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("time for request:"))?;
    let mean = time_line.split_whitespace().nth(5)?;
    let (number, unit) = mean.split_at(mean.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = number.parse().ok()?;
    let mean_us = match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        _ => return None,
    };
    Some((rps, mean_us, succeeded, failed))
}

#[derive(Debug, Clone, Default)]
struct H2loadResult {
    rps: f64,
    mean_us: f64,
    succeeded: u64,
    failed: u64,
    cpu_s: f64,
}

#[allow(clippy::too_many_arguments)]
async fn run_h2load(
    h2load: &Path,
    addr: SocketAddr,
    path: &str,
    data: &Path,
    connections: usize,
    streams: usize,
    secs: f64,
    meter: CpuMeter,
) -> Option<H2loadResult> {
    let out = tokio::process::Command::new(h2load)
        .args([
            "-t",
            "1",
            "-c",
            &connections.to_string(),
            "-m",
            &streams.to_string(),
            "-D",
            &format!("{}", secs.ceil() as u64),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-d",
        ])
        .arg(data)
        .arg(format!("http://{addr}{path}"))
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    let cpu_s = meter.seconds();
    let text = String::from_utf8_lossy(&out.stdout);
    let Some((rps, mean_us, succeeded, failed)) = parse_h2load(&text) else {
        eprintln!("unreadable h2load output:\n{text}");
        return None;
    };
    Some(H2loadResult {
        rps,
        mean_us,
        succeeded,
        failed,
        cpu_s,
    })
}

/// The store flags of a PostgreSQL-backed token service: `--store URL
/// --store-password-file FILE`.
type StoreArgs = Vec<String>;

fn start_token_service(
    dir: &Path,
    name: &str,
    store: &StoreArgs,
) -> (ProcessGuard, SocketAddr, String) {
    let binary = support::fluxgate_binary();
    let log_path = dir.join(format!("fluxgate-authz-{name}.log"));
    let data_dir = dir.join(format!("tokens-{name}"));
    let (guard, addr) =
        support::spawn_authz(&binary, "fluxgate authz", &data_dir, &log_path, store);
    let created = clean_command(&binary)
        .args(["token", "create", "--authz", &format!("http://{addr}")])
        .arg("--token-file")
        .arg(data_dir.join("bootstrap-management-token"))
        .args([
            "--read-database",
            "bench",
            "--write-database",
            "bench",
            "--format",
            "json",
            "authorize benchmark",
        ])
        .output()
        .expect("run fluxgate token create");
    assert!(
        created.status.success(),
        "fluxgate token create failed: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let token = json["token"]
        .as_str()
        .expect("token in the output")
        .to_owned();
    (guard, addr, token)
}

fn start_trivial(dir: &Path) -> (ProcessGuard, SocketAddr) {
    let port = free_port();
    let log_path = dir.join("trivial.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = clean_command(&std::env::current_exe().unwrap());
    cmd.env(TRIVIAL_ENV, format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut guard = ProcessGuard::new("trivial tonic service", cmd.spawn().unwrap());
    guard.wait_for_port(port, &log_path);
    (guard, SocketAddr::from(([127, 0, 0, 1], port)))
}

#[derive(Debug, Default)]
struct Runs {
    tonic: Vec<RunResult>,
    h2load: Vec<H2loadResult>,
}

fn main() {
    if let Ok(listen) = std::env::var(TRIVIAL_ENV) {
        serve_trivial(&listen);
        return;
    }
    let secs: f64 = setting("FLUXGATE_BENCH_SECS", 5.0);
    let rounds: usize = setting("FLUXGATE_BENCH_ROUNDS", 3usize).max(1);
    let connections: usize = setting("FLUXGATE_BENCH_GRPC_CONNECTIONS", 4usize).max(1);
    let streams: usize = setting("FLUXGATE_BENCH_GRPC_STREAMS", 8usize).max(1);
    let out_dir = results_dir();
    let tmp = tempfile::Builder::new()
        .prefix("fluxgate-authorize-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_path_buf();
    let machine_before = machine();
    eprintln!("authorize: {machine_before}");

    let postgres = match std::env::var("FLUXGATE_BENCH_POSTGRES") {
        Ok(v) if v == "off" => None,
        _ => Some(postgres::PgCluster::start()),
    };
    let pg_store: Option<StoreArgs> = postgres.as_ref().map(|cluster| {
        let database = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(cluster.database());
        vec![
            "--store".to_owned(),
            cluster.url(&database),
            "--store-password-file".to_owned(),
            cluster.password_file(&dir).to_str().unwrap().to_owned(),
        ]
    });
    let mut services: Vec<(String, ProcessGuard, SocketAddr, String)> = Vec::new();
    let (guard, addr, token) = start_token_service(&dir, "sqlite", &Vec::new());
    services.push(("Authorize (SQLite store)".to_owned(), guard, addr, token));
    if let Some(store) = &pg_store {
        let (guard, addr, token) = start_token_service(&dir, "postgres", store);
        services.push((
            "Authorize (PostgreSQL store)".to_owned(),
            guard,
            addr,
            token,
        ));
    }
    let (trivial, trivial_addr) = start_trivial(&dir);
    let ticks = clock_ticks();
    let h2load: Option<PathBuf> = match std::env::var("FLUXGATE_BENCH_H2LOAD") {
        Ok(v) if v == "off" => None,
        _ => ["/usr/bin/h2load", "/usr/local/bin/h2load"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists()),
    };

    // The bodies h2load sends (one per token service: each has its own
    // token), checked once with the same bytes.
    let check_data = dir.join("check.bin");
    std::fs::write(
        &check_data,
        grpc_frame(&HealthCheckRequest {
            service: String::new(),
        }),
    )
    .unwrap();
    struct Target {
        name: String,
        service: Service,
        addr: SocketAddr,
        pid: u32,
        data: PathBuf,
        token: String,
    }
    let mut targets: Vec<Target> = services
        .iter()
        .enumerate()
        .map(|(i, (name, guard, addr, token))| {
            let data = dir.join(format!("authorize-{i}.bin"));
            std::fs::write(&data, grpc_frame(&authorize_request(token))).unwrap();
            Target {
                name: name.clone(),
                service: Service::Authorize,
                addr: *addr,
                pid: guard.pid(),
                data,
                token: token.clone(),
            }
        })
        .collect();
    targets.push(Target {
        name: "health Check (trivial)".to_owned(),
        service: Service::Trivial,
        addr: trivial_addr,
        pid: trivial.pid(),
        data: check_data,
        token: String::new(),
    });

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let text = runtime.block_on(async {
        for target in &targets {
            let (status, message) = raw_call(
                target.addr,
                target.service.path(),
                std::fs::read(&target.data).unwrap().into(),
            )
            .await;
            match target.service {
                Service::Authorize => {
                    let answer = AuthorizeResponse::decode(message).unwrap();
                    assert!(
                        status == "0" && answer.valid && answer.permissions.len() == 1,
                        "h2load's Authorize body: grpc-status {status}, {answer:?}"
                    );
                }
                Service::Trivial => {
                    let answer = HealthCheckResponse::decode(message).unwrap();
                    assert!(
                        status == "0" && answer.status == ServingStatus::Serving as i32,
                        "h2load's Check body: grpc-status {status}, {answer:?}"
                    );
                }
            }
        }
        // Warm-up.
        for t in &targets {
            let r = drive(t.service, t.addr, &t.token, connections, streams, Duration::from_secs(1)).await;
            assert!(
                r.errors == 0 && r.requests > 0,
                "{}: warm-up failed: {:?}",
                t.name,
                r.first_error
            );
        }
        let mut runs: Vec<Runs> = targets.iter().map(|_| Runs::default()).collect();
        for round in 0..rounds {
            // A different target goes first each round.
            let mut order: Vec<usize> = (0..targets.len()).collect();
            order.rotate_left(round % targets.len());
            for i in order {
                let t = &targets[i];
                let meter = CpuMeter::start(vec![t.pid], ticks);
                let mut r = drive(
                    t.service,
                    t.addr,
                    &t.token,
                    connections,
                    streams,
                    Duration::from_secs_f64(secs),
                )
                .await;
                r.cpu_s = Some(meter.seconds());
                eprintln!(
                    "round {} {:<30} tonic : {:>7.0} calls/s p50 {:>5.0} µs p99 {:>5.0} µs cpu/10k {} errors {}",
                    round + 1,
                    t.name,
                    r.rps(),
                    r.p50_us,
                    r.p99_us,
                    opt(r.cpu_per_10k(), 3),
                    r.errors
                );
                runs[i].tonic.push(r);
                if let Some(h2load) = &h2load {
                    let meter = CpuMeter::start(vec![t.pid], ticks);
                    if let Some(r) = run_h2load(
                        h2load,
                        t.addr,
                        t.service.path(),
                        &t.data,
                        connections,
                        streams,
                        secs,
                        meter,
                    )
                    .await
                    {
                        eprintln!(
                            "round {} {:<30} h2load: {:>7.0} calls/s mean {:>5.0} µs succeeded {} failed {}",
                            round + 1,
                            t.name,
                            r.rps,
                            r.mean_us,
                            r.succeeded,
                            r.failed
                        );
                        runs[i].h2load.push(r);
                    }
                }
            }
        }
        let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
        report(&runs, &names, rounds, secs, connections, streams)
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    drop(trivial);
    drop(services);
    drop(postgres);
    let text = format!(
        "fluxgate Authorize benchmark\nmachine: {machine_before}\nload average after: {}\n\n{text}",
        support::load_average()
    );
    println!("{text}");
    let file = out_dir.join("authorize.txt");
    std::fs::write(&file, &text).unwrap();
    println!("written to {}", file.display());
}

/// The table, then per-round ratios: each Authorize service against the
/// trivial one (the last target), and PostgreSQL-backed against
/// SQLite-backed when both ran.
fn report(
    runs: &[Runs],
    names: &[String],
    rounds: usize,
    secs: f64,
    connections: usize,
    streams: usize,
) -> String {
    let mut rows = Vec::new();
    for (name, r) in names.iter().zip(runs) {
        let m = |f: &dyn Fn(&RunResult) -> f64| median(&r.tonic.iter().map(f).collect::<Vec<_>>());
        let cpu: Vec<f64> = r.tonic.iter().filter_map(RunResult::cpu_per_10k).collect();
        rows.push(vec![
            name.clone(),
            "tonic client".to_owned(),
            format!("{:.0}", m(&RunResult::rps)),
            format!("{:.0}", m(&|x| x.p50_us)),
            format!("{:.0}", m(&|x| x.p99_us)),
            opt((!cpu.is_empty()).then(|| median(&cpu)), 3),
            r.tonic.iter().map(|x| x.errors).sum::<u64>().to_string(),
        ]);
        if !r.h2load.is_empty() {
            let m = |f: &dyn Fn(&H2loadResult) -> f64| {
                median(&r.h2load.iter().map(f).collect::<Vec<_>>())
            };
            rows.push(vec![
                name.clone(),
                "h2load".to_owned(),
                format!("{:.0}", m(&|x| x.rps)),
                format!("mean {:.0}", m(&|x| x.mean_us)),
                "—".to_owned(),
                format!(
                    "{:.3}",
                    m(&|x| x.cpu_s * 10_000.0 / (x.succeeded.max(1)) as f64)
                ),
                r.h2load.iter().map(|x| x.failed).sum::<u64>().to_string(),
            ]);
        }
    }
    let per_round = |a: Vec<f64>, b: Vec<f64>| -> String {
        let v: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y).collect();
        if v.is_empty() {
            return "—".to_owned();
        }
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!(
            "{:.0} % ({:.0}–{:.0} %)",
            median(&v) * 100.0,
            lo * 100.0,
            hi * 100.0
        )
    };
    let ratio = |a: &Runs, b: &Runs| -> String {
        format!(
            "tonic client {}; h2load {}",
            per_round(
                a.tonic.iter().map(RunResult::rps).collect(),
                b.tonic.iter().map(RunResult::rps).collect()
            ),
            per_round(
                a.h2load.iter().map(|x| x.rps).collect(),
                b.h2load.iter().map(|x| x.rps).collect()
            )
        )
    };
    let trivial = runs.len() - 1;
    let mut ratios = String::new();
    for i in 0..trivial {
        ratios.push_str(&format!(
            "{} / trivial throughput (median of per-round ratios, range): {} (target ≥ 70 %)\n",
            names[i],
            ratio(&runs[i], &runs[trivial])
        ));
    }
    if trivial == 2 {
        ratios.push_str(&format!(
            "PostgreSQL-backed / SQLite-backed Authorize throughput: {}\n",
            ratio(&runs[1], &runs[0])
        ));
    }
    format!(
        "Medians over {rounds} rounds of {secs} s, {connections} connections × {streams} streams = {} calls in flight:\n\n{}\n{ratios}",
        connections * streams,
        table(
            &[
                "service",
                "driver",
                "calls/s",
                "p50 µs",
                "p99 µs",
                "server CPU s/10k calls",
                "errors",
            ],
            &rows
        )
    )
}
