//! Assembles the token service: Authorize, management, gRPC health and
//! reflection on one tonic server. Health follows the registry's freshness:
//! NOT_SERVING while the store has not been read for longer than its bound
//! (Authorize still answers from memory meanwhile). Served over TLS
//! (optionally requiring client certificates) when given a [`ServerTls`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::accept;
use crate::proto::iox_authz::iox_authorizer_service_server::IoxAuthorizerServiceServer;
use crate::proto::tokens::token_service_server::TokenServiceServer;
use crate::tls::ServerTls;

use super::authorize::AuthorizeService;
use super::management::ManagementService;
use super::registry::TokenRegistry;
use super::throttle::InvalidTokenThrottle;

pub use super::bootstrap::{BOOTSTRAP_TOKEN_FILE, BootstrapError, bootstrap};

/// Longest TLS handshake on the token service's port.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most connections open at once on the token service's port (proxies and
/// CLIs hold one each; more wait in the kernel's backlog).
const MAX_CONNECTIONS: usize = 10_000;

/// Every gRPC service of the token service, ready to serve.
pub async fn routes(registry: Arc<TokenRegistry>) -> Routes {
    routes_with(registry, Arc::new(InvalidTokenThrottle::default())).await
}

/// [`routes`], throttling Authorize's invalid-token answers with `throttle`.
pub async fn routes_with(
    registry: Arc<TokenRegistry>,
    throttle: Arc<InvalidTokenThrottle>,
) -> Routes {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    report_health(&health_reporter, true).await;
    let mut serving = registry.serving();
    tokio::spawn(async move {
        loop {
            let now = *serving.borrow_and_update();
            report_health(&health_reporter, now).await;
            if serving.changed().await.is_err() {
                break;
            }
        }
    });
    let mut routes = Routes::new(health)
        .add_service(IoxAuthorizerServiceServer::new(
            AuthorizeService::with_throttle(Arc::clone(&registry), throttle),
        ))
        .add_service(TokenServiceServer::new(ManagementService::new(registry)));
    // Both reflection versions: grpcurl speaks v1, ghz and older tools v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    match reflection().build_v1() {
        Ok(v1) => routes = routes.add_service(v1),
        Err(e) => tracing::warn!(error = %e, "gRPC reflection v1 unavailable"),
    }
    match reflection().build_v1alpha() {
        Ok(v1alpha) => routes = routes.add_service(v1alpha),
        Err(e) => tracing::warn!(error = %e, "gRPC reflection v1alpha unavailable"),
    }
    routes
}

/// Sets every service's health (and the server's, `""`).
async fn report_health(reporter: &tonic_health::server::HealthReporter, serving: bool) {
    use tonic_health::ServingStatus;
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(
            <IoxAuthorizerServiceServer<AuthorizeService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    reporter
        .set_service_status(
            <TokenServiceServer<ManagementService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}

/// Serves the token service on `listener` until `shutdown` resolves, then
/// lets in-flight calls finish.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<TokenRegistry>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_tls(listener, registry, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is given (each connection handshaken with
/// the configuration current when it was accepted).
pub async fn serve_tls(
    listener: TcpListener,
    registry: Arc<TokenRegistry>,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let throttle = Arc::new(InvalidTokenThrottle::default());
    serve_with(listener, registry, tls, throttle, shutdown).await
}

/// [`serve_tls`] with Authorize's invalid-token answers throttled by
/// `throttle` (`--authorize-invalid-rate`).
pub async fn serve_with(
    listener: TcpListener,
    registry: Arc<TokenRegistry>,
    tls: Option<ServerTls>,
    throttle: Arc<InvalidTokenThrottle>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let expiry = tokio::spawn(Arc::clone(&registry).run_expiry_announcer());
    let server =
        tonic::transport::Server::builder().add_routes(routes_with(registry, throttle).await);
    let result = match tls {
        None => {
            let incoming = accept::incoming(listener, MAX_CONNECTIONS, accept::plain);
            server
                .serve_with_incoming_shutdown(incoming.map(Ok::<_, std::io::Error>), shutdown)
                .await
        }
        Some(tls) => {
            let handshake = accept::tls(tls, "token service", HANDSHAKE_TIMEOUT);
            let incoming = accept::incoming(listener, MAX_CONNECTIONS, handshake);
            server
                .serve_with_incoming_shutdown(incoming.map(Ok::<_, std::io::Error>), shutdown)
                .await
        }
    };
    expiry.abort();
    result
}
