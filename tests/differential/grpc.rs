//! gRPC (Arrow Flight) through the proxy to a capturing h2c upstream.
//!
//! tonic servers (InfluxDB 3's Flight service among them) merge HTTP/2
//! request trailers into the request metadata, replacing header values: a
//! `database: secret` trailer after a `database: x` header would make the
//! upstream act on `secret`, and an `authorization` trailer would carry the
//! caller's token upstream. A call whose trailers carry metadata must never
//! reach the upstream with them. JSON tickets that do not parse strictly
//! must be refused, not treated as opaque.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fluxgate::authz::Authorizer;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use prost::Message as _;

use crate::common::capture::{Canned, CaptureUpstream};
use crate::common::proxy::{ProxyServer, flight_settings};
use crate::harness::{Grant, Recording, TOKEN};

const SERVICE: &str = "/arrow.flight.protocol.FlightService";

struct GrpcEnv {
    upstream: CaptureUpstream,
    proxy: ProxyServer,
}

async fn env() -> GrpcEnv {
    let upstream = CaptureUpstream::start().await;
    upstream.set_response(Canned {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/grpc".into()),
            ("grpc-status".into(), "0".into()),
        ],
        body: Bytes::new(),
    });
    let authorizer: Arc<dyn Authorizer> = Arc::new(Recording::new(Grant::ReadX));
    let proxy = ProxyServer::start_flight(
        authorizer,
        "http://127.0.0.1:9",
        &upstream.url(),
        flight_settings(&["DoAction"]),
        None,
    )
    .await;
    GrpcEnv { upstream, proxy }
}

fn frame(payload: &[u8]) -> Bytes {
    let mut v = vec![0u8];
    v.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    v.extend_from_slice(payload);
    Bytes::from(v)
}

fn ticket(bytes: &[u8]) -> Bytes {
    frame(&arrow_flight::Ticket::new(bytes.to_vec()).encode_to_vec())
}

fn descriptor() -> Bytes {
    use arrow_flight::sql::ProstMessageExt as _;
    let command = arrow_flight::sql::CommandStatementQuery {
        query: "SELECT 1".to_owned(),
        transaction_id: None,
    }
    .as_any()
    .encode_to_vec();
    frame(&arrow_flight::FlightDescriptor::new_cmd(command).encode_to_vec())
}

fn action() -> Bytes {
    frame(
        &arrow_flight::Action {
            r#type: "CancelQuery".into(),
            body: Bytes::new(),
        }
        .encode_to_vec(),
    )
}

/// One gRPC call over h2c: `headers`, one message, then `trailers` (none:
/// the stream simply ends). Returns the gRPC status the caller saw.
async fn call(
    env: &GrpcEnv,
    method: &str,
    headers: &[(&str, &str)],
    message: Bytes,
    trailers: &[(&str, &str)],
) -> Option<String> {
    let mut frames = vec![Ok::<_, Infallible>(Frame::data(message))];
    if !trailers.is_empty() {
        let mut map = http::HeaderMap::new();
        for (k, v) in trailers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        frames.push(Ok(Frame::trailers(map)));
    }
    let body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}{SERVICE}/{method}", env.proxy.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {TOKEN}"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let work = async {
        let response = client.request(request.body(body).unwrap()).await.ok()?;
        let from_headers = response
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap_or("?").to_owned());
        let collected = response.into_body().collect().await.ok()?;
        let from_trailers = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.to_str().unwrap_or("?").to_owned());
        from_headers.or(from_trailers)
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .expect("gRPC call did not finish within 10 s")
}

/// What reached the upstream since `before`, as violations of the rule
/// "no request trailers carrying metadata, no caller token".
fn trailer_violations(env: &GrpcEnv, before: usize, case: &str) -> Vec<String> {
    let mut out = Vec::new();
    for c in env.upstream.requests().iter().skip(before) {
        if let Some(t) = c.trailers.as_ref().filter(|t| !t.is_empty()) {
            out.push(format!(
                "{case}: reached the upstream with request trailers {t:?} (tonic merges them into the metadata)"
            ));
        }
        let leaked = c
            .headers
            .values()
            .chain(c.trailers.iter().flat_map(|t| t.values()))
            .any(|v| {
                v.as_bytes()
                    .windows(TOKEN.len())
                    .any(|w| w == TOKEN.as_bytes())
            });
        if leaked {
            out.push(format!(
                "{case}: SECURITY: the caller's token reached the upstream"
            ));
        }
    }
    out
}

