//! [`ServerTls`]: a listener's TLS configuration that follows its files.
//!
//! Each accepted connection takes the configuration current at that moment
//! and keeps it for its whole life, so swapping in a new one changes only
//! new handshakes: established connections (HTTP/1.1 keep-alive, long gRPC
//! streams) are never dropped. The files (certificate, key, client CA) are
//! checked every few seconds for a changed modification time, size or inode
//! (which also catches Kubernetes' symlink swap of a mounted secret), and
//! re-read at once on SIGHUP. A new set that does not load (a truncated
//! file, a key written before its certificate, a mismatch) leaves the
//! configuration in use untouched and logs why; the next change is tried
//! again.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::ServerConfig;
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::server::{ServerFiles, build};
use super::{PemFile, TlsError};

/// How often the files are checked for changes.
pub const DEFAULT_POLL: Duration = Duration::from_secs(2);

/// Sessions remembered for resumption, per listener.
const SESSION_CACHE_SIZE: usize = 1024;

/// What a file looked like: modification time, length and inode, or
/// `None` when it could not be examined (missing).
type FileState = Option<(Option<SystemTime>, u64, u64)>;

fn file_state(file: &PemFile) -> FileState {
    let meta = std::fs::metadata(&file.path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.modified().ok(), meta.len(), inode))
}

/// A TLS server configuration kept in step with its files. Cheap to clone;
/// clones share the configuration.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

struct Inner {
    /// For logs: "proxy" or "token service".
    listener: &'static str,
    files: ServerFiles,
    sessions: Arc<dyn StoresServerSessions>,
    current: RwLock<Arc<ServerConfig>>,
    /// The files' state at the last load attempt, successful or not.
    seen: Mutex<Vec<FileState>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("listener", &self.inner.listener)
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads `files` for `listener` (named in logs). Fails, naming the file,
    /// when any of them cannot be used: at startup there is nothing to fall
    /// back to.
    pub fn load(listener: &'static str, files: ServerFiles) -> Result<Self, TlsError> {
        let sessions: Arc<dyn StoresServerSessions> =
            ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
        let seen = files.paths().into_iter().map(file_state).collect();
        let (config, fingerprint) = build(&files, Arc::clone(&sessions))?;
        tracing::info!(
            listener,
            cert = %files.cert.path.display(),
            sha256 = %fingerprint,
            client_ca = ?files.client_ca.as_ref().map(|f| f.path.display().to_string()),
            "TLS enabled"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                listener,
                files,
                sessions,
                current: RwLock::new(config),
                seen: Mutex::new(seen),
            }),
        })
    }

    /// The configuration new handshakes use right now.
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.inner.current.read())
    }

    /// An acceptor for one new connection, with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config())
    }

    /// Re-reads the files now. On success new handshakes use them; on
    /// failure the configuration in use stays and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let inner = &self.inner;
        *inner.seen.lock() = inner.files.paths().into_iter().map(file_state).collect();
        let (config, fingerprint) = build(&inner.files, Arc::clone(&inner.sessions))?;
        *inner.current.write() = config;
        tracing::info!(
            listener = inner.listener,
            cert = %inner.files.cert.path.display(),
            sha256 = %fingerprint,
            "TLS certificate reloaded; new connections use it"
        );
        Ok(())
    }

    /// Reloads when a file changed since the last attempt, successful or
    /// not: a broken file is reported once, not on every check.
    fn reload_if_changed(&self) {
        let now: Vec<FileState> = self
            .inner
            .files
            .paths()
            .into_iter()
            .map(file_state)
            .collect();
        if *self.inner.seen.lock() != now {
            self.reload_logged("a file changed");
        }
    }

    fn reload_logged(&self, why: &str) {
        if let Err(e) = self.reload() {
            tracing::error!(
                listener = self.inner.listener,
                trigger = why,
                error = %e,
                "TLS reload failed; the certificate in use stays in use"
            );
            metrics::counter!("fluxgate_tls_reload_failures_total", "listener" => self.inner.listener)
                .increment(1);
        }
    }

    /// Follows the files until `shutdown`: checks them every `poll`, and
    /// reloads on SIGHUP. The signal handler is installed before this
    /// returns, so a SIGHUP sent once the listener is up never takes the
    /// default action (terminating the process).
    pub fn watch(
        &self,
        poll: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        #[cfg(unix)]
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; TLS files are still checked for changes");
                None
            }
        };
        let tls = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate; the files were just read
            loop {
                #[cfg(unix)]
                let hup = async {
                    match hangup.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hup = std::future::pending::<Option<()>>();
                let forced = tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => false,
                    Some(()) = hup => true,
                };
                // File reads and key parsing: off the async workers.
                let tls = tls.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if forced {
                        tracing::info!(
                            listener = tls.inner.listener,
                            "SIGHUP: reloading TLS files"
                        );
                        tls.reload_logged("SIGHUP");
                    } else {
                        tls.reload_if_changed();
                    }
                })
                .await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_have_no_state() {
        let file = PemFile::new("--tls-cert", "/nonexistent/fluxgate/cert.pem");
        assert_eq!(file_state(&file), None);
    }
}
