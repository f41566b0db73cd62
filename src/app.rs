//! Assembles the components each long-running command needs and runs them
//! until shutdown: `fluxgate authz`, `fluxgate proxy`, `fluxgate serve`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{Admin, ReadyCheck, always_ready};
use crate::authz::Authorizer;
use crate::authz::client::AuthzClient;
use crate::authz::local::LocalAuthorizer;
use crate::config::{
    AuthzArgs, ProxyArgs, ProxyOptions, ServeArgs, TokenServiceOptions, UpstreamScheme,
};
use crate::proxy::Proxy;
use crate::proxy::forward::{Protocol, Upstream};
use crate::proxy::listener::{self, ListenerSettings};
use crate::proxy::service::{ProxyService, ProxySettings};
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

/// The `Authorization` value to add upstream, from `--upstream-token-file`.
pub fn upstream_credential(options: &ProxyOptions) -> anyhow::Result<Option<http::HeaderValue>> {
    let Some(path) = &options.upstream_token_file else {
        return Ok(None);
    };
    let secret = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --upstream-token-file {}", path.display()))?;
    let secret = secret.trim();
    anyhow::ensure!(
        !secret.is_empty(),
        "--upstream-token-file {} is empty",
        path.display()
    );
    let value = match options.upstream_auth_scheme {
        UpstreamScheme::Token => format!("Token {secret}"),
        UpstreamScheme::Bearer => format!("Bearer {secret}"),
        UpstreamScheme::Basic => {
            use base64::Engine as _;
            anyhow::ensure!(
                secret.contains(':'),
                "--upstream-token-file {} must hold user:password for --upstream-auth-scheme basic",
                path.display()
            );
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(secret)
            )
        }
    };
    let mut value = http::HeaderValue::from_str(&value).map_err(|_| {
        anyhow::anyhow!(
            "--upstream-token-file {} holds characters not allowed in a header",
            path.display()
        )
    })?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// Builds the proxy for `options` over `authorizer`.
pub fn build_proxy(
    options: &ProxyOptions,
    authorizer: Arc<dyn Authorizer>,
) -> anyhow::Result<Proxy> {
    anyhow::ensure!(
        options.upstream.scheme_str() == Some("http") && options.upstream.authority().is_some(),
        "--upstream must be an http:// URL with a host, got {}",
        options.upstream
    );
    let credential = upstream_credential(options)?;
    let upstream = Upstream::new(options.upstream.clone(), credential, Protocol::Http1);
    let settings = ProxySettings {
        allow_paths: options.allow_paths.clone(),
        max_body: options.max_body.0,
        authz_timeout: options.authz_timeout.0,
    };
    Ok(Proxy::new(ProxyService::new(
        authorizer, upstream, settings,
    )))
}

fn authorizer_ready(authorizer: Arc<dyn Authorizer>) -> ReadyCheck {
    Arc::new(move || {
        let authorizer = Arc::clone(&authorizer);
        Box::pin(async move { authorizer.ready().await })
    })
}

/// Serves the proxy on its listener until shutdown, then drains.
async fn serve_proxy(
    options: &ProxyOptions,
    proxy: Proxy,
    shutdown: CancellationToken,
) -> anyhow::Result<impl Future<Output = anyhow::Result<()>> + use<>> {
    let listener = bind(options.listen, "proxy").await?;
    let stop = shutdown.clone();
    Ok(async move {
        listener::serve(
            listener,
            proxy,
            ListenerSettings::default(),
            stop.cancelled_owned(),
        )
        .await;
        Ok(())
    })
}

/// `fluxgate proxy`: the sidecar alone, asking a remote token service.
pub async fn run_proxy(args: ProxyArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics();
    let authorizer: Arc<dyn Authorizer> = Arc::new(AuthzClient::for_uri(
        args.authz.authz.clone(),
        args.proxy.authz_timeout.0,
    ));
    let proxy = build_proxy(&args.proxy, Arc::clone(&authorizer))?;
    let serving = serve_proxy(&args.proxy, proxy, shutdown.clone()).await?;
    let admin_listener = bind(args.common.admin_listen, "admin").await?;
    tokio::spawn(
        Admin::new(metrics, authorizer_ready(authorizer))
            .serve(admin_listener, shutdown.clone().cancelled_owned()),
    );
    drain(serving, shutdown, args.common.shutdown_grace.0).await
}

/// `fluxgate serve`: proxy and token service in one process. The proxy
/// decides in-process; the token service still listens for the CLI and for
/// other proxies.
pub async fn run_serve(args: ServeArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics();
    let registry = open_registry(&args.service).await?;
    let authorizer: Arc<dyn Authorizer> = Arc::new(LocalAuthorizer::new(Arc::clone(&registry)));
    let proxy = build_proxy(&args.proxy, Arc::clone(&authorizer))?;
    let token_listener = bind(args.authz_listen, "token service").await?;
    let serving_proxy = serve_proxy(&args.proxy, proxy, shutdown.clone()).await?;
    let admin_listener = bind(args.common.admin_listen, "admin").await?;
    tokio::spawn(
        Admin::new(metrics, authorizer_ready(authorizer))
            .serve(admin_listener, shutdown.clone().cancelled_owned()),
    );

    let closing = Arc::clone(&registry);
    let stop = shutdown.clone();
    let serving_tokens = async move {
        let signal = async move {
            stop.cancelled().await;
            closing.close();
        };
        server::serve(token_listener, registry, signal)
            .await
            .context("token service failed")
    };
    let both = async move {
        let (a, b) = tokio::join!(serving_proxy, serving_tokens);
        a.and(b)
    };
    drain(both, shutdown, args.common.shutdown_grace.0).await
}
