//! Load harness: what fluxgate costs per request, next to going direct and
//! next to nginx with `auth_request`, measured side by side in one run.
//!
//! `cargo bench --bench load` starts, all on 127.0.0.1:
//!
//! - in this process: a minimal fast upstream (hyper HTTP/1.1: 204 for
//!   writes, a small JSON for queries), an Arrow Flight server whose DoGet
//!   answers one small batch, the real token service
//!   (`fluxgate::tokens::server::serve` over a temporary SQLite store) and a
//!   tiny token-checking HTTP endpoint for nginx's `auth_request`;
//! - the `fluxgate proxy` binary built with this benchmark, as a separate
//!   process asking that token service through its decision cache (so its
//!   CPU time can be read from `/proc/<pid>/stat`), and `fluxgate serve`
//!   (proxy and token service in one process) over a copy of the same
//!   token store;
//! - with `FLUXGATE_BENCH_BEFORE_BIN` (another build of fluxgate, e.g. the
//!   commit a change started from): that binary's `proxy` and `serve` too,
//!   as targets `before` and `before-serve`, so that before and after are
//!   measured in the same rounds;
//! - nginx (`/usr/sbin/nginx`, Debian `nginx-light`), when installed, as a
//!   reverse proxy with `auth_request` to the token-checking endpoint and
//!   `proxy_cache` on the auth subrequest keyed by the `Authorization`
//!   header, path and `db`; `worker_processes` = the CPU count, as fluxgate's
//!   runtime uses every core. gRPC goes through `grpc_pass` on a second
//!   (h2c) port;
//! - `hyper-noauth`: this benchmark re-executed as a bare hyper reverse
//!   proxy (fluxgate's runtime, server builder and pooled client, no
//!   authorization at all), for HTTP scenarios: the floor of the stack
//!   fluxgate is built on, separating its own cost from the framework's.
//!
//! The load generator (in this process) drives each scenario — v1 write of
//! a 100-line batch (plain and gzip), v1 query (the same one on every
//! request, and another on each: `v1_query_varied`), v3 `query_sql`, Flight
//! DoGet — at fixed concurrency over keep-alive connections for a fixed time
//! against each target (direct, fluxgate, nginx), after a warm-up that also
//! fills both caches. Rounds are repeated and the target order rotated per
//! round; the report gives medians over rounds, and per-round ratios'
//! medians, for each fluxgate target: against direct (added p50 latency),
//! nginx (throughput, CPU seconds per 10,000 requests of the proxy
//! process), hyper-noauth (CPU) and its `before` build (throughput, CPU).
//!
//! Settings (environment): `FLUXGATE_BENCH_SECS` (5, per measured run),
//! `FLUXGATE_BENCH_WARMUP_SECS` (1), `FLUXGATE_BENCH_ROUNDS` (3),
//! `FLUXGATE_BENCH_CONCURRENCY` (32), `FLUXGATE_BENCH_SCENARIOS`
//! (comma-separated names, default all), `FLUXGATE_BENCH_NGINX` (path, or
//! `off`), `FLUXGATE_BENCH_WRK` (`off` skips the wrk second opinion),
//! `FLUXGATE_BENCH_PERF` (`1`: after the rounds, record a flat `perf`
//! profile of fluxgate, nginx and the bare proxy per scenario),
//! `FLUXGATE_BENCH_BIN` (the fluxgate binary), `FLUXGATE_BENCH_BEFORE_BIN`
//! (a second fluxgate binary to compare with; unset: none),
//! `FLUXGATE_BENCH_SERVE` (`off` skips the `serve` targets),
//! `FLUXGATE_BENCH_RESULTS` (output directory, default
//! `target/bench-results`).
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow_array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use fluxgate::tokens::model::{DatabasePermission, TokenKind};
use fluxgate::tokens::{SqliteStore, TokenRegistry, server};
use futures_util::TryStreamExt as _;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Empty as EmptyBody, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use support::{
    CpuMeter, ProcessGuard, RunResult, WorkerOutput, children_of, clean_command, clock_ticks,
    free_port, machine, median, opt, results_dir, serve_http1, setting, table,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The database every scenario uses; the token may read and write it.
const DB: &str = "bench";
/// Lines per write batch.
const BATCH_LINES: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    V1Write,
    V1WriteGzip,
    V1Query,
    /// v1 query, another query on every request of a connection (its time
    /// range): each is read afresh, none recalled from the connection's
    /// last reading.
    V1QueryVaried,
    V3QuerySql,
    FlightDoGet,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::V1Write,
        Scenario::V1WriteGzip,
        Scenario::V1Query,
        Scenario::V1QueryVaried,
        Scenario::V3QuerySql,
        Scenario::FlightDoGet,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::V1Write => "v1_write",
            Scenario::V1WriteGzip => "v1_write_gzip",
            Scenario::V1Query => "v1_query",
            Scenario::V1QueryVaried => "v1_query_varied",
            Scenario::V3QuerySql => "v3_query_sql",
            Scenario::FlightDoGet => "flight_doget",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Direct,
    /// `fluxgate proxy` (this build).
    Fluxgate,
    /// `fluxgate serve` (this build).
    FluxgateServe,
    /// `fluxgate proxy` of `FLUXGATE_BENCH_BEFORE_BIN`.
    Before,
    /// `fluxgate serve` of `FLUXGATE_BENCH_BEFORE_BIN`.
    BeforeServe,
    Nginx,
    /// A bare hyper reverse proxy with no authorization: what the same
    /// stack (tokio, hyper server + pooled client) costs by itself.
    Hyper,
}

