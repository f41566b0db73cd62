//! Arrow Flight and Flight SQL through the proxy: a real arrow-flight
//! server upstream (tests/common/flight.rs), the real token service, and
//! arrow-flight's own clients as callers. Covers the three ticket forms,
//! every refusal status, streaming of a large result, Flight SQL metadata,
//! the method allow-list, and malformed gRPC sent over raw HTTP/2.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::{FlightClient, FlightDescriptor};
use bytes::Bytes;
use common::TokenServer;
use common::flight::FlightUpstream;
use common::proxy::{ProxyServer, flight_settings};
use fluxgate::authz::Authorizer;
use fluxgate::authz::client::AuthzClient;
use fluxgate::proxy::flight::ticket::query_type;
use futures_util::TryStreamExt as _;
use http_body_util::{BodyExt as _, Full};
use prost::Message as _;
use tonic::Code;

use common::flight_client::{
    any_ticket, channel, client, code, env, env_with, json_ticket, read_info, rows,
};

#[tokio::test]
async fn each_ticket_form_returns_rows_and_reaches_the_upstream_byte_for_byte() {
    let e = env().await;
    let (_, t) = e.tokens.database_token(&[("mydb", true, false)]).await;
    let mut c = client(&e.proxy, Some(&t)).await;
    let forms = [
        json_ticket("mydb", "SELECT * FROM cpu -- rows=7", "sql"),
        any_ticket(&read_info("mydb", "SELECT 1 -- rows=5", query_type::SQL)),
        read_info("mydb", "SELECT 2 -- rows=4", query_type::SQL).encode_to_vec(),
        json_ticket("mydb", "SELECT * FROM m -- rows=2", "influxql"),
    ];
    for (ticket, expected) in forms.into_iter().zip([7, 5, 4, 2]) {
        assert_eq!(rows(&mut c, ticket.clone()).await, Ok(expected));
        let call = e.upstream.last();
        assert_eq!(call.method, "DoGet");
        assert_eq!(call.ticket.as_deref(), Some(&ticket[..]));
        assert!(call.metadata.get("authorization").is_none());
        assert!(!format!("{:?}", call.metadata).contains(&t));
    }
}

#[tokio::test]
async fn upstream_credential_replaces_the_callers() {
    let e = env_with(&[], Some("Bearer upstream-secret")).await;
    let (_, t) = e.tokens.database_token(&[("mydb", true, false)]).await;
    let mut c = client(&e.proxy, Some(&t)).await;
    assert_eq!(
        rows(&mut c, json_ticket("mydb", "SELECT 1", "sql")).await,
        Ok(3)
    );
    assert_eq!(
        e.upstream.last().metadata["authorization"],
        "Bearer upstream-secret"
    );
}

#[tokio::test]
async fn refusals_have_the_flight_status_codes() {
    let e = env().await;
    let (_, other) = e
        .tokens
        .database_token(&[("other", true, true), ("mydb", false, true)])
        .await;
    let ticket = json_ticket("mydb", "SELECT 1", "sql");

    let mut c = client(&e.proxy, Some(&other)).await;
    assert_eq!(
        rows(&mut c, ticket.clone()).await,
        Err(Code::PermissionDenied)
    );
    let mut c = client(&e.proxy, None).await;
    assert_eq!(
        rows(&mut c, ticket.clone()).await,
        Err(Code::Unauthenticated)
    );
    let mut c = client(&e.proxy, Some("not-a-known-token")).await;
    assert_eq!(
        rows(&mut c, ticket.clone()).await,
        Err(Code::PermissionDenied)
    );
    let mut c = FlightClient::new(channel(&e.proxy).await);
    c.add_header("authorization", "Digest abc").unwrap();
    assert_eq!(
        rows(&mut c, ticket.clone()).await,
        Err(Code::Unauthenticated)
    );
    assert!(e.upstream.calls().is_empty(), "{:?}", e.upstream.calls());
}

