//! Shared by the benchmarks that start processes and drive them: child processes stopped
//! by PID (also on panic), CPU time of a process from `/proc`, loopback
//! ports, latency summaries, medians, the machine description and where
//! results are written.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper_util::rt::TokioIo;

/// A child process, stopped by PID when dropped: SIGTERM, then SIGKILL
/// after `grace` if it has not exited.
#[derive(Debug)]
pub(crate) struct ProcessGuard {
    pub(crate) name: String,
    pub(crate) child: Child,
    grace: Duration,
}

impl ProcessGuard {
    pub(crate) fn new(name: &str, child: Child) -> Self {
        Self {
            name: name.to_owned(),
            child,
            grace: Duration::from_secs(5),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `port` on 127.0.0.1 accepts connections; panics (and so
    /// stops every guarded process) when the process exits or 20 s pass.
    pub(crate) fn wait_for_port(&mut self, port: u16, log: &Path) {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        self.wait_until(&format!("listen on {port}"), log, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .ok()
                .map(drop)
        });
    }

    /// Waits until the process has written `file` (fluxgate's
    /// `--addresses-file`) and returns the address it names `listener`.
    pub(crate) fn wait_for_address(
        &mut self,
        file: &Path,
        listener: &str,
        log: &Path,
    ) -> SocketAddr {
        self.wait_until(&format!("write {}", file.display()), log, || {
            // Written by rename: present means complete.
            let text = std::fs::read_to_string(file).ok()?;
            let map: std::collections::HashMap<String, SocketAddr> =
                serde_json::from_str(&text).expect("the addresses file is JSON");
            Some(*map.get(listener).expect("the listener's address"))
        })
    }

    /// Polls `ready` until it gives a value; panics with the process's log
    /// (`log`) when the process exits first or 20 s pass without it doing
    /// `what`.
    fn wait_until<T>(&mut self, what: &str, log: &Path, mut ready: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited early ({status}):\n{}",
                    self.name,
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if let Some(value) = ready() {
                return value;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{} did not {what} in time:\n{}",
            self.name,
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// Stops the process now (see the type's doc).
    pub(crate) fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
pub(crate) fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Fields of `/proc/<pid>/stat` after the command name (field 3 onwards).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// User + system CPU ticks of `pid` (every thread, living or exited); 0
/// when it is gone.
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    ticks_of(pid).unwrap_or(0)
}

/// The processes whose parent is `pid` (nginx's workers).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            stat_fields(*child).and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok()))
                == Some(pid)
        })
        .collect()
}

/// CPU seconds used by a set of processes, between two readings. A process
/// that has exited by the second reading (nginx's cache loader) is left out.
#[derive(Debug, Clone)]
pub(crate) struct CpuMeter {
    start: Vec<(u32, Option<u64>)>,
    ticks_per_s: u64,
}

/// User + system ticks of `pid`, `None` when it is gone.
fn ticks_of(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

impl CpuMeter {
    pub(crate) fn start(pids: Vec<u32>, ticks_per_s: u64) -> Self {
        Self {
            start: pids.into_iter().map(|p| (p, ticks_of(p))).collect(),
            ticks_per_s,
        }
    }

    pub(crate) fn seconds(&self) -> f64 {
        let ticks: u64 = self
            .start
            .iter()
            .filter_map(|(pid, start)| Some(ticks_of(*pid)?.saturating_sub((*start)?)))
            .sum();
        ticks as f64 / self.ticks_per_s as f64
    }
}

/// A latency histogram in nanoseconds (1 ns … 60 s, 3 significant digits).
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

/// What one measured run produced.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunResult {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) seconds: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// CPU seconds of the process under test, if there is one.
    pub(crate) cpu_s: Option<f64>,
    /// The first error seen, for the report.
    pub(crate) first_error: Option<String>,
}

impl RunResult {
    pub(crate) fn from_histogram(
        h: &Histogram<u64>,
        errors: u64,
        seconds: f64,
        first_error: Option<String>,
    ) -> Self {
        Self {
            requests: h.len(),
            errors,
            seconds,
            p50_us: h.value_at_quantile(0.50) as f64 / 1e3,
            p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
            cpu_s: None,
            first_error,
        }
    }

