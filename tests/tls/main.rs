//! TLS end to end, with certificates made at test time (rcgen): HTTPS and
//! gRPC over TLS on the proxy's one port (ALPN), an https upstream with a
//! private CA, mutual TLS between the proxy or CLI and the token service,
//! certificate reload under a running proxy, and startup errors that name
//! the file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod certs;
mod https;
mod mtls;
mod reload;
mod startup;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use fluxgate::authz::Authorizer;
use fluxgate::proxy::Proxy;
use fluxgate::proxy::flight::FlightService;
use fluxgate::proxy::forward::{Protocol, Upstream};
use fluxgate::proxy::http::HttpService;
use fluxgate::proxy::listener::{self, ListenerSettings};
use fluxgate::tls::server::{ALPN_PROXY, ServerFiles};
use fluxgate::tls::{PemFile, ServerTls};
use fluxgate::tokens::local::LocalAuthorizer;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

use certs::{Ca, Leaf};
use common::proxy::Reply;

/// Loads `leaf` (written to `dir`) as the proxy listener's TLS.
pub(crate) fn proxy_tls(dir: &Path, leaf: &Leaf) -> ServerTls {
    let (cert, key) = leaf.write(dir, "proxy");
    ServerTls::load(
        "proxy",
        ServerFiles::new(
            PemFile::new("--tls-cert", cert),
            PemFile::new("--tls-key", key),
            None,
            ALPN_PROXY,
        ),
    )
    .unwrap()
}

/// The in-process authorizer over a token server's registry.
pub(crate) fn local_authorizer(server: &common::TokenServer) -> Arc<dyn Authorizer> {
    Arc::new(LocalAuthorizer::new(Arc::clone(&server.registry)))
}

/// An in-process proxy (HTTP and Flight) on 127.0.0.1:0, over TLS when
/// `tls` is given, reaching its upstreams with `upstream_tls`.
pub(crate) struct TlsProxy {
    pub(crate) addr: SocketAddr,
    shutdown: CancellationToken,
}

impl TlsProxy {
    pub(crate) async fn start(
        authorizer: Arc<dyn Authorizer>,
        http_upstream: &str,
        grpc_upstream: &str,
        upstream_tls: Option<Arc<rustls::ClientConfig>>,
        tls: Option<ServerTls>,
    ) -> Self {
        let http = Upstream::with_tls(
            http_upstream.parse().unwrap(),
            None,
            Protocol::Http1,
            upstream_tls.clone(),
        );
        let grpc = Upstream::with_tls(
            grpc_upstream.parse().unwrap(),
            None,
            Protocol::Http2,
            upstream_tls,
        );
        let gate = common::proxy::gate(authorizer, &common::proxy::settings());
        let flight = FlightService::new(gate.clone(), grpc, common::proxy::flight_settings(&[]));
        let proxy =
            Proxy::new(HttpService::new(gate, http, Default::default())).with_flight(flight);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            listener::serve_tls(
                listener,
                proxy,
                ListenerSettings::default(),
                tls,
                stop.cancelled_owned(),
            )
            .await
            .expect("the listener starts");
        });
        Self { addr, shutdown }
    }

    pub(crate) fn https(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A TLS terminator in front of a plain backend (a capture or Flight
/// upstream), so existing test upstreams can stand behind `https://`.
/// Records the ALPN protocol each connection negotiated.
pub(crate) struct TlsFront {
    pub(crate) addr: SocketAddr,
    pub(crate) alpn: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    pub(crate) async fn start(backend: SocketAddr, config: rustls::ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let alpn: Arc<Mutex<Vec<Option<Vec<u8>>>>> = Arc::default();
        let seen = Arc::clone(&alpn);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, seen) = (acceptor.clone(), Arc::clone(&seen));
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    seen.lock()
                        .push(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
                    let Ok(mut plain) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Self { addr, alpn, task }
    }

    pub(crate) fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A pooled HTTPS client (HTTP/1.1, or HTTP/2 only) trusting `ca`.
pub(crate) fn https_client(
    ca: &Ca,
    http2: bool,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(certs::client_config(ca, &[], None))
        .https_only();
    let mut client = Client::builder(TokioExecutor::new());
    if http2 {
        client.http2_only(true);
        client.build(builder.enable_http2().build())
    } else {
        client.build(builder.enable_http1().build())
    }
}

/// Sends `request` with `client` and reads the whole response.
pub(crate) async fn send(
    client: &Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    request: http::Request<Full<Bytes>>,
) -> Reply {
    let response = client.request(request).await.expect("request failed");
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

/// A TLS connection to `addr` as `localhost`, with `config`.
pub(crate) async fn connect(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// The leaf certificate a fresh handshake with `addr` presents.
pub(crate) async fn served_certificate(addr: SocketAddr, ca: &Ca) -> Vec<u8> {
    let tls = connect(addr, certs::client_config(ca, &[b"http/1.1"], None))
        .await
        .expect("handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate")
        .to_vec()
}

/// An HTTP/1.1 connection over an established TLS stream, for requests on
/// one kept-alive connection.
pub(crate) async fn http1_over(
    tls: TlsStream<TcpStream>,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}
