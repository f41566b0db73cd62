//! Assembles the components each long-running command needs and runs them
//! until shutdown: `fluxgate authz`, `fluxgate proxy`, `fluxgate serve`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{Admin, always_ready};
use crate::config::{AuthzArgs, TokenServiceOptions};
use crate::telemetry;
use crate::tokens::{SqliteStore, TokenRegistry, server};

/// Binds `addr`, naming it (and what it is for) in the error.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))?;
    tracing::info!(addr = %listener.local_addr()?, "{what} listening");
    Ok(listener)
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

/// Opens the embedded store and the registry, creating the bootstrap
/// management token on first start.
pub async fn open_registry(options: &TokenServiceOptions) -> anyhow::Result<Arc<TokenRegistry>> {
    let store = SqliteStore::open(&options.data_dir)
        .await
        .with_context(|| {
            format!(
                "cannot open the token store in {}",
                options.data_dir.display()
            )
        })?;
    let registry = TokenRegistry::open(Arc::new(store))
        .await
        .context("cannot load tokens")?;
    server::bootstrap(&registry, &options.data_dir).await?;
    Ok(registry)
}

/// `fluxgate authz`: the token service alone.
pub async fn run_authz(args: AuthzArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics();
    let registry = open_registry(&args.service).await?;
    let listener = bind(args.listen, "token service").await?;
    let admin_listener = bind(args.common.admin_listen, "admin").await?;
    tokio::spawn(
        Admin::new(metrics, always_ready())
            .serve(admin_listener, shutdown.clone().cancelled_owned()),
    );

    let closing = Arc::clone(&registry);
    let stop = shutdown.clone();
    let serving = async move {
        let signal = async move {
            stop.cancelled().await;
            closing.close();
        };
        server::serve(listener, registry, signal)
            .await
            .context("token service failed")
    };
    drain(serving, shutdown, args.common.shutdown_grace.0).await
}
