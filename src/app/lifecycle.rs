//! A long-running command's life: listeners bound (and their addresses
//! published for supervisors), the shutdown signal, and the drain that
//! bounds how long in-flight work may finish.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Binds `addr`, naming it (and what it is for) in the error.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))?;
    tracing::info!(addr = %listener.local_addr()?, "{what} listening");
    Ok(listener)
}

/// The addresses a command listens on, written to `--addresses-file` once
/// all are bound (so a supervisor that asked for port 0 learns the ports
/// without guessing or racing), and removed again when dropped.
#[derive(Debug)]
pub(super) struct Addresses {
    file: Option<PathBuf>,
}

impl Addresses {
    /// Writes `{"name": "ip:port", …}` to the file, replacing it atomically:
    /// a reader never sees half a file.
    pub(super) fn publish(
        file: Option<&Path>,
        bound: &[(&str, &TcpListener)],
    ) -> anyhow::Result<Self> {
        let Some(file) = file else {
            return Ok(Self { file: None });
        };
        let mut map = serde_json::Map::new();
        for (name, listener) in bound {
            map.insert(
                (*name).to_owned(),
                serde_json::Value::String(listener.local_addr()?.to_string()),
            );
        }
        let text = serde_json::Value::Object(map).to_string();
        let mut temporary = file.as_os_str().to_owned();
        temporary.push(format!(".{}.tmp", std::process::id()));
        let temporary = PathBuf::from(temporary);
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, file))
            .with_context(|| format!("cannot write --addresses-file {}", file.display()))?;
        Ok(Self {
            file: Some(file.to_path_buf()),
        })
    }
}

impl Drop for Addresses {
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            // Gone with the process, so nobody reads ports nobody listens on.
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested; draining");
}

/// Runs `server` until it ends, or until `grace` after `shutdown` fired.
pub async fn drain<F>(server: F, shutdown: CancellationToken, grace: Duration) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = server => r,
        () = deadline => {
            tracing::warn!(grace = ?grace, "shutdown grace period over; closing remaining connections");
            Ok(())
        }
    }
}