#[tokio::test]
async fn calls_without_trailers_still_pass() {
    // The control: the same calls with a bare end of stream are forwarded.
    let e = env().await;
    let json = br#"{"database":"x","sql_query":"SELECT 1","query_type":"sql"}"#;
    let status = call(&e, "DoGet", &[], ticket(json), &[]).await;
    assert_eq!(
        status.as_deref(),
        Some("0"),
        "DoGet with a JSON ticket for x"
    );
    let status = call(&e, "GetFlightInfo", &[("database", "x")], descriptor(), &[]).await;
    assert_eq!(status.as_deref(), Some("0"), "GetFlightInfo on x");
    assert_eq!(e.upstream.count(), 2);
    assert!(trailer_violations(&e, 0, "control").is_empty());
}

#[tokio::test]
async fn request_trailers_never_reach_the_upstream() {
    let e = env().await;
    let bearer = format!("Bearer {TOKEN}");
    // (case, method, headers, message, trailers)
    type Call<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Bytes,
        Vec<(&'a str, &'a str)>,
    );
    let cases: Vec<Call<'_>> = vec![
        (
            "GetFlightInfo, database trailer",
            "GetFlightInfo",
            vec![("database", "x")],
            descriptor(),
            vec![("database", "secret")],
        ),
        (
            "GetFlightInfo, bucket trailer",
            "GetFlightInfo",
            vec![("database", "x")],
            descriptor(),
            vec![("bucket", "secret")],
        ),
        (
            "GetFlightInfo, iox-namespace-name trailer",
            "GetFlightInfo",
            vec![("database", "x")],
            descriptor(),
            vec![("iox-namespace-name", "secret")],
        ),
        (
            "GetFlightInfo, authorization trailer",
            "GetFlightInfo",
            vec![("database", "x")],
            descriptor(),
            vec![("authorization", bearer.as_str())],
        ),
        (
            "DoGet opaque ticket, database trailer",
            "DoGet",
            vec![("database", "x")],
            ticket(b"rows=3"),
            vec![("database", "secret")],
        ),
        (
            "DoGet JSON ticket, database trailer",
            "DoGet",
            vec![],
            ticket(br#"{"database":"x","sql_query":"SELECT 1","query_type":"sql"}"#),
            vec![("database", "secret")],
        ),
        (
            "allow-listed DoAction, database trailer",
            "DoAction",
            vec![("database", "x")],
            action(),
            vec![("database", "secret")],
        ),
    ];
    let mut violations = Vec::new();
    for (name, method, headers, message, trailers) in cases {
        let before = e.upstream.count();
        let _ = call(&e, method, &headers, message, &trailers).await;
        violations.extend(trailer_violations(&e, before, name));
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[tokio::test]
async fn json_tickets_that_do_not_parse_strictly_are_refused() {
    let e = env().await;
    let tickets: Vec<(&str, Vec<u8>)> = vec![
        (
            "trailing data",
            br#"{"database":"x","sql_query":"SELECT 1","query_type":"sql"}garbage"#.to_vec(),
        ),
        (
            "trailing object",
            br#"{"database":"x","sql_query":"SELECT 1","query_type":"sql"}{"database":"secret"}"#.to_vec(),
        ),
        (
            "byte-order mark",
            [b"\xEF\xBB\xBF".as_slice(), br#"{"database":"x","sql_query":"SELECT 1","query_type":"sql"}"#].concat(),
        ),
        ("Database casing", br#"{"Database":"secret","sql_query":"SELECT 1","query_type":"sql"}"#.to_vec()),
        ("DATABASE casing", br#"{"DATABASE":"secret","sql_query":"SELECT 1","query_type":"sql"}"#.to_vec()),
        (
            "duplicate database",
            br#"{"database":"x","sql_query":"SELECT 1","query_type":"sql","database":"secret"}"#.to_vec(),
        ),
        (
            "two database spellings",
            br#"{"database":"x","namespace_name":"secret","sql_query":"SELECT 1","query_type":"sql"}"#.to_vec(),
        ),
    ];
    let mut forwarded = Vec::new();
    for (name, bytes) in tickets {
        let before = e.upstream.count();
        let status = call(&e, "DoGet", &[("database", "x")], ticket(&bytes), &[]).await;
        if e.upstream.count() != before {
            forwarded.push(format!(
                "{name}: ticket {} reached the upstream (caller saw grpc-status {status:?}); it must be refused",
                bytes.escape_ascii()
            ));
        }
    }
    assert!(forwarded.is_empty(), "{}", forwarded.join("\n"));
}
