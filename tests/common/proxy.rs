//! A proxy on 127.0.0.1:0 in front of a given upstream, deciding with a given
//! authorizer, plus a small HTTP client for tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fluxgate::audit::Audit;
use fluxgate::authz::Authorizer;
use fluxgate::proxy::Proxy;
use fluxgate::proxy::forward::{Protocol, Upstream};
use fluxgate::proxy::gate::{Gate, GateSettings};
use fluxgate::proxy::http::HttpService;
use fluxgate::proxy::listener::{self, ListenerSettings};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The gate's settings for tests: the defaults, with a 2 s decision budget
/// and no brute-force throttling (every test client is 127.0.0.1, and many
/// tests present invalid tokens on purpose; the throttle has tests of its own).
pub fn settings() -> GateSettings {
    GateSettings {
        authz_timeout: Duration::from_secs(2),
        invalid_token_rate: 0,
        ..GateSettings::default()
    }
}

/// A gate deciding with `authorizer`, unaudited.
pub fn gate(authorizer: Arc<dyn Authorizer>, settings: &GateSettings) -> Gate {
    Gate::new(authorizer, settings, Audit::off())
}

pub struct ProxyServer {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProxyServer {
    pub async fn start(authorizer: Arc<dyn Authorizer>, upstream: &str) -> Self {
        Self::start_with(authorizer, upstream, settings(), None).await
    }

    pub async fn start_with(
        authorizer: Arc<dyn Authorizer>,
        upstream: &str,
        settings: GateSettings,
        credential: Option<http::HeaderValue>,
    ) -> Self {
        Self::start_listening(
            authorizer,
            upstream,
            settings,
            credential,
            ListenerSettings::default(),
        )
        .await
    }

    /// [`Self::start_with`], the listener set up by `listening`.
    pub async fn start_listening(
        authorizer: Arc<dyn Authorizer>,
        upstream: &str,
        settings: GateSettings,
        credential: Option<http::HeaderValue>,
        listening: ListenerSettings,
    ) -> Self {
        let upstream = Upstream::new(upstream.parse().unwrap(), credential, Protocol::Http1);
        let http = HttpService::new(gate(authorizer, &settings), upstream, Default::default());
        let proxy = Proxy::new(http);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            listener::serve(listener, proxy, listening, stop.cancelled_owned())
                .await
                .expect("the listener starts");
        });
        Self {
            addr,
            shutdown,
            task: Some(task),
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for ProxyServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// One keep-alive HTTP/1.1 connection to `addr`, its requests sent in turn.
pub async fn connection(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    sender
}

/// Sends a request built by the caller (HTTP/1.1).
pub async fn send(request: http::Request<Full<Bytes>>) -> Reply {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let response = client.request(request).await.expect("request failed");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// A request builder with a body.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).unwrap()
}

/// Flight settings for tests: the given `--allow-flight-method` names.
pub fn flight_settings(allow: &[&str]) -> fluxgate::proxy::flight::FlightSettings {
    fluxgate::proxy::flight::FlightSettings {
        allow: fluxgate::proxy::flight::methods::AllowList::parse(allow).unwrap(),
    }
}

impl ProxyServer {
    /// A proxy whose gRPC (Flight) calls go to `grpc_upstream` over h2c and
    /// whose HTTP requests go to `http_upstream`, with the limits of
    /// [`settings`].
    pub async fn start_flight(
        authorizer: Arc<dyn Authorizer>,
        http_upstream: &str,
        grpc_upstream: &str,
        flight: fluxgate::proxy::flight::FlightSettings,
        credential: Option<http::HeaderValue>,
    ) -> Self {
        let http = Upstream::new(
            http_upstream.parse().unwrap(),
            credential.clone(),
            Protocol::Http1,
        );
        let grpc = Upstream::new(grpc_upstream.parse().unwrap(), credential, Protocol::Http2);
        let gate = gate(authorizer, &settings());
        let flight = fluxgate::proxy::flight::FlightService::new(gate.clone(), grpc, flight);
        Self::serve(
            Proxy::new(HttpService::new(gate, http, Default::default())).with_flight(flight),
        )
        .await
    }

    /// Serves an assembled `proxy` on 127.0.0.1:0.
    pub async fn serve(proxy: Proxy) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            listener::serve(
                listener,
                proxy,
                ListenerSettings::default(),
                stop.cancelled_owned(),
            )
            .await
            .expect("the listener starts");
        });
        Self {
            addr,
            shutdown,
            task: Some(task),
        }
    }
}

impl ProxyServer {
    /// A proxy deciding through `gate`, its HTTP requests going to
    /// `http_upstream` and, when given, its gRPC calls to `grpc_upstream`.
    pub async fn with_gate(gate: Gate, http_upstream: &str, grpc_upstream: Option<&str>) -> Self {
        let http = Upstream::new(http_upstream.parse().unwrap(), None, Protocol::Http1)
            .with_response_timeout(Duration::from_millis(500));
        let mut proxy = Proxy::new(HttpService::new(gate.clone(), http, Default::default()));
        if let Some(grpc) = grpc_upstream {
            let grpc = Upstream::new(grpc.parse().unwrap(), None, Protocol::Http2)
                .with_response_timeout(Duration::from_millis(500));
            proxy = proxy.with_flight(fluxgate::proxy::flight::FlightService::new(
                gate,
                grpc,
                flight_settings(&[]),
            ));
        }
        Self::serve(proxy).await
    }
}
