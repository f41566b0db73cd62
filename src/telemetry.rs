//! Logs and metrics set-up: `tracing` as text or JSON lines, the global
//! Prometheus recorder whose text the admin listener serves, and the
//! per-request metrics of the proxy with their handles resolved once.
//!
//! Nothing in fluxgate logs a token: credentials live in
//! [`crate::credentials::Token`], whose `Debug` is redacted.
//!
//! A metric macro with labels (`counter!(name, "status" => s)`) builds its
//! key, allocating the label list, and looks the series up in the
//! registry's map on every call. The request path instead resolves each
//! series' handle once per label set and thread ([`RequestMetrics`],
//! [`in_flight`]): install the recorder ([`init_metrics`]) before serving,
//! as the commands do, or a thread keeps the no-op handles it resolved.

use std::cell::RefCell;
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

/// Installs the process-wide metrics recorder (once) and returns the handle
/// that renders the Prometheus text. Later calls return the same handle, so
/// several servers in one process (tests, `serve`) share one registry.
pub fn init_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .map_or_else(
                    |_| PrometheusBuilder::new().build_recorder(),
                    PrometheusBuilder::build_recorder,
                );
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics will be empty");
            }
            spawn_upkeep(handle.clone());
            metrics::gauge!("fluxgate_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// An HTTP status code.
    Http(u16),
    /// A gRPC status code.
    Grpc(i32),
}

impl Status {
    fn label(self) -> String {
        match self {
            Status::Http(code) => code.to_string(),
            Status::Grpc(code) => code.to_string(),
        }
    }
}

/// A label set as a map key: the strings by address and length (they are
/// statics; two copies of one string at two addresses resolve to the same
/// series, which the registry shares) and the status.
type LabelKey = ([(usize, usize); 4], Status);

fn identity(s: &'static str) -> (usize, usize) {
    (s.as_ptr().addr(), s.len())
}

/// The handles of one label set.
struct RequestHandles {
    requests: metrics::Counter,
    decisions: metrics::Counter,
    seconds: metrics::Histogram,
}

thread_local! {
    static REQUEST_HANDLES: RefCell<hashbrown::HashMap<LabelKey, RequestHandles>> =
        RefCell::new(hashbrown::HashMap::new());
    static IN_FLIGHT: metrics::Gauge = metrics::gauge!("fluxgate_requests_in_flight");
}

/// Most label sets kept per thread; past it handles are resolved per call
/// (statuses come from the upstream, so the set is not fixed).
const MAX_LABEL_SETS: usize = 4096;

/// `fluxgate_requests_total`, `fluxgate_decisions_total` and
/// `fluxgate_request_seconds` for one finished request.
pub fn count_request(labels: RequestLabels, seconds: f64) {
    let key: LabelKey = (
        [
            identity(labels.api),
            identity(labels.route),
            identity(labels.action),
            identity(labels.decision),
        ],
        labels.status,
    );
    REQUEST_HANDLES.with_borrow_mut(|handles| {
        if let Some(h) = handles.get(&key) {
            h.record(seconds);
            return;
        }
        let h = RequestHandles::resolve(labels);
        h.record(seconds);
        if handles.len() < MAX_LABEL_SETS {
            handles.insert(key, h);
        }
    });
}

impl RequestHandles {
    fn resolve(labels: RequestLabels) -> Self {
        let RequestLabels {
            api,
            route,
            action,
            decision,
            status,
        } = labels;
        Self {
            requests: metrics::counter!("fluxgate_requests_total", "api" => api, "route" => route, "action" => action, "status" => status.label()),
            decisions: metrics::counter!("fluxgate_decisions_total", "api" => api, "decision" => decision),
            seconds: metrics::histogram!("fluxgate_request_seconds", "api" => api),
        }
    }

    fn record(&self, seconds: f64) {
        self.requests.increment(1);
        self.decisions.increment(1);
        self.seconds.record(seconds);
    }
}

/// Adds `delta` to `fluxgate_requests_in_flight`.
pub fn in_flight(delta: f64) {
    IN_FLIGHT.with(|gauge| gauge.increment(delta));
}
