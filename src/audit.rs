//! The audit trail: one JSON line per authorization decision — who (client
//! address, token id), what (method, path, API, databases, actions), the
//! decision and status, whether the cache answered, and how long it took —
//! written to its own destination (`--audit-log PATH|stdout|off`), apart
//! from the diagnostic log. Never a token.
//!
//! Writing happens on a task fed by a bounded channel, so a slow disk never
//! slows requests; if the channel is ever full, the loss is counted
//! (`fluxgate_audit_dropped_total`) and logged.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

/// Events buffered before the writer is considered overloaded.
const BUFFER: usize = 65_536;

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

/// A handle to the audit writer. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    tx: Option<mpsc::Sender<String>>,
}

impl Audit {
    /// No auditing.
    pub fn off() -> Self {
        Self { tx: None }
    }

    /// Starts the writer for `destination` (the file is opened now, so a bad
    /// path fails at start-up, naming the file).
    pub async fn start(destination: &Destination) -> std::io::Result<Self> {
        let mut sink: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = match destination {
            Destination::Off => return Ok(Self::off()),
            Destination::Stdout => Box::new(tokio::io::stdout()),
            Destination::File(path) => {
                let mut options = tokio::fs::OpenOptions::new();
                options.create(true).append(true);
                #[cfg(unix)]
                options.mode(0o600);
                let file = options.open(path).await.map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("cannot open audit log {}: {e}", path.display()),
                    )
                })?;
                Box::new(file)
            }
        };
        let (tx, mut rx) = mpsc::channel::<String>(BUFFER);
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                let mut batch = line;
                // Drain what is queued so a burst costs one write and one flush.
                while let Ok(more) = rx.try_recv() {
                    batch.push_str(&more);
                    if batch.len() > 1 << 20 {
                        break;
                    }
                }
                if let Err(e) = async {
                    sink.write_all(batch.as_bytes()).await?;
                    sink.flush().await
                }
                .await
                {
                    tracing::error!(error = %e, "cannot write the audit log");
                }
            }
        });
        Ok(Self { tx: Some(tx) })
    }

    /// True when events are written somewhere.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues one event.
    pub fn record(&self, event: &AuditEvent) {
        let Some(tx) = &self.tx else { return };
        let Ok(mut line) = serde_json::to_string(event) else {
            return;
        };
        line.push('\n');
        if tx.try_send(line).is_err() {
            metrics::counter!("fluxgate_audit_dropped_total").increment(1);
            tracing::warn!("audit log writer is behind; an audit event was dropped");
        }
    }
}
