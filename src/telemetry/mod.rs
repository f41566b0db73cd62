//! Logs and metrics set-up: `tracing` as text or JSON lines, the global
//! Prometheus recorder, and the text `/metrics` serves ([`Metrics`]): the
//! recorder's metrics and those counted on every request, per thread
//! instead ([`requests`]; the decision cache's hits and the query readings
//! reused on [`Striped`] counters).
//!
//! Nothing in fluxgate logs a token: credentials live in
//! [`crate::credentials::Token`], whose `Debug` is redacted.

mod requests;
mod striped;

pub use self::requests::{count_request, in_flight, upstream_seconds};
pub use self::striped::Striped;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Installs the global `tracing` subscriber. The filter is `level` when
/// given, else `RUST_LOG`, else `info`. Logs go to stderr.
pub fn init_logging(format: LogFormat, level: Option<&str>) -> anyhow::Result<()> {
    init_logging_to(format, level, std::io::stderr)
}

/// [`init_logging`] with another destination (tests capture logs this way).
pub fn init_logging_to<W>(format: LogFormat, level: Option<&str>, writer: W) -> anyhow::Result<()>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = match level {
        Some(l) => EnvFilter::try_new(l)?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // Colours only on a terminal: escape codes in files and journald are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}

/// What `/metrics` serves: the recorder's metrics and the per-request ones.
#[derive(Debug, Clone)]
pub struct Metrics {
    recorder: PrometheusHandle,
}

impl Metrics {
    /// Everything counted so far, in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut text = self.recorder.render();
        requests::render(&mut text);
        requests::counter(
            &mut text,
            "fluxgate_cache_hits_total",
            "Permission checks answered from the decision cache",
            CACHE_HITS.sum(),
        );
        requests::counter(
            &mut text,
            "fluxgate_query_readings_reused_total",
            "GET /query requests decided from their connection's last reading of the same query string, not read again",
            READINGS_REUSED.sum(),
        );
        text
    }

    /// [`Metrics::render`] as a function, for the admin listener.
    pub fn renderer(&self) -> std::sync::Arc<dyn Fn() -> String + Send + Sync> {
        let metrics = self.clone();
        std::sync::Arc::new(move || metrics.render())
    }
}

/// Installs the process-wide metrics recorder (once) and returns what
/// renders the Prometheus text. Later calls return the same, so several
/// servers in one process (tests, `serve`) share one registry.
pub fn init_metrics() -> Metrics {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    let recorder = HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&requests::BUCKETS)
                .map_or_else(
                    |_| PrometheusBuilder::new().build_recorder(),
                    PrometheusBuilder::build_recorder,
                );
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "another metrics recorder is installed; /metrics will lack its metrics"
                );
            }
            spawn_upkeep(handle.clone());
            metrics::gauge!("fluxgate_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone();
    Metrics { recorder }
}

/// `fluxgate_cache_hits_total`: counted on most requests, from whichever
/// thread serves them.
static CACHE_HITS: Striped = Striped::new();

/// `n` permission checks answered from a decision cache (or a connection's
/// memory of its answers).
pub fn cache_hits(n: u64) {
    CACHE_HITS.add(n);
}

/// `fluxgate_query_readings_reused_total`.
static READINGS_REUSED: Striped = Striped::new();

/// A `GET /query` decided from its connection's last reading.
pub fn query_reading_reused() {
    READINGS_REUSED.add(1);
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds histogram samples into their buckets every [`UPKEEP_EVERY`]: the
/// recorder keeps every sample recorded until then, so without this a proxy
/// nobody scrapes grows by 8 bytes per request.
fn spawn_upkeep(handle: PrometheusHandle) {
    let started = std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
    }
}

/// The labels of one request's metrics, each a `&'static str` from a fixed
/// set, and its status (HTTP status or gRPC code).
#[derive(Debug, Clone, Copy)]
pub struct RequestLabels {
    /// `api`.
    pub api: &'static str,
    /// `route`.
    pub route: &'static str,
    /// `action`.
    pub action: &'static str,
    /// `decision`.
    pub decision: &'static str,
    /// `status`.
    pub status: Status,
}

/// A request's `status` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// An HTTP status code.
    Http(u16),
    /// A gRPC status code.
    Grpc(i32),
    /// `other`: an HTTP status outside 100–599, or any status of a label
    /// set past the most a thread's shard keeps.
    Other,
}

/// gRPC's `UNKNOWN`, what a gRPC client makes of a status outside 0–16.
const GRPC_UNKNOWN: i32 = 2;

impl Status {
    /// The status as counted: a gRPC status from the upstream outside
    /// gRPC's codes is `UNKNOWN`, as a gRPC client reads it, and an HTTP
    /// status outside HTTP's classes (100–599; hyper passes up to 999) is
    /// `other`. So the label values are few, and an HTTP status never
    /// prints like a gRPC one (0–16).
    fn counted(self) -> Self {
        match self {
            Status::Grpc(code) if !(0..=16).contains(&code) => Status::Grpc(GRPC_UNKNOWN),
            Status::Http(code) if !(100..=599).contains(&code) => Status::Other,
            other => other,
        }
    }

    fn label(self) -> String {
        match self {
            Status::Http(code) => code.to_string(),
            Status::Grpc(code) => code.to_string(),
            Status::Other => "other".to_owned(),
        }
    }
}

/// A label set as a map key: the strings by address and length (they are
/// statics, so comparing them is comparing two words; two copies of one
/// string at two addresses are two keys, summed into one series when
/// rendered) and the status.
type LabelKey = ([(usize, usize); 4], Status);

fn label_key(labels: &RequestLabels) -> LabelKey {
    let identity = |s: &'static str| (s.as_ptr().addr(), s.len());
    (
        [
            identity(labels.api),
            identity(labels.route),
            identity(labels.action),
            identity(labels.decision),
        ],
        labels.status,
    )
}