#[tokio::test]
async fn token_service_down_is_unavailable() {
    let tokens = TokenServer::start().await;
    let (_, t) = tokens.database_token(&[("mydb", true, false)]).await;
    let url = tokens.url();
    tokens.stop().await;
    let upstream = FlightUpstream::start().await;
    let authorizer: Arc<dyn Authorizer> = Arc::new(AuthzClient::for_uri(
        url.parse().unwrap(),
        Duration::from_secs(2),
    ));
    let proxy = ProxyServer::start_flight(
        authorizer,
        "http://127.0.0.1:9",
        &upstream.url(),
        flight_settings(&[]),
        None,
    )
    .await;
    let mut c = client(&proxy, Some(&t)).await;
    assert_eq!(
        rows(&mut c, json_ticket("mydb", "SELECT 1", "sql")).await,
        Err(Code::Unavailable)
    );
    assert!(upstream.calls().is_empty());
}

#[tokio::test]
async fn influxql_tickets_need_every_database_they_name() {
    let e = env().await;
    let (_, only_mydb) = e.tokens.database_token(&[("mydb", true, false)]).await;
    let (_, both) = e
        .tokens
        .database_token(&[("mydb", true, false), ("other", true, false)])
        .await;
    let across = json_ticket(
        "mydb",
        r#"SELECT * FROM "other"."autogen"."cpu""#,
        "influxql",
    );
    let mut c = client(&e.proxy, Some(&only_mydb)).await;
    assert_eq!(
        rows(&mut c, across.clone()).await,
        Err(Code::PermissionDenied)
    );
    let admin = json_ticket("mydb", "DROP DATABASE mydb", "influxql");
    assert_eq!(rows(&mut c, admin).await, Err(Code::PermissionDenied));
    let show = json_ticket("mydb", "SHOW DATABASES", "influxql");
    assert_eq!(rows(&mut c, show).await, Err(Code::PermissionDenied));
    let raw = read_info("mydb", "SELECT * FROM other..cpu", query_type::INFLUX_QL);
    assert_eq!(
        rows(&mut c, raw.encode_to_vec()).await,
        Err(Code::PermissionDenied)
    );
    assert!(e.upstream.calls().is_empty());
    let mut c = client(&e.proxy, Some(&both)).await;
    assert_eq!(rows(&mut c, across).await, Ok(3));
}

#[tokio::test]
async fn a_large_result_streams_through() {
    let e = env().await;
    let (_, t) = e.tokens.database_token(&[("mydb", true, false)]).await;
    let mut c = client(&e.proxy, Some(&t)).await;
    let ticket = json_ticket("mydb", "SELECT * FROM big -- rows=250000", "sql");
    assert_eq!(rows(&mut c, ticket).await, Ok(250_000));
}

#[tokio::test]
async fn opaque_tickets_fall_back_to_the_metadata_database() {
    let e = env().await;
    let (_, t) = e.tokens.database_token(&[("mydb", true, false)]).await;
    let mut c = client(&e.proxy, Some(&t)).await;
    assert_eq!(
        rows(&mut c, "opaque-handle-17").await,
        Err(Code::InvalidArgument)
    );
    c.add_header("database", "mydb").unwrap();
    assert_eq!(rows(&mut c, "opaque-handle-17").await, Ok(3));
    let mut c = client(&e.proxy, Some(&t)).await;
    c.add_header("database", "other").unwrap();
    assert_eq!(
        rows(&mut c, "opaque-handle-17").await,
        Err(Code::PermissionDenied)
    );
    // Metadata naming another database than the ticket needs both.
    assert_eq!(
        rows(&mut c, json_ticket("mydb", "SELECT 1", "sql")).await,
        Err(Code::PermissionDenied)
    );
    assert_eq!(e.upstream.calls().len(), 1);
}