impl Target {
    const ALL: [Target; 7] = [
        Target::Direct,
        Target::Fluxgate,
        Target::FluxgateServe,
        Target::Before,
        Target::BeforeServe,
        Target::Nginx,
        Target::Hyper,
    ];

    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Fluxgate => "fluxgate",
            Target::FluxgateServe => "fluxgate-serve",
            Target::Before => "before",
            Target::BeforeServe => "before-serve",
            Target::Nginx => "nginx",
            Target::Hyper => "hyper-noauth",
        }
    }

    /// The fluxgate targets, whose ratios the report gives.
    fn is_fluxgate(self) -> bool {
        matches!(
            self,
            Target::Fluxgate | Target::FluxgateServe | Target::Before | Target::BeforeServe
        )
    }

    /// The same command in the `before` build.
    fn before(self) -> Option<Target> {
        match self {
            Target::Fluxgate => Some(Target::Before),
            Target::FluxgateServe => Some(Target::BeforeServe),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Requests

/// One HTTP request, sent again and again.
#[derive(Debug, Clone)]
struct HttpCase {
    method: Method,
    path_and_query: String,
    /// Requests differ: the n-th request of a connection goes to this
    /// prefix, n and this suffix instead of `path_and_query`.
    varied: Option<(String, String)>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
    body: Bytes,
    expect: StatusCode,
}

impl HttpCase {
    /// The `n`-th request of a connection.
    fn request(&self, host: &HeaderValue, n: u64) -> Request<Full<Bytes>> {
        let uri = match &self.varied {
            Some((prefix, suffix)) => format!("{prefix}{n}{suffix}"),
            None => self.path_and_query.clone(),
        };
        let mut r = Request::builder()
            .method(self.method.clone())
            .uri(uri)
            .body(Full::new(self.body.clone()))
            .unwrap();
        let h = r.headers_mut();
        h.insert(header::HOST, host.clone());
        for (k, v) in &self.headers {
            h.insert(k.clone(), v.clone());
        }
        r
    }
}

/// A 100-line batch of line protocol (~13 KiB), as Telegraf sends.
fn write_batch() -> Bytes {
    let mut body = String::new();
    let ts = 1_700_000_000_000_000_000u64;
    for i in 0..BATCH_LINES {
        body.push_str(&format!(
            "cpu,host=host-{h},region=eu-west-{r},cpu=cpu{c} usage_user={u:.3},usage_system={s:.3},usage_idle={id:.3},usage_iowait=0.25 {t}\n",
            h = i % 10,
            r = i % 3,
            c = i % 4,
            u = i as f64 * 0.37,
            s = i as f64 * 0.11,
            id = 100.0 - i as f64 * 0.48,
            t = ts + i as u64 * 1_000_000_000,
        ));
    }
    Bytes::from(body)
}

fn gzip(data: &[u8]) -> Bytes {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    Bytes::from(e.finish().unwrap())
}

/// The v1 query, around its time range.
const V1_QUERY_HEAD: &str = "SELECT mean(\"usage_idle\") FROM \"cpu\" WHERE time > now() - ";
const V1_QUERY_TAIL: &str = " GROUP BY time(1m), \"host\"";

fn encode_q(q: &str) -> String {
    percent_encoding::utf8_percent_encode(q, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn http_case(scenario: Scenario, token: &str) -> HttpCase {
    let auth = (
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Token {token}")).unwrap(),
    );
    let text = (
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    match scenario {
        Scenario::V1Write => HttpCase {
            method: Method::POST,
            path_and_query: format!("/write?db={DB}&precision=ns"),
            headers: vec![auth, text],
            body: write_batch(),
            varied: None,
            expect: StatusCode::NO_CONTENT,
        },
        Scenario::V1WriteGzip => HttpCase {
            method: Method::POST,
            path_and_query: format!("/write?db={DB}&precision=ns"),
            headers: vec![
                auth,
                text,
                (header::CONTENT_ENCODING, HeaderValue::from_static("gzip")),
            ],
            body: gzip(&write_batch()),
            varied: None,
            expect: StatusCode::NO_CONTENT,
        },
        Scenario::V1Query => HttpCase {
            method: Method::GET,
            path_and_query: format!(
                "/query?db={DB}&epoch=ms&q={}",
                encode_q(&format!("{V1_QUERY_HEAD}1h{V1_QUERY_TAIL}"))
            ),
            headers: vec![auth],
            body: Bytes::new(),
            varied: None,
            expect: StatusCode::OK,
        },
        Scenario::V1QueryVaried => HttpCase {
            method: Method::GET,
            path_and_query: String::new(),
            headers: vec![auth],
            body: Bytes::new(),
            varied: Some((
                format!("/query?db={DB}&epoch=ms&q={}", encode_q(V1_QUERY_HEAD)),
                encode_q(&format!("s{V1_QUERY_TAIL}")),
            )),
            expect: StatusCode::OK,
        },
        Scenario::V3QuerySql => HttpCase {
            method: Method::GET,
            path_and_query: format!(
                "/api/v3/query_sql?db={DB}&format=json&q={}",
                encode_q("SELECT host, usage_idle FROM cpu ORDER BY time DESC LIMIT 10")
            ),
            headers: vec![auth],
            body: Bytes::new(),
            varied: None,
            expect: StatusCode::OK,
        },
        Scenario::FlightDoGet => unreachable!("Flight is not HTTP/1.1"),
    }
}

/// The DoGet ticket in the JSON form the Python client sends.
fn flight_ticket() -> Bytes {
    Bytes::from(
        serde_json::json!({
            "database": DB,
            "sql_query": "SELECT host, usage_idle FROM cpu ORDER BY time DESC LIMIT 10",
            "query_type": "sql",
        })
        .to_string(),
    )
}

// ---------------------------------------------------------------------------
// The upstream (HTTP and Flight) and nginx's token check

const V1_ANSWER: &str = r#"{"results":[{"statement_id":0,"series":[{"name":"cpu","tags":{"host":"host-1"},"columns":["time","mean"],"values":[[1700000000000,97.5],[1700000060000,97.1]]}]}]}"#;
const V3_ANSWER: &str =
    r#"[{"host":"host-1","usage_idle":97.5},{"host":"host-2","usage_idle":96.25}]"#;

async fn upstream_handler(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    // Read the body, as a database would.
    let _ = request.into_body().collect().await;
    let (status, body, json) = match path.as_str() {
        "/write" | "/api/v2/write" | "/api/v3/write_lp" | "/ping" => {
            (StatusCode::NO_CONTENT, "", false)
        }
        "/query" => (StatusCode::OK, V1_ANSWER, true),
        "/api/v3/query_sql" => (StatusCode::OK, V3_ANSWER, true),
        _ => (StatusCode::NOT_FOUND, "", false),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    if json {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    Ok(response)
}

/// nginx's `auth_request` target: 200 when the `Authorization` header holds
/// a known token (and `db`, when the original URI names one, is `bench`),
/// else 401. Counts its calls, to show nginx's cache is warm.
async fn auth_handler(
    request: Request<Incoming>,
    tokens: Arc<HashSet<String>>,
    calls: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    calls.fetch_add(1, Ordering::Relaxed);
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Token ")
                .or_else(|| v.strip_prefix("Bearer "))
        })
        .map(str::trim);
    let db_ok = request
        .headers()
        .get("x-original-uri")
        .and_then(|v| v.to_str().ok())
        .and_then(|uri| uri.split_once('?'))
        .is_none_or(|(_, query)| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "db")
                .is_none_or(|(_, v)| v == DB)
        });
    let ok = db_ok && token.is_some_and(|t| tokens.contains(t));
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = if ok {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    Ok(response)
}

type FlightStream<T> =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<T, tonic::Status>> + Send>>;

/// A Flight server whose DoGet answers a precomputed small batch (10 rows).
#[derive(Debug, Clone)]
struct FlightUpstream {
    answer: Arc<Vec<FlightData>>,
}

impl FlightUpstream {
    async fn new() -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("time", DataType::Int64, false),
            Field::new("host", DataType::Utf8, false),
            Field::new("usage_idle", DataType::Float64, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(0..10)),
                Arc::new(StringArray::from_iter_values(
                    (0..10).map(|i| format!("host-{i}")),
                )),
                Arc::new(Float64Array::from_iter_values(
                    (0..10).map(|i| 90.0 + f64::from(i)),
                )),
            ],
        )
        .unwrap();
        let answer: Vec<FlightData> = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures_util::stream::iter([Ok(batch)]))
            .try_collect()
            .await
            .unwrap();
        Self {
            answer: Arc::new(answer),
        }
    }
}

