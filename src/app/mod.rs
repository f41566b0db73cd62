//! Assembles the components each long-running command needs and runs them
//! until shutdown: `fluxgate authz`, `fluxgate proxy`, `fluxgate serve`.

mod lifecycle;
mod preflight;

use lifecycle::Addresses;
pub use lifecycle::{bind, drain, shutdown_signal};
use preflight::check_audit_destination;
pub use preflight::preflight;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{Admin, ReadyCheck};
use crate::audit::{Audit, AuditOptions, Destination};
use crate::authz::Authorizer;
use crate::authz::cache::{self, CacheConfig, CachedAuthorizer};
use crate::authz::client::{AuthzClient, ProxyCredential};
use crate::authz::failover::AuthzEndpoints;
use crate::authz::invalidation::FollowOptions;
use crate::config::{
    AuthzArgs, BootstrapArgs, ProxyArgs, ProxyOptions, ServeArgs, TokenServiceOptions,
    UpstreamScheme,
};
use crate::proxy::Proxy;
use crate::proxy::flight::methods::AllowList;
use crate::proxy::flight::{FlightService, FlightSettings};
use crate::proxy::forward::{Protocol, Upstream};
use crate::proxy::gate::{Gate, GateSettings};
use crate::proxy::http::{AllowedPaths, HttpService};
use crate::proxy::listener::{self, ListenerSettings};
use crate::telemetry;
use crate::tls::{self, ServerTls};
use crate::tokens::local::LocalAuthorizer;
use crate::tokens::registry::RegistryOptions;
use crate::tokens::throttle::InvalidTokenThrottle;
use crate::tokens::{StoreLocation, TokenRegistry, bootstrap, server};

/// Where the token store is, from `--store`, `--data-dir` and
/// `--store-password-file`.
pub fn store_location(options: &TokenServiceOptions) -> anyhow::Result<StoreLocation> {
    Ok(StoreLocation::from_options(
        options.store.as_deref(),
        &options.data_dir,
        options.store_password_file.as_deref(),
    )?)
}

/// The data directory (private), for the first management token's file
/// when the store is elsewhere.
fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create --data-dir {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Opens the store and the registry, creating the bootstrap management
/// token on first start.
pub async fn open_registry(options: &TokenServiceOptions) -> anyhow::Result<Arc<TokenRegistry>> {
    let location = store_location(options)?;
    let stale_after = options.store_stale_after.0;
    prepare_data_dir(&options.data_dir)?;
    let store = location
        .open()
        .await
        .with_context(|| format!("cannot open the token store ({})", location.describe()))?;
    let registry = TokenRegistry::open_with(
        store,
        RegistryOptions {
            stale_after,
            ..RegistryOptions::default()
        },
    )
    .await
    .context("cannot load tokens")?;
    tracing::info!(
        store = %location.describe(),
        store_id = registry.store_id().unwrap_or_default(),
        revision = registry.head_revision(),
        "token store open"
    );
    server::bootstrap(&registry, &options.data_dir).await?;
    Ok(registry)
}

/// `/readyz` of a token service: ready while its store is fresh.
fn registry_ready(registry: &Arc<TokenRegistry>) -> ReadyCheck {
    let registry = Arc::clone(registry);
    Arc::new(move || {
        let result = registry.freshness().check();
        Box::pin(async move { result })
    })
}

/// `fluxgate authz bootstrap`: mints a recovery management token into the
/// store and writes it to a new 0600 file.
pub async fn run_bootstrap(args: BootstrapArgs) -> anyhow::Result<PathBuf> {
    let location = store_location(&args.service)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.service.data_dir.join(server::BOOTSTRAP_TOKEN_FILE));
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        prepare_data_dir(parent)?;
    }
    let store = location
        .open()
        .await
        .with_context(|| format!("cannot open the token store ({})", location.describe()))?;
    let minted = bootstrap::mint_recovery_token(store.as_ref(), &out).await;
    store.close().await;
    let record = minted?;
    println!(
        "wrote a new management token (id {}) to {} (mode 0600); running token services pick it up by themselves. Move it to a secret store and delete the file.",
        record.id,
        out.display()
    );
    Ok(out)
}

/// Authorize's invalid-token throttle of `--authorize-invalid-rate`.
fn authorize_throttle(options: &TokenServiceOptions) -> Arc<InvalidTokenThrottle> {
    let rate = u32::try_from(options.authorize_invalid_rate)
        .ok()
        .and_then(std::num::NonZeroU32::new)
        .unwrap_or(std::num::NonZeroU32::MIN);
    Arc::new(InvalidTokenThrottle::per_minute(rate))
}

/// Serves the token service until shutdown, when the registry is closed:
/// its change streams end instead of holding the server open for the whole
/// grace period.
fn serve_tokens(
    listener: TcpListener,
    registry: Arc<TokenRegistry>,
    tls: Option<ServerTls>,
    options: &TokenServiceOptions,
    shutdown: &CancellationToken,
) -> impl Future<Output = anyhow::Result<()>> + use<> {
    let closing = Arc::clone(&registry);
    let stop = shutdown.clone();
    let throttle = authorize_throttle(options);
    async move {
        let signal = async move {
            stop.cancelled().await;
            closing.close();
        };
        server::serve_with(listener, registry, tls, throttle, signal)
            .await
            .context("token service failed")
    }
}

