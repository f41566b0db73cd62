//! The proxy's port over TLS: HTTPS writes with a private CA, ALPN `h2`
//! and `http/1.1` on one port, Flight over TLS, refusals of untrusted or
//! plaintext clients, and an https upstream trusted through a private CA.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::{FlightClient, Ticket};
use futures_util::TryStreamExt as _;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use super::certs::{self, Ca};
use super::common::TokenServer;
use super::common::capture::CaptureUpstream;
use super::common::flight::FlightUpstream;
use super::common::proxy::request;
use super::{
    TlsFront, TlsProxy, connect, http1_over, https_client, local_authorizer, proxy_tls, send,
};

fn json_ticket(db: &str, query: &str) -> Vec<u8> {
    serde_json::json!({"database": db, "sql_query": query, "query_type": "sql"})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn https_writes_go_through_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("fluxgate test CA");
    let tokens = TokenServer::start().await;
    let (_, token) = tokens.database_token(&[("mydb", false, true)]).await;
    let upstream = CaptureUpstream::start().await;
    let proxy = TlsProxy::start(
        local_authorizer(&tokens),
        &upstream.url(),
        &upstream.url(),
        None,
        Some(proxy_tls(dir.path(), &ca.server("proxy"))),
    )
    .await;
    let auth = format!("Token {token}");

    for http2 in [false, true] {
        let client = https_client(&ca, http2);
        let line = format!("cpu value={}", u8::from(http2));
        let reply = send(
            &client,
            request(
                "POST",
                &proxy.https("/api/v2/write?bucket=mydb&org=x"),
                &[("authorization", &auth)],
                line.clone(),
            ),
        )
        .await;
        assert_eq!(reply.status, 204, "http2={http2}: {:?}", reply.body);
        let got = upstream.last();
        assert_eq!(got.body, line.as_bytes());
        assert_eq!(got.uri.path(), "/api/v2/write");
        assert!(!got.headers.contains_key("authorization"));
        assert_eq!(got.headers["x-forwarded-proto"], "https");

        // Refusals come back over TLS in the API's own shape.
        let reply = send(
            &client,
            request(
                "POST",
                &proxy.https("/api/v2/write?bucket=other"),
                &[("authorization", &auth)],
                "cpu value=2",
            ),
        )
        .await;
        assert_eq!(reply.status, 403);
        assert_eq!(reply.json()["code"], "forbidden");
    }
    assert_eq!(
        upstream.count(),
        2,
        "only the allowed writes reach the upstream"
    );
}

#[tokio::test]
async fn alpn_offers_h2_and_http11_on_one_port() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("fluxgate test CA");
    let tokens = TokenServer::start().await;
    let upstream = CaptureUpstream::start().await;
    let proxy = TlsProxy::start(
        local_authorizer(&tokens),
        &upstream.url(),
        &upstream.url(),
        None,
        Some(proxy_tls(dir.path(), &ca.server("proxy"))),
    )
    .await;
    let ping = || {
        http::Request::get(format!("https://localhost:{}/ping", proxy.addr.port()))
            .body(Full::default())
            .unwrap()
    };

    // A client offering both (gRPC clients, browsers) gets h2 and speaks it.
    let tls = connect(
        proxy.addr,
        certs::client_config(&ca, &[b"h2", b"http/1.1"], None),
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = h2.send_request(ping()).await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(response.version(), http::Version::HTTP_2);

    // HTTP/1.1-only clients (Telegraf, the v1/v2 libraries) get http/1.1;
    // clients offering no ALPN at all are served HTTP/1.1 too.
    for offered in [&[&b"http/1.1"[..]][..], &[]] {
        let tls = connect(proxy.addr, certs::client_config(&ca, offered, None))
            .await
            .unwrap();
        let expected = offered.first().copied();
        assert_eq!(tls.get_ref().1.alpn_protocol(), expected);
        let mut http1 = http1_over(tls).await;
        let response = http1.send_request(ping()).await.unwrap();
        assert_eq!(response.status(), 204);
        assert_eq!(response.version(), http::Version::HTTP_11);
    }
}

#[tokio::test]
async fn flight_queries_run_over_tls_on_the_same_port() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("fluxgate test CA");
    let tokens = TokenServer::start().await;
    let (_, token) = tokens.database_token(&[("mydb", true, false)]).await;
    let flight = FlightUpstream::start().await;
    let proxy = TlsProxy::start(
        local_authorizer(&tokens),
        "http://127.0.0.1:9",
        &flight.url(),
        None,
        Some(proxy_tls(dir.path(), &ca.server("proxy"))),
    )
    .await;
    let channel = Endpoint::from_shared(format!("https://localhost:{}", proxy.addr.port()))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.pem)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightClient::new(channel);
    client
        .add_header("authorization", &format!("Bearer {token}"))
        .unwrap();
    let batches: Vec<_> = client
        .do_get(Ticket::new(json_ticket("mydb", "SELECT 1 -- rows=7")))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 7);
    assert!(!flight.last().metadata.contains_key("authorization"));

    let refused = client
        .do_get(Ticket::new(json_ticket("other", "SELECT 1")))
        .await
        .expect_err("no read on other");
    assert!(
        matches!(&refused, arrow_flight::error::FlightError::Tonic(s) if s.code() == tonic::Code::PermissionDenied),
        "{refused:?}"
    );
}