#[tokio::test]
async fn handshake_is_answered_by_the_proxy_for_a_known_token() {
    let e = env().await;
    let (_, t) = e.tokens.database_token(&[("mydb", true, false)]).await;
    let mut c = client(&e.proxy, Some(&t)).await;
    assert_eq!(&c.handshake("hello").await.unwrap()[..], b"hello");
    let mut c = client(&e.proxy, None).await;
    assert_eq!(
        code(c.handshake("hello").await.unwrap_err()),
        Code::Unauthenticated
    );
    let mut c = client(&e.proxy, Some("whatever")).await;
    assert_eq!(
        code(c.handshake("again").await.unwrap_err()),
        Code::PermissionDenied
    );
    // InfluxDB 3 would answer with the credential it was called with.
    assert!(e.upstream.calls().is_empty());
}

fn put_stream()
-> impl futures_util::Stream<Item = arrow_flight::error::Result<arrow_flight::FlightData>>
+ Send
+ 'static {
    futures_util::stream::iter([Ok(arrow_flight::FlightData::new()
        .with_descriptor(FlightDescriptor::new_path(vec!["x".to_owned()])))])
}

async fn do_put(c: &mut FlightClient) -> Result<(), Code> {
    let results: Vec<_> = c
        .do_put(put_stream())
        .await
        .map_err(code)?
        .try_collect()
        .await
        .map_err(code)?;
    assert_eq!(results.len(), 1);
    Ok(())
}

async fn list_flights(c: &mut FlightClient) -> Result<usize, Code> {
    let flights: Vec<_> = c
        .list_flights(Bytes::new())
        .await
        .map_err(code)?
        .try_collect()
        .await
        .map_err(code)?;
    Ok(flights.len())
}

#[tokio::test]
async fn other_methods_are_refused_unless_allow_listed() {
    let e = env().await;
    let (_, t) = e.tokens.database_token(&[("mydb", true, true)]).await;
    let mut c = client(&e.proxy, Some(&t)).await;
    assert_eq!(do_put(&mut c).await, Err(Code::PermissionDenied));
    assert_eq!(list_flights(&mut c).await, Err(Code::PermissionDenied));
    assert_eq!(
        code(c.list_actions().await.err().unwrap()),
        Code::PermissionDenied
    );
    assert!(e.upstream.calls().is_empty());

    let e = env_with(&["DoPut", "ListFlights"], None).await;
    let (_, rw) = e.tokens.database_token(&[("mydb", true, true)]).await;
    let (_, read_only) = e.tokens.database_token(&[("mydb", true, false)]).await;
    let mut c = client(&e.proxy, Some(&rw)).await;
    assert_eq!(list_flights(&mut c).await, Ok(0));
    c.add_header("database", "mydb").unwrap();
    assert_eq!(do_put(&mut c).await, Ok(()));
    let mut c = client(&e.proxy, Some(&read_only)).await;
    c.add_header("database", "mydb").unwrap();
    assert_eq!(do_put(&mut c).await, Err(Code::PermissionDenied));
    let mut c = client(&e.proxy, Some("unknown")).await;
    assert_eq!(list_flights(&mut c).await, Err(Code::PermissionDenied));
    let mut c = client(&e.proxy, None).await;
    assert_eq!(list_flights(&mut c).await, Err(Code::Unauthenticated));
    // Still refused: not in the list.
    let mut c = client(&e.proxy, Some(&rw)).await;
    assert_eq!(
        code(c.list_actions().await.err().unwrap()),
        Code::PermissionDenied
    );
    let methods: Vec<_> = e.upstream.calls().iter().map(|c| c.method).collect();
    assert_eq!(methods, ["ListFlights", "DoPut"]);
}

/// One raw HTTP/2 gRPC call; returns (HTTP status, grpc-status).
async fn raw_call(
    proxy: &ProxyServer,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Option<String>) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}{path}", proxy.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = client
        .request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let from_headers = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    let collected = response.into_body().collect().await.unwrap();
    let from_trailers = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_owned());
    (status, from_headers.or(from_trailers))
}