fn unimplemented<T>(what: &str) -> Result<T, tonic::Status> {
    Err(tonic::Status::unimplemented(what.to_owned()))
}

#[tonic::async_trait]
impl FlightService for FlightUpstream {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoExchangeStream = FlightStream<FlightData>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;

    async fn handshake(
        &self,
        _: tonic::Request<tonic::Streaming<HandshakeRequest>>,
    ) -> Result<tonic::Response<Self::HandshakeStream>, tonic::Status> {
        unimplemented("Handshake")
    }
    async fn list_flights(
        &self,
        _: tonic::Request<Criteria>,
    ) -> Result<tonic::Response<Self::ListFlightsStream>, tonic::Status> {
        unimplemented("ListFlights")
    }
    async fn get_flight_info(
        &self,
        _: tonic::Request<FlightDescriptor>,
    ) -> Result<tonic::Response<FlightInfo>, tonic::Status> {
        unimplemented("GetFlightInfo")
    }
    async fn poll_flight_info(
        &self,
        _: tonic::Request<FlightDescriptor>,
    ) -> Result<tonic::Response<PollInfo>, tonic::Status> {
        unimplemented("PollFlightInfo")
    }
    async fn get_schema(
        &self,
        _: tonic::Request<FlightDescriptor>,
    ) -> Result<tonic::Response<SchemaResult>, tonic::Status> {
        unimplemented("GetSchema")
    }
    async fn do_get(
        &self,
        request: tonic::Request<Ticket>,
    ) -> Result<tonic::Response<Self::DoGetStream>, tonic::Status> {
        if request.get_ref().ticket.is_empty() {
            return Err(tonic::Status::invalid_argument("empty ticket"));
        }
        let answer: Vec<Result<FlightData, tonic::Status>> =
            self.answer.iter().cloned().map(Ok).collect();
        Ok(tonic::Response::new(Box::pin(futures_util::stream::iter(
            answer,
        ))))
    }
    async fn do_put(
        &self,
        _: tonic::Request<tonic::Streaming<FlightData>>,
    ) -> Result<tonic::Response<Self::DoPutStream>, tonic::Status> {
        unimplemented("DoPut")
    }
    async fn do_exchange(
        &self,
        _: tonic::Request<tonic::Streaming<FlightData>>,
    ) -> Result<tonic::Response<Self::DoExchangeStream>, tonic::Status> {
        unimplemented("DoExchange")
    }
    async fn do_action(
        &self,
        _: tonic::Request<Action>,
    ) -> Result<tonic::Response<Self::DoActionStream>, tonic::Status> {
        unimplemented("DoAction")
    }
    async fn list_actions(
        &self,
        _: tonic::Request<Empty>,
    ) -> Result<tonic::Response<Self::ListActionsStream>, tonic::Status> {
        unimplemented("ListActions")
    }
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

// ---------------------------------------------------------------------------
// Load generators

/// Drives `case` at `addr` over `concurrency` keep-alive HTTP/1.1
/// connections for `duration`.
async fn drive_http(
    addr: SocketAddr,
    case: Arc<HttpCase>,
    concurrency: usize,
    duration: Duration,
) -> RunResult {
    let host = HeaderValue::from_str(&addr.to_string()).unwrap();
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (case, host) = (Arc::clone(&case), host.clone());
            let mut n = 0;
            move || {
                n += 1;
                Some((case.request(&host, n), case.expect))
            }
        })
        .collect();
    let outputs = support::drive_http1(addr, workers, Some(started + duration)).await;
    support::merge(outputs, started.elapsed().as_secs_f64())
}

async fn collect_workers(
    workers: Vec<tokio::task::JoinHandle<WorkerOutput>>,
    started: Instant,
) -> RunResult {
    let mut outputs = Vec::with_capacity(workers.len());
    for w in workers {
        outputs.push(w.await.unwrap());
    }
    support::merge(outputs, started.elapsed().as_secs_f64())
}

/// Drives DoGet at `url` over `concurrency` HTTP/2 connections (one call in
/// flight on each) for `duration`; every call's stream is read to its end.
async fn drive_flight(
    url: String,
    token: String,
    concurrency: usize,
    duration: Duration,
) -> RunResult {
    let ticket = flight_ticket();
    let auth: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
        format!("Bearer {token}").parse().unwrap();
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (url, ticket, auth) = (url.clone(), ticket.clone(), auth.clone());
            tokio::spawn(async move {
                let mut h = support::histogram();
                let mut errors = 0u64;
                let mut first_error = None;
                let channel = match tonic::transport::Endpoint::from_shared(url)
                    .unwrap()
                    .tcp_nodelay(true)
                    .connect()
                    .await
                {
                    Ok(c) => c,
                    Err(e) => return (h, 1, Some(format!("connect: {e}"))),
                };
                let mut client = FlightServiceClient::new(channel);
                while Instant::now() < deadline {
                    let mut request = tonic::Request::new(Ticket {
                        ticket: ticket.clone(),
                    });
                    request.metadata_mut().insert("authorization", auth.clone());
                    let t = Instant::now();
                    let outcome = async {
                        let mut stream = client.do_get(request).await?.into_inner();
                        let mut messages = 0;
                        while stream.message().await?.is_some() {
                            messages += 1;
                        }
                        Ok::<_, tonic::Status>(messages)
                    }
                    .await;
                    match outcome {
                        Ok(n) if n >= 2 => h.record(t.elapsed().as_nanos() as u64).unwrap(),
                        Ok(n) => {
                            errors += 1;
                            first_error.get_or_insert(format!("{n} messages"));
                        }
                        Err(status) => {
                            errors += 1;
                            first_error.get_or_insert(format!(
                                "{:?}: {}",
                                status.code(),
                                status.message()
                            ));
                        }
                    }
                }
                (h, errors, first_error)
            })
        })
        .collect();
    collect_workers(workers, started).await
}

