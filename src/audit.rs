//! The audit trail: one JSON line per authorization decision — who (client
//! address, token id), what (method, path, API, databases, actions), the
//! decision and status, whether the cache answered, and how long it took —
//! written to its own destination (`--audit-log PATH|stdout|off`), apart
//! from the diagnostic log. Never a token.
//!
//! Writing happens on a task fed by a bounded channel, so a slow disk never
//! slows requests. The trail cannot stop silently:
//! - A file that is renamed or deleted (rotation) is noticed — its path no
//!   longer names the open file (device and inode compared), checked on
//!   every batch and every second — and reopened, as it is on SIGHUP.
//! - Every event not written is counted in `fluxgate_audit_dropped_total`
//!   and logged: a full channel, and write errors (a full disk).
//! - With `--audit-required`, [`Audit::accepting`] is false while events
//!   cannot be written (the last write failed, or the channel is full): the
//!   request path answers 503 (UNAVAILABLE on gRPC) instead of serving
//!   requests unaudited.
//! - The file is created with mode 0600; an existing regular file that
//!   group or others can read is tightened to 0600, or refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{Notify, mpsc};

/// Events buffered before the writer is considered overloaded.
const BUFFER: usize = 65_536;

/// How often the file's path is checked for rotation.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Least time between two error lines about failing writes.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// One decision, as written.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// RFC 3339 time of the decision.
    pub time: String,
    /// Client address.
    pub client: String,
    /// HTTP method, or `POST` for gRPC.
    pub method: String,
    /// Request path (no query string: it may hold credentials).
    pub path: String,
    /// `v1`, `v2`, `v3` or `flight`.
    pub api: &'static str,
    /// Databases the request needed.
    pub databases: Vec<String>,
    /// Actions the request needed (`read`, `write`, `create`…).
    pub actions: Vec<&'static str>,
    /// `allow`, `deny` or `error`.
    pub decision: &'static str,
    /// HTTP status (gRPC: 200 with the gRPC status in `grpc_status`).
    pub status: u16,
    /// The gRPC status code, for Flight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<i32>,
    /// The token's id, when the token was recognised.
    pub token_id: Option<String>,
    /// `hit`, `miss`, `stale` or `none` (decided without the cache).
    pub cache: &'static str,
    /// Time spent in the proxy, milliseconds.
    pub latency_ms: f64,
    /// Why the request was refused, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Now, as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Where audit events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Nowhere.
    Off,
    /// Standard output.
    Stdout,
    /// Appended to a file (created with mode 0600).
    File(PathBuf),
}

impl std::str::FromStr for Destination {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "" | "off" => Destination::Off,
            "stdout" | "-" => Destination::Stdout,
            path => Destination::File(PathBuf::from(path)),
        })
    }
}

/// Settings of the audit writer.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditOptions {
    /// `--audit-required`: refuse requests while events cannot be written.
    pub required: bool,
}

/// What the writer and the handles share.
#[derive(Debug)]
struct State {
    required: bool,
    /// The last write failed (cleared by the next one that succeeds).
    failing: AtomicBool,
    dropped: AtomicU64,
    dropped_metric: metrics::Counter,
    reopen: Notify,
}

impl State {
    fn new(required: bool) -> Arc<Self> {
        Arc::new(Self {
            required,
            failing: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            dropped_metric: metrics::counter!("fluxgate_audit_dropped_total"),
            reopen: Notify::new(),
        })
    }

    fn drop_events(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        self.dropped_metric.increment(n);
    }
}

/// A handle to the audit writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Audit {
    tx: Option<mpsc::Sender<String>>,
    state: Arc<State>,
}

impl Default for Audit {
    fn default() -> Self {
        Self::off()
    }
}

/// Describes the audit metrics and registers them at zero.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "fluxgate_audit_dropped_total",
        "Audit events not written (writer behind, or write errors such as a full disk)"
    );
    metrics::counter!("fluxgate_audit_dropped_total").absolute(0);
}

impl Audit {
    /// No auditing.
    pub fn off() -> Self {
        Self {
            tx: None,
            state: State::new(false),
        }
    }

    /// Starts the writer for `destination` with default options.
    pub async fn start(destination: &Destination) -> std::io::Result<Self> {
        Self::start_with(destination, AuditOptions::default()).await
    }

    /// Starts the writer for `destination` (the file is opened now, so a bad
    /// path fails at start-up, naming the file). Reopens the file on SIGHUP.
    pub async fn start_with(
        destination: &Destination,
        options: AuditOptions,
    ) -> std::io::Result<Self> {
        let sink = match destination {
            Destination::Off => return Ok(Self::off()),
            Destination::Stdout => Sink::Stdout(tokio::io::stdout()),
            Destination::File(path) => Sink::File(FileSink::open(path).await?),
        };
        let state = State::new(options.required);
        let (tx, rx) = mpsc::channel::<String>(BUFFER);
        tokio::spawn(write_loop(sink, rx, Arc::clone(&state)));
        #[cfg(unix)]
        if matches!(destination, Destination::File(_)) {
            reopen_on_sighup(Arc::downgrade(&state));
        }
        Ok(Self {
            tx: Some(tx),
            state,
        })
    }

    /// True when events are written somewhere.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Whether a request may be served now: always, unless
    /// `--audit-required` is on and events cannot be written (the last
    /// write failed, or the writer is too far behind to take one more).
    /// The request path asks this before forwarding.
    pub fn accepting(&self) -> bool {
        match &self.tx {
            Some(tx) if self.state.required => {
                !self.state.failing.load(Ordering::Relaxed) && tx.capacity() > 0
            }
            _ => true,
        }
    }