fn grpc_frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![flag];
    v.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn ticket_message(ticket: &[u8]) -> Vec<u8> {
    arrow_flight::Ticket::new(ticket.to_vec()).encode_to_vec()
}

const DO_GET: &str = "/arrow.flight.protocol.FlightService/DoGet";

#[tokio::test]
async fn malformed_grpc_gets_a_clean_status_and_nothing_is_forwarded() {
    let e = env().await;
    let (_, t) = e.tokens.database_token(&[("mydb", true, false)]).await;
    let auth = format!("Bearer {t}");
    let auth = [("authorization", auth.as_str())];
    let good = ticket_message(&json_ticket("mydb", "SELECT 1", "sql"));

    let mut short = grpc_frame(0, &good);
    short.truncate(short.len() - 3);
    let mut two = grpc_frame(0, &good);
    two.extend_from_slice(&grpc_frame(0, &good));
    let invalid = Code::InvalidArgument;
    let exhausted = Code::ResourceExhausted;
    let cases: Vec<(&str, Vec<u8>, Code)> = vec![
        ("length prefix beyond the body", short, invalid),
        ("prefix cut short", vec![0, 0, 0], invalid),
        ("no message", vec![], invalid),
        (
            "compressed flag without grpc-encoding",
            grpc_frame(1, &good),
            invalid,
        ),
        ("flag byte 2", grpc_frame(2, &good), invalid),
        (
            "oversized declared length",
            vec![0, 0x7f, 0xff, 0xff, 0xff, 1, 2, 3],
            exhausted,
        ),
        (
            "oversized real message",
            grpc_frame(0, &ticket_message(&vec![b'x'; (1 << 20) + 10])),
            exhausted,
        ),
        (
            "not a Ticket message",
            grpc_frame(0, &[0xff, 0xff]),
            invalid,
        ),
        (
            "ticket valid in no form",
            grpc_frame(0, &ticket_message(b"\x00\x01garbage")),
            invalid,
        ),
        (
            "JSON ticket without a usable database",
            grpc_frame(0, &ticket_message(br#"{"database": "", "sql_query": "x"}"#)),
            invalid,
        ),
        ("two messages on DoGet", two, invalid),
    ];
    for (what, body, expected) in cases {
        let (status, grpc) = raw_call(&e.proxy, DO_GET, &auth, body).await;
        assert_eq!(status, 200, "{what}");
        assert_eq!(grpc, Some((expected as i32).to_string()), "{what}");
    }
    // Unknown gRPC services are not Flight.
    let (_, grpc) = raw_call(&e.proxy, "/grpc.health.v1.Health/Check", &auth, vec![]).await;
    assert_eq!(grpc, Some((Code::Unimplemented as i32).to_string()));
    assert!(e.upstream.calls().is_empty(), "{:?}", e.upstream.calls());

    // The proxy is still serving, and grpc-timeout reaches the upstream.
    let headers = [auth[0], ("grpc-timeout", "5S")];
    let (status, grpc) = raw_call(&e.proxy, DO_GET, &headers, grpc_frame(0, &good)).await;
    assert_eq!((status, grpc.as_deref()), (200, Some("0")));
    let call = e.upstream.last();
    assert_eq!(call.metadata["grpc-timeout"], "5S");
    // The ticket is forwarded re-encoded from what was decided.
    assert_eq!(
        call.ticket.as_deref(),
        Some(&br#"{"database":"mydb","query_type":"sql","sql_query":"SELECT 1"}"#[..])
    );
}

#[tokio::test]
async fn gzip_compressed_tickets_are_read_and_forwarded_uncompressed() {
    use std::io::Write as _;
    let e = env().await;
    let (_, t) = e.tokens.database_token(&[("mydb", true, false)]).await;
    let auth = format!("Bearer {t}");
    let ticket = json_ticket("mydb", "SELECT 1", "sql");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&ticket_message(&ticket)).unwrap();
    let body = grpc_frame(1, &gz.finish().unwrap());
    let headers = [("authorization", auth.as_str()), ("grpc-encoding", "gzip")];
    let (_, grpc) = raw_call(&e.proxy, DO_GET, &headers, body).await;
    // The proxy read the compressed ticket and forwarded the canonical one,
    // uncompressed (the test upstream, tonic built without gzip, would
    // refuse a compressed message).
    assert_eq!(grpc.as_deref(), Some("0"));
    let call = e.upstream.last();
    assert!(call.metadata.get("grpc-encoding").is_none());
    assert_eq!(
        call.ticket.as_deref(),
        Some(&br#"{"database":"mydb","query_type":"sql","sql_query":"SELECT 1"}"#[..])
    );

    let (_, other) = e.tokens.database_token(&[("other", true, false)]).await;
    let auth = format!("Bearer {other}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&ticket_message(&ticket)).unwrap();
    let body = grpc_frame(1, &gz.finish().unwrap());
    let headers = [("authorization", auth.as_str()), ("grpc-encoding", "gzip")];
    let (_, grpc) = raw_call(&e.proxy, DO_GET, &headers, body).await;
    assert_eq!(grpc, Some((Code::PermissionDenied as i32).to_string()));
}

#[tokio::test]
async fn decisions_are_audited_like_http_ones() {
    use fluxgate::audit::{Audit, Destination};
    use fluxgate::proxy::Proxy;
    use fluxgate::proxy::flight::FlightService;
    use fluxgate::proxy::forward::{Protocol, Upstream};
    use fluxgate::proxy::gate::Gate;
    use fluxgate::proxy::http::HttpService;

    let tokens = TokenServer::start().await;
    let upstream = FlightUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let audit = Audit::start(&Destination::File(path.clone()))
        .await
        .unwrap();
    let authorizer: Arc<dyn Authorizer> = Arc::new(AuthzClient::for_uri(
        tokens.url().parse().unwrap(),
        Duration::from_secs(2),
    ));
    let gate = Gate::new(authorizer, &common::proxy::settings(), audit);
    let http = HttpService::new(
        gate.clone(),
        Upstream::new("http://127.0.0.1:9".parse().unwrap(), None, Protocol::Http1),
        Default::default(),
    );
    let grpc = Upstream::new(upstream.url().parse().unwrap(), None, Protocol::Http2);
    let flight = FlightService::new(gate, grpc, flight_settings(&[]));
    let proxy = ProxyServer::serve(Proxy::new(http).with_flight(flight)).await;

    let (id, t) = tokens.database_token(&[("mydb", true, false)]).await;
    let mut c = client(&proxy, Some(&t)).await;
    assert_eq!(
        rows(&mut c, json_ticket("mydb", "SELECT 1", "sql")).await,
        Ok(3)
    );
    assert_eq!(
        rows(&mut c, json_ticket("other", "SELECT 1", "sql")).await,
        Err(Code::PermissionDenied)
    );
    assert_eq!(c.handshake("x").await.unwrap(), Bytes::from_static(b"x"));

    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!text.contains(&t), "a token reached the audit log");
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 3, "{text}");
    // The Handshake, answered by the proxy for a known token.
    assert_eq!(events[2]["api"], "flight");
    assert_eq!(events[2]["decision"], "allow");
    assert_eq!(events[2]["token_id"], id.as_str());
    for (event, (db, decision)) in events.iter().zip([("mydb", "allow"), ("other", "deny")]) {
        assert_eq!(event["api"], "flight");
        assert_eq!(event["path"], DO_GET);
        assert_eq!(event["databases"], serde_json::json!([db]));
        assert_eq!(event["actions"], serde_json::json!(["read"]));
        assert_eq!(event["decision"], decision);
        assert_eq!(event["token_id"], id.as_str());
    }
    assert_eq!(events[1]["grpc_status"], Code::PermissionDenied as i32);
}