    pub(crate) fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    /// CPU seconds per 10,000 requests of the process under test.
    pub(crate) fn cpu_per_10k(&self) -> Option<f64> {
        self.cpu_s
            .filter(|_| self.requests > 0)
            .map(|c| c * 10_000.0 / self.requests as f64)
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `nproc`, the CPU model and the load average, for the report header.
pub(crate) fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{cpus} CPUs ({model}), load average {}", load_average())
}

/// `/proc/loadavg`'s first three fields.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// `target/bench-results` (or `$FLUXGATE_BENCH_RESULTS`), created.
pub(crate) fn results_dir() -> PathBuf {
    let dir = std::env::var_os("FLUXGATE_BENCH_RESULTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
            target.join("bench-results")
        });
    std::fs::create_dir_all(&dir).expect("create the results directory");
    dir
}

/// An environment setting parsed as `T`, or `default`.
pub(crate) fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `fluxgate` binary under test: `$FLUXGATE_BENCH_BIN`, else the one
/// cargo built with this benchmark (same profile).
pub(crate) fn fluxgate_binary() -> PathBuf {
    std::env::var_os("FLUXGATE_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_fluxgate")))
}

/// A `Command` for `program` with no inherited FLUXGATE_* or RUST_LOG.
pub(crate) fn clean_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars() {
        if k.starts_with("FLUXGATE_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Formats an optional number, `—` when absent.
pub(crate) fn opt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "—".to_owned(),
    }
}

/// A simple text table: header row and rows, columns padded.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// Starts `fluxgate authz` (the `binary`) over `data_dir` plus the `store`
/// flags, logging to `log_path`, on a port it picks, and waits until it
/// listens.
pub(crate) fn spawn_authz(
    binary: &Path,
    name: &str,
    data_dir: &Path,
    log_path: &Path,
    store: &[String],
) -> (ProcessGuard, SocketAddr) {
    std::fs::create_dir_all(data_dir).unwrap();
    let addresses = log_path.with_extension("addresses.json");
    let _ = std::fs::remove_file(&addresses);
    let log = std::fs::File::create(log_path).unwrap();
    let mut cmd = clean_command(binary);
    cmd.args([
        "authz",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ])
    .arg("--addresses-file")
    .arg(&addresses)
    .arg("--data-dir")
    .arg(data_dir)
    .args(store)
    .args(["--log-level", "warn"])
    .stdin(Stdio::null())
    .stdout(log.try_clone().unwrap())
    .stderr(log);
    let mut guard = ProcessGuard::new(name, cmd.spawn().expect("start fluxgate authz"));
    let addr = guard.wait_for_address(&addresses, "token_service", log_path);
    (guard, addr)
}

/// This process's resident set, in bytes (0 when `/proc` cannot tell).
pub(crate) fn resident_bytes() -> u64 {
    resident_bytes_at("/proc/self/status")
}

/// Process `pid`'s resident set, in bytes (0 when `/proc` cannot tell).
pub(crate) fn resident_bytes_of(pid: u32) -> u64 {
    resident_bytes_at(&format!("/proc/{pid}/status"))
}

fn resident_bytes_at(status: &str) -> u64 {
    let status = std::fs::read_to_string(status).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Write on database `bench`: what every Authorize benchmark asks for.
pub(crate) fn write_bench() -> fluxgate::proto::iox_authz::Permission {
    use fluxgate::proto::iox_authz::permission::PermissionOneOf;
    use fluxgate::proto::iox_authz::resource_action_permission::{Action, ResourceType, Target};
    use fluxgate::proto::iox_authz::{Permission, ResourceActionPermission};
    Permission {
        permission_one_of: Some(PermissionOneOf::ResourceAction(ResourceActionPermission {
            resource_type: ResourceType::Database as i32,
            target: Some(Target::ResourceName("bench".to_owned())),
            action: Action::Write as i32,
        })),
    }
}

/// Writes `contents` to a new file only its owner may read or write:
/// tokens, a benchmark's too, never lie on disk readable by others.
pub(crate) fn write_secret(path: &Path, contents: &[u8]) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Serves `handler` over HTTP/1.1 keep-alive on `listener`, forever.
pub(crate) async fn serve_http1<F, Fut>(listener: tokio::net::TcpListener, handler: F)
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<http::Response<Full<Bytes>>, std::convert::Infallible>>
        + Send
        + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handler))
                .await;
        });
    }
}

/// A keep-alive HTTP/1.1 client connection to `addr` (no delay), its
/// connection task spawned.
pub(crate) async fn connect_http1(
    addr: SocketAddr,
) -> Result<
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// The text of `GET /metrics` on a fluxgate admin listener at `port`.
pub(crate) async fn admin_metrics(port: u16) -> Option<String> {
    use http_body_util::BodyExt as _;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut sender = connect_http1(addr).await.ok()?;
    let request = http::Request::get("/metrics")
        .header(http::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))
        .ok()?;
    let body = sender
        .send_request(request)
        .await
        .ok()?
        .into_body()
        .collect()
        .await
        .ok()?
        .to_bytes();
    Some(String::from_utf8_lossy(&body).into_owned())
}