/// `fluxgate authz`: the token service alone.
pub async fn run_authz(args: AuthzArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics();
    // TLS files are checked before anything listens.
    let tls = tls::options::token_service_listener(&args.tls)?;
    let registry = open_registry(&args.service).await?;
    let listener = bind(args.listen, "token service").await?;
    tls::options::warn_if_cleartext_listener(args.listen, tls.as_ref());
    tls::options::watch(tls.as_ref(), &shutdown);
    let admin_listener = bind(args.common.admin_listen, "admin").await?;
    let _addresses = Addresses::publish(
        args.common.addresses_file.as_deref(),
        &[("token_service", &listener), ("admin", &admin_listener)],
    )?;
    tokio::spawn(
        Admin::new(metrics.renderer(), registry_ready(&registry))
            .serve(admin_listener, shutdown.clone().cancelled_owned()),
    );

    let serving = serve_tokens(listener, registry, tls, &args.service, &shutdown);
    drain(serving, shutdown, args.common.shutdown_grace.0).await
}

/// The `Authorization` value to add upstream, from `--upstream-token-file`.
pub fn upstream_credential(options: &ProxyOptions) -> anyhow::Result<Option<http::HeaderValue>> {
    let Some(path) = &options.upstream_token_file else {
        return Ok(None);
    };
    // Warns when group or others can read it; zeroed when dropped.
    let secret = crate::hardening::read_secret_file(path, "--upstream-token-file")?;
    let secret = secret.as_str();
    let value = zeroize::Zeroizing::new(match options.upstream_auth_scheme {
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
    });
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
    audit: Audit,
) -> anyhow::Result<Proxy> {
    let web = |uri: &http::Uri| {
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
    };
    anyhow::ensure!(
        web(&options.upstream),
        "--upstream must be an http:// or https:// URL with a host, got {}",
        options.upstream
    );
    let grpc_base = options
        .upstream_grpc
        .clone()
        .unwrap_or_else(|| options.upstream.clone());
    anyhow::ensure!(
        web(&grpc_base),
        "--upstream-grpc must be an http:// (h2c) or https:// URL with a host, got {grpc_base}"
    );
    let upstream_tls = tls::options::upstream_client(options)?;
    let allow_flight = AllowList::parse(&options.allow_flight_methods)?;
    let credential = upstream_credential(options)?;
    let timeout = options.upstream_timeout.0;
    let upstream = Upstream::with_tls(
        options.upstream.clone(),
        credential.clone(),
        Protocol::Http1,
        upstream_tls.clone(),
    )
    .with_response_timeout(timeout);
    let gate = Gate::new(authorizer, &gate_settings(options), audit);
    // Both front ends decide through one gate: same authorizer, timeout,
    // limits, throttle, metrics and audit trail.
    let allowed = AllowedPaths {
        public: options.allow_paths.clone(),
        admin: options.allow_admin_paths.clone(),
        org: options.upstream_org.clone(),
        org_id: options.upstream_org_id.clone(),
    };
    let http = HttpService::new(gate.clone(), upstream, allowed);
    let flight = FlightService::new(
        gate,
        Upstream::with_tls(grpc_base, credential, Protocol::Http2, upstream_tls)
            .with_response_timeout(timeout),
        FlightSettings {
            allow: allow_flight,
        },
    );
    Ok(Proxy::new(http).with_flight(flight))
}

/// The gate's settings from the proxy's options.
pub fn gate_settings(options: &ProxyOptions) -> GateSettings {
    GateSettings {
        authz_timeout: options.authz_timeout.0,
        max_body: options.max_body.0,
        body_read_timeout: options.body_read_timeout.0,
        max_buffered_bytes: options.max_buffered_bytes.0,
        invalid_token_rate: u32::try_from(options.invalid_token_rate).unwrap_or(u32::MAX),
    }
}

/// Starts the audit writer for `--audit-log` (and `--audit-required`).
pub async fn start_audit(options: &ProxyOptions) -> anyhow::Result<Audit> {
    crate::audit::describe_metrics();
    check_audit_destination(options)?;
    let destination: Destination = options.audit_log.parse().unwrap_or(Destination::Off);
    let audit_options = AuditOptions {
        required: options.audit_required,
    };
    Ok(Audit::start_with(&destination, audit_options).await?)
}

fn authorizer_ready(authorizer: Arc<dyn Authorizer>) -> ReadyCheck {
    Arc::new(move || {
        let authorizer = Arc::clone(&authorizer);
        Box::pin(async move { authorizer.ready().await })
    })
}

