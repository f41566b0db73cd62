//! Shared setup: the real token service, a proxy in front of a capturing
//! upstream (HTTP) and, when asked, a gRPC upstream, with an upstream
//! credential configured as `fluxgate serve --upstream-token-file` does.

use std::sync::Arc;
use std::time::Duration;

use fluxgate::authz::client::AuthzClient;
use fluxgate::proxy::Proxy;
use fluxgate::proxy::flight::FlightService;
use fluxgate::proxy::forward::{Protocol, Upstream};
use fluxgate::proxy::gate::GateSettings;
use fluxgate::proxy::http::{AllowedPaths, HttpService};

use crate::common::TokenServer;
use crate::common::capture::CaptureUpstream;
use crate::common::proxy::{ProxyServer, flight_settings, gate, settings};

/// The upstream credential the proxy adds (what `--upstream-token-file`
/// holds): the database's admin token.
pub const UPSTREAM_SECRET: &str = "apiv3_upstream-admin-secret";

/// `--body-read-timeout` of these proxies: short, so that a bounded wait
/// shows up quickly.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Env {
    pub tokens: TokenServer,
    pub upstream: CaptureUpstream,
    pub proxy: ProxyServer,
    /// A database token that reads and writes `x` only.
    pub x: String,
}

impl Env {
    /// A proxy whose HTTP requests go to a capturing upstream and whose gRPC
    /// calls go to `grpc` (default: the capturing upstream too).
    pub async fn start(grpc: Option<&str>) -> Self {
        let tokens = TokenServer::start().await;
        let upstream = CaptureUpstream::start().await;
        let gate = gate(
            Arc::new(AuthzClient::for_uri(
                tokens.url().parse().unwrap(),
                Duration::from_secs(2),
            )),
            &GateSettings {
                body_read_timeout: BODY_TIMEOUT,
                ..settings()
            },
        );
        let credential =
            Some(http::HeaderValue::from_str(&format!("Bearer {UPSTREAM_SECRET}")).unwrap());
        let http = Upstream::new(
            upstream.url().parse().unwrap(),
            credential.clone(),
            Protocol::Http1,
        )
        .with_response_timeout(Duration::from_secs(60));
        let grpc_url = grpc.map_or_else(|| upstream.url(), str::to_owned);
        let grpc = Upstream::new(grpc_url.parse().unwrap(), credential, Protocol::Http2);
        let flight = FlightService::new(gate.clone(), grpc, flight_settings(&[]));
        let proxy = ProxyServer::serve(
            Proxy::new(HttpService::new(gate, http, AllowedPaths::default())).with_flight(flight),
        )
        .await;
        let (_, x) = tokens.database_token(&[("x", true, true)]).await;
        Self {
            tokens,
            upstream,
            proxy,
            x,
        }
    }

    /// A database token with the given (database, read, write) grants.
    pub async fn token(&self, grants: &[(&str, bool, bool)]) -> String {
        self.tokens.database_token(grants).await.1
    }
}