/// The value of the unlabelled metric `name` in Prometheus text `metrics`.
pub(crate) fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

/// Database tokens written to the store per transaction when seeding.
const SEED_BATCH: usize = 5_000;

/// Seeds `n` database tokens holding `permissions` into a new SQLite store
/// in `dir`, through the store's own write path ([`Write::Create`], as
/// `token create` writes, batched); hands each token's string, with its
/// index, to `each` (tokens are secrets: kept in memory or written with
/// [`write_secret`]).
///
/// [`Write::Create`]: fluxgate::tokens::store::Write::Create
pub(crate) async fn seed_database_tokens(
    dir: &Path,
    n: usize,
    permissions: &[fluxgate::tokens::model::DatabasePermission],
    mut each: impl FnMut(usize, String),
) {
    use fluxgate::tokens::store::{TokenStore as _, Write};
    use fluxgate::tokens::{SqliteStore, TokenRegistry, model::TokenKind};
    let store = SqliteStore::open(dir).await.expect("open the token store");
    let mut made = 0;
    while made < n {
        let batch = SEED_BATCH.min(n - made);
        let mut writes = Vec::with_capacity(batch);
        for i in made..made + batch {
            let (record, token) = TokenRegistry::new_token(
                TokenKind::Database,
                format!("bench {i}"),
                permissions.to_vec(),
                None,
            )
            .expect("a valid token");
            each(i, token.into_string());
            writes.push(Write::Create(record));
        }
        store.write(&writes).await.expect("seed the token store");
        made += batch;
    }
    store.close().await;
}

/// What one load worker measured: the latencies (ns) of the requests
/// answered as expected, how many were not (or failed), and the first
/// such error.
pub(crate) type WorkerOutput = (Histogram<u64>, u64, Option<String>);

/// `outputs` as one result over `seconds`.
pub(crate) fn merge(outputs: impl IntoIterator<Item = WorkerOutput>, seconds: f64) -> RunResult {
    let mut all = histogram();
    let mut errors = 0;
    let mut first_error = None;
    for (h, e, f) in outputs {
        all.add(&h).expect("histograms of the same bounds");
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    RunResult::from_histogram(&all, errors, seconds, first_error)
}

/// Drives one keep-alive HTTP/1.1 connection to `addr` per worker: each
/// sends what its closure gives (a request and the status its answer must
/// have), one at a time, reading every answer to its end, until the
/// closure gives nothing or `until` passes. A connection the server closes
/// is opened again; a failed connect is an error, retried after 10 ms.
pub(crate) async fn drive_http1<F>(
    addr: SocketAddr,
    workers: Vec<F>,
    until: Option<Instant>,
) -> Vec<WorkerOutput>
where
    F: FnMut() -> Option<(http::Request<Full<Bytes>>, http::StatusCode)> + Send + 'static,
{
    use http_body_util::BodyExt as _;
    let handles: Vec<_> = workers
        .into_iter()
        .map(|mut next| {
            tokio::spawn(async move {
                let mut h = histogram();
                let mut errors = 0u64;
                let mut first_error = None;
                let mut sender = None;
                while until.is_none_or(|u| Instant::now() < u) {
                    let s = match &mut sender {
                        Some(s) => s,
                        None => match connect_http1(addr).await {
                            Ok(s) => sender.insert(s),
                            Err(e) => {
                                errors += 1;
                                first_error.get_or_insert(format!("connect: {e}"));
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        },
                    };
                    if s.ready().await.is_err() {
                        // The server closed the connection (keep-alive limit).
                        sender = None;
                        continue;
                    }
                    let Some((request, expect)) = next() else {
                        break;
                    };
                    let t = Instant::now();
                    match s.send_request(request).await {
                        Ok(response) => {
                            let status = response.status();
                            let body = response.into_body().collect().await;
                            if status == expect && body.is_ok() {
                                h.record(t.elapsed().as_nanos() as u64)
                                    .expect("latency within the histogram's bounds");
                            } else {
                                errors += 1;
                                first_error.get_or_insert_with(|| {
                                    format!(
                                        "status {status}: {:?}",
                                        body.map(|b| b.to_bytes()).unwrap_or_default()
                                    )
                                });
                            }
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(format!("request: {e}"));
                            sender = None;
                        }
                    }
                }
                (h, errors, first_error)
            })
        })
        .collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("a load worker panicked"));
    }
    outputs
}