#[tokio::test]
async fn untrusted_and_plaintext_clients_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("fluxgate test CA");
    let tokens = TokenServer::start().await;
    let upstream = CaptureUpstream::start().await;
    let proxy = TlsProxy::start(
        local_authorizer(&tokens),
        &upstream.url(),
        &upstream.url(),
        None,
        Some(proxy_tls(dir.path(), &ca.server("proxy"))),
    )
    .await;

    // A client trusting another CA stops at the handshake.
    let stranger = Ca::new("someone else's CA");
    let e = connect(proxy.addr, certs::client_config(&stranger, &[], None))
        .await
        .expect_err("the certificate is not from a trusted CA");
    assert!(e.to_string().contains("invalid peer certificate"), "{e}");

    // Plaintext HTTP on the TLS port is not served (and never forwarded).
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    assert_eq!(upstream.count(), 0);

    // The listener is unharmed.
    let reply = send(
        &https_client(&ca, false),
        request("GET", &proxy.https("/ping"), &[], ""),
    )
    .await;
    assert_eq!(reply.status, 204);
}

#[tokio::test]
async fn https_upstreams_are_trusted_through_the_upstream_ca() {
    let ca = Ca::new("database CA");
    let tokens = TokenServer::start().await;
    let (_, token) = tokens.database_token(&[("mydb", true, true)]).await;
    let capture = CaptureUpstream::start().await;
    let flight = FlightUpstream::start().await;
    let leaf = ca.server("database");
    let http_front =
        TlsFront::start(capture.addr, certs::server_config(&leaf, &[b"http/1.1"])).await;
    let grpc_front = TlsFront::start(flight.addr, certs::server_config(&leaf, &[b"h2"])).await;

    // What `--upstream-ca` builds.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path(), "database-ca.pem");
    let options = fluxgate::tls::client::ClientFiles {
        ca: Some(fluxgate::tls::PemFile::new("--upstream-ca", ca_file)),
        ..Default::default()
    };
    let upstream_tls = Arc::new(fluxgate::tls::client::rustls_config(&options).unwrap());
    let proxy = TlsProxy::start(
        local_authorizer(&tokens),
        &http_front.url(),
        &grpc_front.url(),
        Some(upstream_tls),
        None,
    )
    .await;

    let reply = common_send(request(
        "POST",
        &format!("http://{}/write?db=mydb", proxy.addr),
        &[("authorization", &format!("Token {token}"))],
        "cpu value=1",
    ))
    .await;
    assert_eq!(reply.status, 204, "{:?}", reply.body);
    assert_eq!(capture.last().body, "cpu value=1");
    assert_eq!(capture.last().version, http::Version::HTTP_11);
    // HTTP/1.1 upstreams are asked for no ALPN, as plain InfluxDB expects.
    assert_eq!(http_front.alpn.lock().as_slice(), &[None]);

    let channel = Endpoint::from_shared(format!("http://{}", proxy.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightClient::new(channel);
    client
        .add_header("authorization", &format!("Bearer {token}"))
        .unwrap();
    let batches: Vec<_> = client
        .do_get(Ticket::new(json_ticket("mydb", "SELECT 1 -- rows=4")))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 4);
    assert_eq!(grpc_front.alpn.lock().as_slice(), &[Some(b"h2".to_vec())]);
}

#[tokio::test]
async fn an_upstream_certificate_from_an_untrusted_ca_is_refused() {
    let tokens = TokenServer::start().await;
    let (_, token) = tokens.database_token(&[("mydb", false, true)]).await;
    let capture = CaptureUpstream::start().await;
    let impostor = Ca::new("impostor CA").server("database");
    let front = TlsFront::start(
        capture.addr,
        certs::server_config(&impostor, &[b"http/1.1"]),
    )
    .await;
    let trusted = Ca::new("database CA");
    let dir = tempfile::tempdir().unwrap();
    let options = fluxgate::tls::client::ClientFiles {
        ca: Some(fluxgate::tls::PemFile::new(
            "--upstream-ca",
            trusted.write(dir.path(), "ca.pem"),
        )),
        ..Default::default()
    };
    let upstream_tls = Arc::new(fluxgate::tls::client::rustls_config(&options).unwrap());
    let proxy = TlsProxy::start(
        local_authorizer(&tokens),
        &front.url(),
        &front.url(),
        Some(upstream_tls),
        None,
    )
    .await;
    let reply = common_send(request(
        "POST",
        &format!("http://{}/write?db=mydb", proxy.addr),
        &[("authorization", &format!("Token {token}"))],
        "cpu value=1",
    ))
    .await;
    assert!(reply.status >= 500, "{reply:?}");
    assert_eq!(
        capture.count(),
        0,
        "nothing may reach an unverified upstream"
    );
}

async fn common_send(request: http::Request<Full<bytes::Bytes>>) -> super::Reply {
    super::common::proxy::send(request).await
}