/// Serves the proxy on its listener until shutdown, then drains.
fn serve_proxy(
    listener: TcpListener,
    options: &ProxyOptions,
    proxy: Proxy,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) -> impl Future<Output = anyhow::Result<()>> + use<> {
    tls::options::watch(tls.as_ref(), &shutdown);
    let limits = &options.limits;
    let settings = ListenerSettings {
        max_connections: limits.max_connections,
        header_read_timeout: limits.header_read_timeout.0,
        max_header_bytes: usize::try_from(limits.max_header_bytes.0).unwrap_or(usize::MAX),
        idle_timeout: limits.idle_timeout.0,
        max_concurrent_streams: limits.max_concurrent_streams,
        threads: options
            .listener_threads
            .unwrap_or_else(listener::default_threads),
    };
    let stop = shutdown.clone();
    async move {
        listener::serve_tls(listener, proxy, settings, tls, stop.cancelled_owned())
            .await
            .context("cannot start the proxy's listener threads")
    }
}

/// `fluxgate proxy`: the sidecar alone, asking a remote token service.
pub async fn run_proxy(args: ProxyArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics();
    cache::describe_metrics();
    // Calls get most of the decision budget, so a slow token service comes
    // back as an error the cache can still answer (stale grace) before the
    // request itself times out.
    let call_budget = args.proxy.authz_timeout.0.mul_f64(0.8);
    // TLS files are checked before anything listens.
    let proxy_tls = tls::options::proxy_listener(&args.proxy)?;
    let authz_endpoint = AuthzEndpoints::new(tls::options::authz_endpoints(&args.authz)?);
    let credential = args
        .authz
        .authz_token_file
        .as_deref()
        .map(ProxyCredential::from_file)
        .transpose()?;
    let client =
        AuthzClient::new(authz_endpoint.clone(), call_budget).with_credential(credential.clone());
    let cached = CachedAuthorizer::new(
        Arc::new(client),
        CacheConfig::from_options(&args.cache, call_budget),
    );
    let follow = FollowOptions {
        mode: args.authz.authz_watch,
        credential,
    };
    // Ends with `shutdown`.
    drop(cached.follow_with(authz_endpoint, follow, shutdown.clone()));
    let authorizer: Arc<dyn Authorizer> = Arc::new(cached);
    let audit = start_audit(&args.proxy).await?;
    let proxy = build_proxy(&args.proxy, Arc::clone(&authorizer), audit)?;
    let listener = bind(args.proxy.listen, "proxy").await?;
    let admin_listener = bind(args.common.admin_listen, "admin").await?;
    let _addresses = Addresses::publish(
        args.common.addresses_file.as_deref(),
        &[("proxy", &listener), ("admin", &admin_listener)],
    )?;
    let serving = serve_proxy(listener, &args.proxy, proxy, proxy_tls, shutdown.clone());
    tokio::spawn(
        Admin::new(metrics.renderer(), authorizer_ready(authorizer))
            .serve(admin_listener, shutdown.clone().cancelled_owned()),
    );
    drain(serving, shutdown, args.common.shutdown_grace.0).await
}

/// `fluxgate serve`: proxy and token service in one process. The proxy
/// decides in-process; the token service still listens for the CLI and for
/// other proxies.
pub async fn run_serve(args: ServeArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics();
    // Listed for dashboards shared with `fluxgate proxy`; they stay at zero
    // here: the in-process authorizer needs no cache.
    cache::describe_metrics();
    // TLS files are checked before anything listens.
    let proxy_tls = tls::options::proxy_listener(&args.proxy)?;
    let token_tls = tls::options::serve_token_service_listener(&args.authz_tls)?;
    let registry = open_registry(&args.service).await?;
    let authorizer: Arc<dyn Authorizer> = Arc::new(LocalAuthorizer::new(Arc::clone(&registry)));
    let audit = start_audit(&args.proxy).await?;
    let proxy = build_proxy(&args.proxy, Arc::clone(&authorizer), audit)?;
    let token_listener = bind(args.authz_listen, "token service").await?;
    tls::options::warn_if_cleartext_listener(args.authz_listen, token_tls.as_ref());
    tls::options::watch(token_tls.as_ref(), &shutdown);
    let proxy_listener = bind(args.proxy.listen, "proxy").await?;
    let admin_listener = bind(args.common.admin_listen, "admin").await?;
    let _addresses = Addresses::publish(
        args.common.addresses_file.as_deref(),
        &[
            ("proxy", &proxy_listener),
            ("token_service", &token_listener),
            ("admin", &admin_listener),
        ],
    )?;
    let serving_proxy = serve_proxy(
        proxy_listener,
        &args.proxy,
        proxy,
        proxy_tls,
        shutdown.clone(),
    );
    let store_ready = registry_ready(&registry);
    let proxy_ready = authorizer_ready(authorizer);
    let ready: ReadyCheck = Arc::new(move || {
        let (store, proxy) = (store_ready(), proxy_ready());
        Box::pin(async move {
            store.await?;
            proxy.await
        })
    });
    tokio::spawn(
        Admin::new(metrics.renderer(), ready)
            .serve(admin_listener, shutdown.clone().cancelled_owned()),
    );

    let serving_tokens = serve_tokens(
        token_listener,
        registry,
        token_tls,
        &args.service,
        &shutdown,
    );
    let both = async move {
        let (a, b) = tokio::join!(serving_proxy, serving_tokens);
        a.and(b)
    };
    drain(both, shutdown, args.common.shutdown_grace.0).await
}