// ---------------------------------------------------------------------------
// The proxies under test

/// Where each target listens.
#[derive(Debug, Clone, Default)]
struct Endpoints {
    http: BTreeMap<Target, SocketAddr>,
    grpc: BTreeMap<Target, SocketAddr>,
}

impl Endpoints {
    fn http(&self, target: Target) -> Option<SocketAddr> {
        self.http.get(&target).copied()
    }

    fn grpc(&self, target: Target) -> Option<SocketAddr> {
        self.grpc.get(&target).copied()
    }
}

/// What a fluxgate target runs.
enum Launch<'a> {
    /// `fluxgate proxy` asking the token service at `authz`.
    Proxy {
        authz: SocketAddr,
        proxy_token_file: &'a Path,
    },
    /// `fluxgate serve` over the token store in `data_dir`.
    Serve { data_dir: &'a Path },
}

/// Starts `binary` as `target` on `listen`; its admin port is written to
/// `<target>-admin-port` in `dir`.
fn start_fluxgate(
    binary: &Path,
    target: Target,
    command: Launch<'_>,
    dir: &Path,
    listen: u16,
    upstream: SocketAddr,
    flight: SocketAddr,
) -> ProcessGuard {
    let log_path = dir.join(format!("{}.log", target.name()));
    let log = std::fs::File::create(&log_path).unwrap();
    let admin = free_port();
    let mut cmd = clean_command(binary);
    match command {
        Launch::Proxy {
            authz,
            proxy_token_file,
        } => {
            cmd.args([
                "proxy",
                "--authz",
                &format!("http://{authz}"),
                "--authz-token-file",
                &proxy_token_file.display().to_string(),
            ]);
        }
        Launch::Serve { data_dir } => {
            cmd.args([
                "serve",
                "--authz-listen",
                &format!("127.0.0.1:{}", free_port()),
                "--data-dir",
                &data_dir.display().to_string(),
            ]);
        }
    }
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{listen}"),
        "--upstream",
        &format!("http://{upstream}"),
        "--upstream-grpc",
        &format!("http://{flight}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin}"),
        "--log-level",
        "warn",
    ])
    .stdin(Stdio::null())
    .stdout(log.try_clone().unwrap())
    .stderr(log);
    let mut guard = ProcessGuard::new(target.name(), cmd.spawn().expect("start fluxgate"));
    guard.wait_for_port(listen, &log_path);
    std::fs::write(
        dir.join(format!("{}-admin-port", target.name())),
        admin.to_string(),
    )
    .unwrap();
    guard
}

/// Copies the token store in `from` to `to` (a closed SQLite store: its
/// files as they are).
fn copy_store(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// nginx's configuration: `auth_request` to `auth`, its answer cached per
/// (Authorization, path, db) for as long as fluxgate caches an allow (60 s).
fn nginx_conf(
    dir: &Path,
    workers: usize,
    http: u16,
    grpc: u16,
    upstream: SocketAddr,
    flight: SocketAddr,
    auth: SocketAddr,
) -> String {
    let d = dir.display();
    let user = if running_as_root() {
        // Workers must reach the cache under the private temporary directory.
        "user root;\n"
    } else {
        ""
    };
    let auth_location = r#"
        location = /_auth {
            internal;
            proxy_pass http://authsvc/check;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_cache authz;
            proxy_cache_key "$http_authorization|$auth_path|$auth_db";
            proxy_cache_valid 200 60s;
            proxy_cache_valid 401 403 5s;
        }"#;
    format!(
        r#"# Generated by benches/load.rs.
{user}worker_processes {workers};
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    # Keep write batches in memory: by default (8 KiB) a 13 KiB body goes to
    # a temporary file and is sent upstream in two writes (40 ms stalls).
    client_body_buffer_size 1m;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    proxy_cache_path {d}/cache levels=1:2 keys_zone=authz:10m max_size=64m inactive=10m use_temp_path=off;

    # The database and path of the original request: part of the cache key,
    # so a decision is cached per (token, database, action) as in fluxgate.
    map $request_uri $auth_db {{ "~[?&]db=(?<d>[^&]*)" $d; default ""; }}
    map $request_uri $auth_path {{ "~^(?<p>[^?]*)" $p; default ""; }}

    upstream backend {{ server {upstream}; keepalive 64; keepalive_requests 1000000; }}
    upstream authsvc {{ server {auth}; keepalive 16; keepalive_requests 1000000; }}
    upstream flight {{ server {flight}; keepalive 16; keepalive_requests 1000000; }}

    server {{
        listen 127.0.0.1:{http};
        location / {{
            auth_request /_auth;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "";
        }}{auth_location}
    }}

    server {{
        listen 127.0.0.1:{grpc} http2;
        location / {{
            auth_request /_auth;
            grpc_pass grpc://flight;
            grpc_set_header Authorization "";
        }}{auth_location}
    }}
}}
"#
    )
}

struct Nginx {
    guard: ProcessGuard,
    http: SocketAddr,
    grpc: SocketAddr,
}

fn start_nginx(
    binary: &Path,
    dir: &Path,
    upstream: SocketAddr,
    flight: SocketAddr,
    auth: SocketAddr,
) -> Nginx {
    let dir = dir.join("nginx");
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let (http, grpc) = (free_port(), free_port());
    let conf = nginx_conf(&dir, workers, http, grpc, upstream, flight, auth);
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let log_path = dir.join("nginx.out");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(binary)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start nginx");
    let mut guard = ProcessGuard::new("nginx", child);
    guard.wait_for_port(http, &dir.join("error.log"));
    guard.wait_for_port(grpc, &dir.join("error.log"));
    // Wait for every worker to exist, so CPU readings include them all.
    let deadline = Instant::now() + Duration::from_secs(5);
    while children_of(guard.pid()).len() < workers && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Nginx {
        guard,
        http: SocketAddr::from(([127, 0, 0, 1], http)),
        grpc: SocketAddr::from(([127, 0, 0, 1], grpc)),
    }
}

/// Set in the re-executed child: `LISTEN_ADDR UPSTREAM_ADDR` of the bare proxy.
const BARE_PROXY_ENV: &str = "FLUXGATE_BENCH_BARE_PROXY";

type BareBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// The bare hyper reverse proxy, in the re-executed child: the runtime
/// fluxgate's `main` builds, hyper-util's auto server (HTTP/1.1 + h2c, as
/// fluxgate's listener) and its pooled legacy client (as fluxgate's
/// `Upstream`); the `Authorization` header is dropped and nothing checked.
fn serve_bare_proxy(spec: &str) {
    let (listen, upstream) = spec.split_once(' ').expect("LISTEN UPSTREAM");
    let (listen, upstream): (SocketAddr, SocketAddr) =
        (listen.parse().unwrap(), upstream.parse().unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await.unwrap();
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        let client: hyper_util::client::legacy::Client<_, Incoming> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(256)
                .build(connector);
        let builder = Arc::new(hyper_util::server::conn::auto::Builder::new(
            hyper_util::rt::TokioExecutor::new(),
        ));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (client, builder) = (client.clone(), Arc::clone(&builder));
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                    let client = client.clone();
                    async move {
                        let target = format!(
                            "http://{upstream}{}",
                            request.uri().path_and_query().map_or("/", |p| p.as_str())
                        );
                        *request.uri_mut() = target.parse().unwrap();
                        request.headers_mut().remove(header::AUTHORIZATION);
                        let response: Response<BareBody> = match client.request(request).await {
                            Ok(r) => r.map(http_body_util::BodyExt::boxed),
                            Err(_) => {
                                let mut r = Response::new(
                                    EmptyBody::new().map_err(|never| match never {}).boxed(),
                                );
                                *r.status_mut() = StatusCode::BAD_GATEWAY;
                                r
                            }
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

fn start_bare_proxy(dir: &Path, upstream: SocketAddr) -> (ProcessGuard, u16) {
    let port = free_port();
    let log_path = dir.join("bare-proxy.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = clean_command(&std::env::current_exe().unwrap());
    cmd.env(BARE_PROXY_ENV, format!("127.0.0.1:{port} {upstream}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut guard = ProcessGuard::new("bare hyper proxy", cmd.spawn().unwrap());
    guard.wait_for_port(port, &log_path);
    (guard, port)
}

// ---------------------------------------------------------------------------
// Running and reporting

#[derive(Debug, Clone)]
struct Settings {
    secs: f64,
    warmup_secs: f64,
    rounds: usize,
    concurrency: usize,
    scenarios: Vec<Scenario>,
}

impl Settings {
    fn from_env() -> Self {
        let scenarios = match std::env::var("FLUXGATE_BENCH_SCENARIOS") {
            Ok(list) if !list.trim().is_empty() => list
                .split(',')
                .map(|name| {
                    *Scenario::ALL
                        .iter()
                        .find(|s| s.name() == name.trim())
                        .unwrap_or_else(|| panic!("unknown scenario {name:?}"))
                })
                .collect(),
            _ => Scenario::ALL.to_vec(),
        };
        Self {
            secs: setting("FLUXGATE_BENCH_SECS", 5.0),
            warmup_secs: setting("FLUXGATE_BENCH_WARMUP_SECS", 1.0),
            rounds: setting("FLUXGATE_BENCH_ROUNDS", 3usize).max(1),
            concurrency: setting("FLUXGATE_BENCH_CONCURRENCY", 32usize).max(1),
            scenarios,
        }
    }
}

/// Everything a run needs to reach and meter the targets.
struct Bench {
    endpoints: Endpoints,
    token: String,
    /// The processes of each target but direct.
    pids: BTreeMap<Target, Vec<u32>>,
    ticks: u64,
    concurrency: usize,
}

impl Bench {
    fn pids(&self, target: Target) -> Option<Vec<u32>> {
        self.pids.get(&target).cloned()
    }

    /// Whether `target` takes part in `scenario` (the bare hyper proxy
    /// forwards HTTP/1.1 only).
    fn serves(&self, scenario: Scenario, target: Target) -> bool {
        if scenario == Scenario::FlightDoGet {
            self.endpoints.grpc(target).is_some()
        } else {
            self.endpoints.http(target).is_some()
        }
    }

    async fn run(&self, scenario: Scenario, target: Target, secs: f64) -> RunResult {
        let duration = Duration::from_secs_f64(secs);
        let meter = self
            .pids(target)
            .map(|pids| CpuMeter::start(pids, self.ticks));
        let mut result = if scenario == Scenario::FlightDoGet {
            let addr = self.endpoints.grpc(target).unwrap();
            drive_flight(
                format!("http://{addr}"),
                self.token.clone(),
                self.concurrency,
                duration,
            )
            .await
        } else {
            let addr = self.endpoints.http(target).unwrap();
            drive_http(
                addr,
                Arc::new(http_case(scenario, &self.token)),
                self.concurrency,
                duration,
            )
            .await
        };
        result.cpu_s = meter.map(|m| m.seconds());
        result
    }
}

type Results = BTreeMap<(Scenario, Target), Vec<RunResult>>;

fn report(results: &Results, settings: &Settings) -> String {
    let mut out = String::new();
    let mut rows = Vec::new();
    for ((scenario, target), runs) in results {
        let pick = |f: &dyn Fn(&RunResult) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let cpu: Vec<f64> = runs.iter().filter_map(RunResult::cpu_per_10k).collect();
        let errors: u64 = runs.iter().map(|r| r.errors).sum();
        rows.push(vec![
            scenario.name().to_owned(),
            target.name().to_owned(),
            format!("{:.0}", pick(&RunResult::rps)),
            format!("{:.0}", pick(&|r| r.p50_us)),
            format!("{:.0}", pick(&|r| r.p99_us)),
            opt((!cpu.is_empty()).then(|| median(&cpu)), 3),
            errors.to_string(),
        ]);
    }
    out.push_str(&format!(
        "Medians over {} rounds of {} s, concurrency {}:\n\n",
        settings.rounds, settings.secs, settings.concurrency
    ));
    out.push_str(&table(
        &[
            "scenario",
            "target",
            "req/s",
            "p50 µs",
            "p99 µs",
            "CPU s/10k req",
            "errors",
        ],
        &rows,
    ));

    // Ratios per round, then their median (and range).
    let ratio =
        |scenario: Scenario, a: Target, b: Target, f: &dyn Fn(&RunResult) -> Option<f64>| {
            let (Some(ra), Some(rb)) = (results.get(&(scenario, a)), results.get(&(scenario, b)))
            else {
                return None;
            };
            let v: Vec<f64> = ra
                .iter()
                .zip(rb)
                .filter_map(|(x, y)| Some(f(x)? / f(y)?))
                .collect();
            (!v.is_empty()).then_some(v)
        };
    let fmt = |v: Option<Vec<f64>>, decimals: usize| match v {
        None => "—".to_owned(),
        Some(v) => {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!(
                "{:.decimals$} ({lo:.decimals$}–{hi:.decimals$})",
                median(&v)
            )
        }
    };
    let added = |scenario: Scenario, target: Target| -> Option<Vec<f64>> {
        match (
            results.get(&(scenario, target)),
            results.get(&(scenario, Target::Direct)),
        ) {
            (Some(t), Some(d)) => Some(t.iter().zip(d).map(|(t, d)| t.p50_us - d.p50_us).collect()),
            _ => None,
        }
    };
    let rps = |r: &RunResult| Some(r.rps());
    let mut rows = Vec::new();
    for scenario in &settings.scenarios {
        for target in Target::ALL.into_iter().filter(|t| t.is_fluxgate()) {
            if !results.contains_key(&(*scenario, target)) {
                continue;
            }
            let before = target.before();
            rows.push(vec![
                scenario.name().to_owned(),
                target.name().to_owned(),
                fmt(added(*scenario, target), 0),
                fmt(ratio(*scenario, target, Target::Nginx, &rps), 2),
                fmt(
                    ratio(*scenario, target, Target::Nginx, &RunResult::cpu_per_10k),
                    2,
                ),
                fmt(
                    ratio(*scenario, target, Target::Hyper, &RunResult::cpu_per_10k),
                    2,
                ),
                fmt(before.and_then(|b| ratio(*scenario, target, b, &rps)), 2),
                fmt(
                    before.and_then(|b| ratio(*scenario, target, b, &RunResult::cpu_per_10k)),
                    2,
                ),
            ]);
        }
        rows.push(vec![
            scenario.name().to_owned(),
            "(nginx)".to_owned(),
            fmt(added(*scenario, Target::Nginx), 0),
            String::new(),
            String::new(),
            fmt(
                ratio(
                    *scenario,
                    Target::Nginx,
                    Target::Hyper,
                    &RunResult::cpu_per_10k,
                ),
                2,
            ),
            String::new(),
            String::new(),
        ]);
    }
    out.push_str("\nRatios (median of per-round values, range in brackets):\n\n");
    out.push_str(&table(
        &[
            "scenario",
            "target",
            "p50 added µs",
            "req/s ÷ nginx",
            "CPU/req ÷ nginx",
            "CPU/req ÷ hyper-noauth",
            "req/s ÷ before",
            "CPU/req ÷ before",
        ],
        &rows,
    ));
    out
}

fn raw_csv(results: &Results) -> String {
    let mut out = String::from(
        "scenario,target,round,requests,errors,seconds,rps,p50_us,p99_us,cpu_s,cpu_s_per_10k\n",
    );
    for ((scenario, target), runs) in results {
        for (i, r) in runs.iter().enumerate() {
            out.push_str(&format!(
                "{},{},{},{},{},{:.3},{:.1},{:.1},{:.1},{},{}\n",
                scenario.name(),
                target.name(),
                i + 1,
                r.requests,
                r.errors,
                r.seconds,
                r.rps(),
                r.p50_us,
                r.p99_us,
                r.cpu_s.map_or(String::new(), |c| format!("{c:.3}")),
                r.cpu_per_10k().map_or(String::new(), |c| format!("{c:.4}")),
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// wrk and perf

/// wrk's answer: requests/s, p50 and p99 in µs.
fn parse_wrk(text: &str) -> Option<(f64, f64, f64)> {
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let percentile = |p: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.trim_start().starts_with(p))?;
        let v = line.split_whitespace().nth(1)?;
        let (number, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = number.parse().ok()?;
        Some(match unit {
            "us" => n,
            "ms" => n * 1e3,
            "s" => n * 1e6,
            _ => return None,
        })
    };
    Some((rps, percentile("50%")?, percentile("99%")?))
}

async fn wrk_opinion(bench: &Bench, settings: &Settings, dir: &Path) -> Option<String> {
    if std::env::var("FLUXGATE_BENCH_WRK").is_ok_and(|v| v == "off" || v == "0") {
        return None;
    }
    let wrk = ["/usr/bin/wrk", "/usr/local/bin/wrk"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())?;
    let mut rows = Vec::new();
    for scenario in [Scenario::V1Write, Scenario::V1Query] {
        if !settings.scenarios.contains(&scenario) {
            continue;
        }
        let case = http_case(scenario, &bench.token);
        let body_path = dir.join(format!("wrk-{}.body", scenario.name()));
        std::fs::write(&body_path, &case.body).unwrap();
        let mut lua = format!("wrk.method = \"{}\"\n", case.method);
        if !case.body.is_empty() {
            // Read from a file: the gzip body is binary.
            lua.push_str(&format!(
                "local f = io.open(\"{}\", \"rb\")\nwrk.body = f:read(\"*a\")\nf:close()\n",
                body_path.display()
            ));
        }
        for (k, v) in &case.headers {
            lua.push_str(&format!(
                "wrk.headers[\"{k}\"] = \"{}\"\n",
                v.to_str().unwrap()
            ));
        }
        let script = dir.join(format!("wrk-{}.lua", scenario.name()));
        std::fs::write(&script, lua).unwrap();
        for target in Target::ALL {
            let Some(addr) = bench
                .endpoints
                .http(target)
                .filter(|_| bench.serves(scenario, target))
            else {
                continue;
            };
            let meter = bench
                .pids(target)
                .map(|pids| CpuMeter::start(pids, bench.ticks));
            let out = tokio::process::Command::new(wrk)
                .args([
                    "-t2",
                    &format!("-c{}", bench.concurrency),
                    &format!("-d{}s", settings.secs.ceil() as u64),
                    "--latency",
                    "-s",
                ])
                .arg(&script)
                .arg(format!("http://{addr}{}", case.path_and_query))
                .output()
                .await
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let cpu = meter.map(|m| m.seconds());
            let Some((rps, p50, p99)) = parse_wrk(&text) else {
                rows.push(vec![
                    scenario.name().to_owned(),
                    target.name().to_owned(),
                    format!("unreadable wrk output: {}", text.replace('\n', " ")),
                ]);
                continue;
            };
            let non2xx = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
                .map_or("0".to_owned(), |v| v.trim().to_owned());
            let requests = rps * settings.secs.ceil();
            rows.push(vec![
                scenario.name().to_owned(),
                target.name().to_owned(),
                format!("{rps:.0}"),
                format!("{p50:.0}"),
                format!("{p99:.0}"),
                opt(cpu.map(|c| c * 10_000.0 / requests.max(1.0)), 3),
                non2xx,
            ]);
        }
    }
    let mut out = format!(
        "\nSecond opinion: wrk -t2 -c{} -d{}s (one run each):\n\n",
        bench.concurrency,
        settings.secs.ceil()
    );
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|mut r| {
            r.resize(7, String::new());
            r
        })
        .collect();
    out.push_str(&table(
        &[
            "scenario",
            "target",
            "req/s",
            "p50 µs",
            "p99 µs",
            "CPU s/10k req",
            "non-2xx",
        ],
        &rows,
    ));
    Some(out)
}

/// Records a flat profile of `pids` for `secs` while `scenario` runs.
async fn profile(
    bench: &Bench,
    scenario: Scenario,
    target: Target,
    secs: f64,
    out: &Path,
) -> String {
    let Some(pids) = bench.pids(target) else {
        return String::new();
    };
    let data = out.join(format!("perf-{}-{}.data", scenario.name(), target.name()));
    let pid_list: Vec<String> = pids.iter().map(u32::to_string).collect();
    let recorder = Command::new("perf")
        .args(["record", "-F", "999", "-o"])
        .arg(&data)
        .args(["-p", &pid_list.join(","), "--", "sleep"])
        .arg(format!("{secs}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(recorder) = recorder else {
        return format!(
            "perf unavailable for {}/{}\n",
            scenario.name(),
            target.name()
        );
    };
    let mut recorder = ProcessGuard::new("perf record", recorder);
    let result = bench.run(scenario, target, secs).await;
    let _ = recorder.child.wait();
    let report = Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--no-children",
            "--sort",
            "dso,symbol",
            "--percent-limit",
            "1.5",
            "-i",
        ])
        .arg(&data)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let summary: String = report
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .take(25)
        .map(|l| format!("    {}\n", l.trim_end()))
        .collect();
    format!(
        "perf {}/{} ({:.0} req/s under perf; {}):\n{summary}",
        scenario.name(),
        target.name(),
        result.rps(),
        data.display()
    )
}

// ---------------------------------------------------------------------------

fn main() {
    if let Ok(spec) = std::env::var(BARE_PROXY_ENV) {
        serve_bare_proxy(&spec);
        return;
    }
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let settings = Settings::from_env();
    let out_dir = results_dir();
    let tmp = tempfile::Builder::new()
        .prefix("fluxgate-load-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_path_buf();
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    let text = runtime.block_on(run(&settings, &dir, &out_dir));
    runtime.shutdown_timeout(Duration::from_secs(2));
    println!("{text}");
    let file = out_dir.join("load.txt");
    std::fs::write(&file, &text).unwrap();
    println!("written to {}", file.display());
}

async fn run(settings: &Settings, dir: &Path, out_dir: &Path) -> String {
    let machine_before = machine();
    eprintln!("load: {machine_before}");

    // Upstream HTTP and Flight.
    let (listener, upstream_http) = bind().await;
    tokio::spawn(serve_http1(listener, upstream_handler));
    let (listener, upstream_flight) = bind().await;
    let flight = FlightUpstream::new().await;
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(FlightServiceServer::new(flight))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await
            .unwrap();
    });

    // The token service and a database token.
    let store_dir = dir.join("tokens");
    std::fs::create_dir_all(&store_dir).unwrap();
    let store = Arc::new(SqliteStore::open(&store_dir).await.unwrap());
    let registry = TokenRegistry::open(Arc::clone(&store) as _).await.unwrap();
    let (_, token) = registry
        .create(
            TokenKind::Database,
            "load benchmark".into(),
            vec![DatabasePermission {
                database: DB.into(),
                read: true,
                write: true,
            }],
            None,
        )
        .await
        .unwrap();
    let token = token.into_string();
    // What the proxy presents to follow the change stream (as deployed).
    let (_, proxy_token) = registry
        .create(
            TokenKind::Proxy,
            "load benchmark proxy".into(),
            vec![],
            None,
        )
        .await
        .unwrap();
    let proxy_token_file = dir.join("proxy-token");
    std::fs::write(&proxy_token_file, proxy_token.into_string()).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&proxy_token_file, std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    // `fluxgate serve` targets get copies of this store (same tokens); the
    // token service reopens it.
    store.close().await;
    registry.close();
    let serve_stores: Vec<PathBuf> = [Target::FluxgateServe, Target::BeforeServe]
        .iter()
        .map(|t| {
            let copy = dir.join(format!("{}-tokens", t.name()));
            copy_store(&store_dir, &copy);
            copy
        })
        .collect();
    let store = SqliteStore::open(&store_dir).await.unwrap();
    let registry = TokenRegistry::open(Arc::new(store)).await.unwrap();
    let (listener, authz) = bind().await;
    let stop_tokens = CancellationToken::new();
    {
        let (registry, stop) = (Arc::clone(&registry), stop_tokens.clone());
        tokio::spawn(async move {
            let _ = server::serve(listener, registry, stop.cancelled_owned()).await;
        });
    }

    // nginx's token check.
    let auth_calls = Arc::new(AtomicU64::new(0));
    let (listener, auth) = bind().await;
    {
        let tokens = Arc::new(HashSet::from([token.clone()]));
        let calls = Arc::clone(&auth_calls);
        tokio::spawn(serve_http1(listener, move |r| {
            auth_handler(r, Arc::clone(&tokens), Arc::clone(&calls))
        }));
    }

    // fluxgate, as its own processes: this build, and the one to compare
    // with when given.
    let mut endpoints = Endpoints::default();
    endpoints.http.insert(Target::Direct, upstream_http);
    endpoints.grpc.insert(Target::Direct, upstream_flight);
    let mut pids: BTreeMap<Target, Vec<u32>> = BTreeMap::new();
    let mut guards: Vec<ProcessGuard> = Vec::new();
    let before_binary = std::env::var_os("FLUXGATE_BENCH_BEFORE_BIN").map(PathBuf::from);
    let serve = !std::env::var("FLUXGATE_BENCH_SERVE").is_ok_and(|v| v == "off" || v == "0");
    let launches = [
        (Target::Fluxgate, Some(support::fluxgate_binary())),
        (Target::FluxgateServe, serve.then(support::fluxgate_binary)),
        (Target::Before, before_binary.clone()),
        (Target::BeforeServe, before_binary.clone().filter(|_| serve)),
    ];
    for (target, binary) in launches {
        let Some(binary) = binary else {
            continue;
        };
        let launch = match target {
            Target::FluxgateServe => Launch::Serve {
                data_dir: &serve_stores[0],
            },
            Target::BeforeServe => Launch::Serve {
                data_dir: &serve_stores[1],
            },
            _ => Launch::Proxy {
                authz,
                proxy_token_file: &proxy_token_file,
            },
        };
        let port = free_port();
        let guard = start_fluxgate(
            &binary,
            target,
            launch,
            dir,
            port,
            upstream_http,
            upstream_flight,
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        endpoints.http.insert(target, addr);
        endpoints.grpc.insert(target, addr);
        pids.insert(target, vec![guard.pid()]);
        guards.push(guard);
    }

    // nginx, when installed.
    let nginx_binary = match std::env::var("FLUXGATE_BENCH_NGINX") {
        Ok(v) if v == "off" => None,
        Ok(v) => Some(PathBuf::from(v)),
        Err(_) => Some(PathBuf::from("/usr/sbin/nginx")),
    }
    .filter(|p| p.exists());
    let nginx = nginx_binary
        .as_deref()
        .map(|b| start_nginx(b, dir, upstream_http, upstream_flight, auth));
    // The bare hyper proxy: this benchmark re-executed as a server.
    let (hyper, hyper_port) = start_bare_proxy(dir, upstream_http);
    let mut notes = Vec::new();
    if nginx.is_none() {
        notes.push(
            "nginx not found (install nginx-light) or disabled: nginx rows skipped".to_owned(),
        );
    }
    if let Some(n) = &nginx {
        endpoints.http.insert(Target::Nginx, n.http);
        endpoints.grpc.insert(Target::Nginx, n.grpc);
        let mut nginx_pids = vec![n.guard.pid()];
        nginx_pids.extend(children_of(n.guard.pid()));
        pids.insert(Target::Nginx, nginx_pids);
    }
    endpoints.http.insert(
        Target::Hyper,
        SocketAddr::from(([127, 0, 0, 1], hyper_port)),
    );
    pids.insert(Target::Hyper, vec![hyper.pid()]);
    let bench = Bench {
        endpoints,
        token: token.clone(),
        pids,
        ticks: clock_ticks(),
        concurrency: settings.concurrency,
    };
    let all_targets = Target::ALL;
    let targets_of = |scenario: Scenario| -> Vec<Target> {
        all_targets
            .into_iter()
            .filter(|t| bench.serves(scenario, *t))
            .collect()
    };

    // Warm-up: connections, both caches, the allocators.
    for scenario in &settings.scenarios {
        for target in &targets_of(*scenario) {
            let r = bench.run(*scenario, *target, settings.warmup_secs).await;
            if r.errors > 0 || r.requests == 0 {
                panic!(
                    "{}/{}: warm-up failed: {} errors, {} requests; first: {:?}",
                    scenario.name(),
                    target.name(),
                    r.errors,
                    r.requests,
                    r.first_error
                );
            }
        }
    }
    let auth_calls_after_warmup = auth_calls.load(Ordering::Relaxed);

    let mut results: Results = BTreeMap::new();
    let started = Instant::now();
    for round in 0..settings.rounds {
        for scenario in &settings.scenarios {
            // Rotate the order so no target always runs first.
            let mut order = targets_of(*scenario);
            let n = order.len();
            order.rotate_left(round % n);
            for target in order {
                let r = bench.run(*scenario, target, settings.secs).await;
                eprintln!(
                    "round {} {:>14} {:>8}: {:>7.0} req/s p50 {:>6.0} µs p99 {:>6.0} µs cpu/10k {} errors {}",
                    round + 1,
                    scenario.name(),
                    target.name(),
                    r.rps(),
                    r.p50_us,
                    r.p99_us,
                    opt(r.cpu_per_10k(), 3),
                    r.errors
                );
                if let Some(e) = &r.first_error {
                    eprintln!("    first error: {e}");
                }
                results.entry((*scenario, target)).or_default().push(r);
            }
        }
    }
    let elapsed = started.elapsed();

    let mut text = format!(
        "fluxgate load benchmark\nmachine: {machine_before}\nload average after: {}\nmeasured for {:.0} s; fluxgate {}; before {}; nginx {} ({} processes)\n\n",
        support::load_average(),
        elapsed.as_secs_f64(),
        support::fluxgate_binary().display(),
        before_binary
            .as_ref()
            .map_or("absent".to_owned(), |p| p.display().to_string()),
        nginx_binary
            .as_ref()
            .map_or("absent".to_owned(), |p| p.display().to_string()),
        bench.pids(Target::Nginx).map_or(0, |p| p.len()),
    );
    text.push_str(&report(&results, settings));
    text.push_str(&format!(
        "\nnginx auth endpoint calls: {auth_calls_after_warmup} during warm-up, {} during the rounds (proxy_cache warm)\n",
        auth_calls.load(Ordering::Relaxed) - auth_calls_after_warmup
    ));
    if let Some(metrics) = fluxgate_cache_metrics(dir).await {
        text.push_str(&format!("fluxgate cache metrics:\n{metrics}"));
    }
    for note in notes {
        text.push_str(&format!("note: {note}\n"));
    }
    if let Some(wrk) = wrk_opinion(&bench, settings, dir).await {
        text.push_str(&wrk);
    }
    if std::env::var("FLUXGATE_BENCH_PERF").is_ok_and(|v| v == "1") {
        text.push_str("\nProfiles (perf record -F 999, flat, self time):\n");
        for scenario in &settings.scenarios {
            for target in [
                Target::Fluxgate,
                Target::FluxgateServe,
                Target::Nginx,
                Target::Hyper,
            ] {
                if bench.serves(*scenario, target) {
                    text.push_str(
                        &profile(&bench, *scenario, target, settings.secs, out_dir).await,
                    );
                }
            }
        }
    }
    std::fs::write(out_dir.join("load-raw.csv"), raw_csv(&results)).unwrap();

    stop_tokens.cancel();
    registry.close();
    drop(guards);
    drop(nginx);
    drop(hyper);
    text
}

/// The proxy's cache counters, from its admin listener's `/metrics`.
async fn fluxgate_cache_metrics(dir: &Path) -> Option<String> {
    let port: u16 = std::fs::read_to_string(dir.join("fluxgate-admin-port"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let text = support::admin_metrics(port).await?;
    let lines: String = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("cache") && !l.contains("_bucket"))
        .map(|l| format!("    {l}\n"))
        .collect();
    Some(lines)
}