    /// True while the last write failed.
    pub fn is_failing(&self) -> bool {
        self.state.failing.load(Ordering::Relaxed)
    }

    /// Events lost so far (channel full or write errors).
    pub fn dropped(&self) -> u64 {
        self.state.dropped.load(Ordering::Relaxed)
    }

    /// Asks the writer to reopen its file now (as SIGHUP does).
    pub fn reopen(&self) {
        self.state.reopen.notify_one();
    }

    /// Queues one event.
    pub fn record(&self, event: &AuditEvent) {
        let Some(tx) = &self.tx else { return };
        let Ok(mut line) = serde_json::to_string(event) else {
            return;
        };
        line.push('\n');
        if tx.try_send(line).is_err() {
            self.state.drop_events(1);
            tracing::warn!("audit log writer is behind; an audit event was dropped");
        }
    }
}

#[cfg(unix)]
fn reopen_on_sighup(state: std::sync::Weak<State>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; the audit log is reopened on rotation only");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(state) = state.upgrade() else { return };
            state.reopen.notify_one();
        }
    });
}

/// Where the writer writes.
enum Sink {
    Stdout(tokio::io::Stdout),
    File(FileSink),
}

impl Sink {
    async fn write(&mut self, batch: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout(out) => write_all(out, batch).await,
            Sink::File(file) => file.write(batch).await,
        }
    }

    async fn check(&mut self, force: bool) {
        if let Sink::File(file) = self {
            file.check(force).await;
        }
    }
}

async fn write_all(out: &mut (impl AsyncWrite + Unpin), batch: &[u8]) -> std::io::Result<()> {
    out.write_all(batch).await?;
    out.flush().await
}

/// The audit file and the identity of what is open.
struct FileSink {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    /// (device, inode) of the open file.
    identity: Option<(u64, u64)>,
}

impl FileSink {
    async fn open(path: &Path) -> std::io::Result<Self> {
        let named = |e: std::io::Error| {
            std::io::Error::new(
                e.kind(),
                format!("cannot open audit log {}: {e}", path.display()),
            )
        };
        restrict(path).map_err(named)?;
        let (file, identity) = open_append(path).await.map_err(named)?;
        Ok(Self {
            path: path.to_owned(),
            file: Some(file),
            identity,
        })
    }

    /// Reopens when the path no longer names the open file (renamed or
    /// deleted by rotation), or when `force`d (SIGHUP, a failed write).
    async fn check(&mut self, force: bool) {
        let moved = match tokio::fs::metadata(&self.path).await {
            Err(_) => true,
            Ok(meta) => identity(&meta) != self.identity,
        };
        if !(moved || force || self.file.is_none()) {
            return;
        }
        if let Err(e) = restrict(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "audit log: cannot restrict the new file to mode 0600");
        }
        match open_append(&self.path).await {
            Ok((file, identity)) => {
                if moved {
                    tracing::info!(path = %self.path.display(), "audit log was rotated; writing to a new file");
                }
                self.file = Some(file);
                self.identity = identity;
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot reopen the audit log");
                self.file = None;
                self.identity = None;
            }
        }
    }

    async fn write(&mut self, batch: &[u8]) -> std::io::Result<()> {
        let Some(file) = &mut self.file else {
            return Err(std::io::Error::other("the audit log is not open"));
        };
        write_all(file, batch).await
    }
}

async fn open_append(path: &Path) -> std::io::Result<(tokio::fs::File, Option<(u64, u64)>)> {
    let mut options = tokio::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    options.mode(0o600);
    let file = options.open(path).await?;
    let id = file.metadata().await.ok().and_then(|m| identity(&m));
    Ok((file, id))
}

/// (device, inode): what tells a renamed file from a new one at the path.
fn identity(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// An existing regular file that group or others may read or write is
/// tightened to 0600 (devices such as `/dev/full` are left alone).
fn restrict(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_file() && mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
                |e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("it is open to group or others (mode {mode:03o}) and cannot be restricted to 0600: {e}"),
                    )
                },
            )?;
            tracing::warn!(path = %path.display(), was = format!("{mode:03o}"), "audit log was readable by group or others; restricted it to 0600");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Writes batches until every handle is gone.
async fn write_loop(mut sink: Sink, mut rx: mpsc::Receiver<String>, state: Arc<State>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error_log: Option<Instant> = None;
    let mut lost_since_log: u64 = 0;
    loop {
        let mut batch = tokio::select! {
            line = rx.recv() => match line {
                Some(line) => line,
                None => return,
            },
            _ = tick.tick() => {
                sink.check(false).await;
                continue;
            }
            () = state.reopen.notified() => {
                tracing::info!("reopening the audit log");
                sink.check(true).await;
                continue;
            }
        };
        // Drain what is queued so a burst costs one write and one flush.
        while let Ok(more) = rx.try_recv() {
            batch.push_str(&more);
            if batch.len() > 1 << 20 {
                break;
            }
        }
        let failing = state.failing.load(Ordering::Relaxed);
        sink.check(failing).await;
        match sink.write(batch.as_bytes()).await {
            Ok(()) => {
                if failing {
                    tracing::warn!(lost = lost_since_log, "audit log writes succeed again");
                    lost_since_log = 0;
                    last_error_log = None;
                }
                state.failing.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                let lost = batch.bytes().filter(|b| *b == b'\n').count() as u64;
                state.drop_events(lost);
                state.failing.store(true, Ordering::Relaxed);
                lost_since_log += lost;
                if last_error_log.is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY) {
                    tracing::error!(error = %e, lost = lost_since_log, required = state.required, "cannot write the audit log; audit events are lost");
                    last_error_log = Some(Instant::now());
                    lost_since_log = 0;
                }
            }
        }
    }
}
