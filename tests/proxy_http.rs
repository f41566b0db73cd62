//! The HTTP proxy against a capturing upstream and a real token service on
//! 127.0.0.1:0: what is forwarded (byte for byte, credentials gone), what is
//! refused (status and body per API), and the security invariants.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::TokenServer;
use common::capture::{Canned, CaptureUpstream};
use common::proxy::{ProxyServer, request, send, settings};
use fluxgate::authz::Authorizer;
use fluxgate::authz::client::AuthzClient;

struct Env {
    tokens: TokenServer,
    upstream: CaptureUpstream,
    proxy: ProxyServer,
}

async fn env() -> Env {
    let tokens = TokenServer::start().await;
    let upstream = CaptureUpstream::start().await;
    let authorizer = authz_client(tokens.url(), Duration::from_secs(2));
    let proxy = ProxyServer::start(authorizer, &upstream.url()).await;
    Env {
        tokens,
        upstream,
        proxy,
    }
}

/// A gRPC Authorize client for the token service at `url`.
fn authz_client(url: impl AsRef<str>, timeout: Duration) -> Arc<dyn Authorizer> {
    Arc::new(AuthzClient::for_uri(url.as_ref().parse().unwrap(), timeout))
}

fn token_header(t: &str) -> String {
    format!("Token {t}")
}

/// One request of a table: what is sent, the status expected, and when
/// given, a key of the JSON answer and what it must contain.
struct Case<'a> {
    method: &'a str,
    path: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: String,
    status: u16,
    answer: Option<(&'a str, &'a str)>,
}

fn case<'a>(
    method: &'a str,
    path: &'a str,
    headers: &[(&'a str, &'a str)],
    body: &str,
    status: u16,
) -> Case<'a> {
    Case {
        method,
        path,
        headers: headers.to_vec(),
        body: body.to_owned(),
        status,
        answer: None,
    }
}

impl<'a> Case<'a> {
    /// The answer's `key` must contain `text`.
    fn says(mut self, key: &'a str, text: &'a str) -> Self {
        self.answer = Some((key, text));
        self
    }
}

/// Sends every case, checking each status and answer.
async fn check(proxy: &ProxyServer, cases: &[Case<'_>]) {
    for c in cases {
        let r = send(request(
            c.method,
            &proxy.url(c.path),
            &c.headers,
            c.body.clone(),
        ))
        .await;
        assert_eq!(r.status, c.status, "{} {}: {:?}", c.method, c.path, r.body);
        if let Some((key, text)) = c.answer {
            assert_eq!(r.headers["content-type"], "application/json");
            let got = r.json()[key].as_str().unwrap_or_default().to_owned();
            assert!(
                got.contains(text),
                "{} {}: {key} = {got:?}",
                c.method,
                c.path
            );
        }
    }
}

#[tokio::test]
async fn v1_write_is_forwarded_byte_for_byte_without_credentials() {
    let e = env().await;
    let (_, t) = e.tokens.database_token(&[("mydb", false, true)]).await;
    let body = "cpu,host=a value=1 1000000000\ncpu,host=b value=2 1000000001\n";
    let auth = token_header(&t);
    let r = send(request(
        "POST",
        &e.proxy
            .url("/write?db=mydb&rp=autogen&precision=ns&u=someone"),
        &[
            ("authorization", &auth),
            ("content-type", "text/plain; charset=utf-8"),
            ("user-agent", "telegraf"),
        ],
        body,
    ))
    .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let got = e.upstream.last();
    assert_eq!(got.method, "POST");
    assert_eq!(
        got.uri.path_and_query().unwrap().as_str(),
        "/write?db=mydb&rp=autogen&precision=ns"
    );
    assert_eq!(got.body, body.as_bytes());
    assert!(got.headers.get("authorization").is_none());
    assert_eq!(got.headers["user-agent"], "telegraf");
    assert_eq!(got.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(got.headers["x-forwarded-proto"], "http");
    assert!(!format!("{:?}", got).contains(&t));
}

#[tokio::test]
async fn v1_credentials_basic_and_p_param() {
    let e = env().await;
    let (_, t) = e.tokens.database_token(&[("db", true, true)]).await;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("anyone:{t}"))
    );
    let r = send(request(
        "POST",
        &e.proxy.url("/write?db=db"),
        &[("authorization", &basic)],
        "m v=1",
    ))
    .await;
    assert_eq!(r.status, 204);
    assert!(e.upstream.last().headers.get("authorization").is_none());

    let r = send(request(
        "POST",
        &e.proxy.url(&format!("/write?db=db&u=x&p={t}")),
        &[],
        "m v=1",
    ))
    .await;
    assert_eq!(r.status, 204);
    let forwarded = e.upstream.last().uri.to_string();
    assert!(
        !forwarded.contains(&t) && !forwarded.contains("p=") && !forwarded.contains("u="),
        "{forwarded}"
    );

    // Same token twice is fine; different tokens are ambiguous.
    let auth = token_header(&t);
    let r = send(request(
        "POST",
        &e.proxy.url(&format!("/write?db=db&p={t}")),
        &[("authorization", &auth)],
        "m v=1",
    ))
    .await;
    assert_eq!(r.status, 204);
    let r = send(request(
        "POST",
        &e.proxy.url("/write?db=db&p=other"),
        &[("authorization", &auth)],
        "m v=1",
    ))
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].is_string());
}

#[tokio::test]
async fn refusals_have_influxdb_shapes() {
    let e = env().await;
    let (_, read_only) = e.tokens.database_token(&[("db", true, false)]).await;
    let ro = token_header(&read_only);
    let ro = [("authorization", ro.as_str())];
    let unknown = [("authorization", "Token fgdb_unknown")];
    check(
        &e.proxy,
        &[
            // v1: {"error": …}
            case("POST", "/write?db=db", &[], "m v=1", 401).says("error", "token"),
            case("POST", "/write?db=db", &unknown, "m v=1", 401).says("error", "unknown"),
            case("POST", "/write?db=db", &ro, "m v=1", 403).says("error", "write"),
            // v2: {"code", "message"}
            case("POST", "/api/v2/write?bucket=db&org=x", &ro, "m v=1", 403)
                .says("code", "forbidden"),
            case("POST", "/api/v2/write?bucket=db", &[], "m v=1", 401).says("code", "unauthorized"),
            case(
                "POST",
                "/api/v2/write?bucket=db",
                &[("authorization", "Bearer")],
                "m v=1",
                400,
            )
            .says("code", "invalid"),
            // v3: {"error": …}
            case("POST", "/api/v3/write_lp?db=db", &ro, "m v=1", 403).says("error", "write"),
        ],
    )
    .await;
    assert_eq!(
        e.upstream.count(),
        0,
        "nothing refused may reach the upstream"
    );
}

#[tokio::test]
async fn malformed_and_ambiguous_requests_are_400() {
    let e = env().await;
    let (_, t) = e.tokens.database_token(&[("*", true, true)]).await;
    let auth = token_header(&t);
    for (path, why) in [
        ("/write?db=a&db=b", "repeated db"),
        ("/write?db=a&rp=x&rp=y", "repeated rp"),
        ("/api/v2/write?bucket=a&bucket=b", "repeated bucket"),
        (
            "/query?db=a&q=SELECT+*+FROM+m&q=SELECT+*+FROM+m",
            "repeated q",
        ),
        ("/write?db=a;db=b", "semicolon"),
    ] {
        let r = send(request(
            "POST",
            &e.proxy.url(path),
            &[("authorization", &auth)],
            "m v=1",
        ))
        .await;
        assert_eq!(r.status, 400, "{why}");
    }
    for value in ["Digest abc", "Token", "Token ", "Basic !!!"] {
        let r = send(request(
            "POST",
            &e.proxy.url("/write?db=a"),
            &[("authorization", value)],
            "m v=1",
        ))
        .await;
        assert_eq!(r.status, 400, "{value}");
    }
    let two = http::Request::builder()
        .method("POST")
        .uri(e.proxy.url("/write?db=a"))
        .header("authorization", &auth)
        .header("authorization", &auth)
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"m v=1",
        )))
        .unwrap();
    assert_eq!(send(two).await.status, 400);
    assert_eq!(e.upstream.count(), 0);
}

#[tokio::test]
async fn path_variants_are_refused() {
    let e = env().await;
    let (_, t) = e.tokens.database_token(&[("*", true, true)]).await;
    let auth = token_header(&t);
    for path in [
        "/write/?db=a",
        "//write?db=a",
        "/Write?db=a",
        "/%77rite?db=a",
        "/./write?db=a",
        "/api/v2/../../write?db=a",
    ] {
        let r = send(request(
            "POST",
            &e.proxy.url(path),
            &[("authorization", &auth)],
            "m v=1",
        ))
        .await;
        assert_eq!(r.status, 404, "{path}");
    }
    assert_eq!(e.upstream.count(), 0);
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused() {
    let e = env().await;
    let (_, t) = e.tokens.database_token(&[("*", true, true)]).await;
    let addr = e.proxy.addr;
    let raw = format!(
        "POST /write?db=a HTTP/1.1\r\nHost: x\r\nAuthorization: Token {t}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nm v=1\r\n0\r\n\r\n"
    );
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(e.upstream.count(), 0);
}

#[tokio::test]
async fn influxql_statements_are_all_authorized() {
    let e = env().await;
    let (_, t) = e.tokens.database_token(&[("mine", true, false)]).await;
    let auth = token_header(&t);
    let auth = [("authorization", auth.as_str())];
    let paths: Vec<(String, u16, Option<&str>)> = [
        ("SELECT * FROM cpu", 204, None),
        ("SELECT * FROM \"mine\".\"autogen\".\"cpu\"", 204, None),
        ("SELECT * FROM other..cpu", 403, None),
        (
            "SELECT * FROM cpu; SELECT * FROM other.autogen.cpu",
            403,
            None,
        ),
        // INTO needs write.
        ("SELECT * INTO mine..copy FROM cpu", 403, None),
        ("SELECT * FROM (SELECT * FROM secret..cpu)", 403, None),
        ("SHOW MEASUREMENTS ON other", 403, None),
        (
            "CREATE DATABASE \"telegraf\"",
            403,
            Some("skip_database_creation"),
        ),
        ("DROP MEASUREMENT cpu", 403, Some("management tokens")),
        (
            "CREATE USER u WITH PASSWORD 'p' WITH ALL PRIVILEGES",
            403,
            Some("replace database users"),
        ),
        ("this is not influxql", 400, None),
    ]
    .into_iter()
    .map(|(q, status, says)| {
        let q = form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>();
        (format!("/query?db=mine&q={q}"), status, says)
    })
    .collect();
    let cases: Vec<Case<'_>> = paths
        .iter()
        .map(|(path, status, says)| {
            let c = case("GET", path, &auth, "", *status);
            match says {
                Some(text) => c.says("error", text),
                None => c,
            }
        })
        .collect();
    check(&e.proxy, &cases).await;
    assert_eq!(
        e.upstream.count(),
        2,
        "only the two allowed queries reach the upstream"
    );
    // Unknown token on an admin statement: 401, not 403.
    check(
        &e.proxy,
        &[case(
            "GET",
            "/query?q=CREATE+DATABASE+x",
            &[("authorization", "Token nope")],
            "",
            401,
        )],
    )
    .await;
}

#[tokio::test]
async fn query_bodies_are_read_checked_and_forwarded_rebuilt() {
    let e = env().await;
    let (_, t) = e.tokens.database_token(&[("mine", true, false)]).await;
    let auth = token_header(&t);
    let form = [
        ("authorization", auth.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let json = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let influxql = [
        ("authorization", auth.as_str()),
        ("content-type", "application/vnd.influxql"),
    ];
    let v3 = r#"{"db":"mine","q":"SELECT * FROM cpu","format":"json"}"#;
    let big = format!("q=SELECT+*+FROM+cpu&db=mine&pad={}", "x".repeat(2 << 20));
    // (case, what the upstream must then have received last, if forwarded)
    let cases: Vec<(Case<'_>, Option<&str>)> = vec![
        (
            case("POST", "/query", &form, "q=SELECT+*+FROM+cpu&db=mine", 204),
            Some("q=SELECT+*+FROM+cpu&db=mine"),
        ),
        (
            case(
                "POST",
                "/query",
                &form,
                "q=SELECT+*+FROM+secret..cpu&db=mine",
                403,
            ),
            None,
        ),
        // The URL's db and the body's db must agree.
        (
            case(
                "POST",
                "/query?db=mine",
                &form,
                "q=SELECT+*+FROM+cpu&db=secret",
                400,
            ),
            None,
        ),
        // The query as the body: forwarded as a form.
        (
            case(
                "POST",
                "/query?db=mine",
                &influxql,
                "SELECT * FROM cpu",
                204,
            ),
            Some("q=SELECT+*+FROM+cpu&db=mine"),
        ),
        // v3 JSON, re-serialized from the values decided on.
        (
            case("POST", "/api/v3/query_sql", &json, v3, 204),
            Some(r#"{"db":"mine","format":"json","q":"SELECT * FROM cpu"}"#),
        ),
        // URL db disagrees with body db.
        (
            case("POST", "/api/v3/query_sql?db=secret", &json, v3, 400),
            None,
        ),
        (
            case(
                "GET",
                "/api/v3/query_sql?db=secret&q=SELECT+1",
                &form,
                "",
                403,
            ),
            None,
        ),
        // Too large to authorize.
        (case("POST", "/query", &form, &big, 413), None),
    ];
    for (c, forwarded) in cases {
        let before = e.upstream.count();
        check(&e.proxy, std::slice::from_ref(&c)).await;
        match forwarded {
            Some(body) => assert_eq!(e.upstream.last().body, body.as_bytes(), "{}", c.path),
            None => assert_eq!(e.upstream.count(), before, "{} was forwarded", c.path),
        }
    }
}

#[tokio::test]
async fn gzip_write_passes_untouched() {
    let e = env().await;
    // A v2 bucket db/rp needs write on db (1.8) and on db/rp (2.x).
    let (_, t) = e
        .tokens
        .database_token(&[("db", false, true), ("db/autogen", false, true)])
        .await;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(b"m v=1\nm v=2\n").unwrap();
    let gz = enc.finish().unwrap();
    let auth = token_header(&t);
    let r = send(request(
        "POST",
        &e.proxy
            .url("/api/v2/write?bucket=db/autogen&org=o&precision=s"),
        &[("authorization", &auth), ("content-encoding", "gzip")],
        gz.clone(),
    ))
    .await;
    assert_eq!(r.status, 204);
    let got = e.upstream.last();
    assert_eq!(got.body, gz);
    assert_eq!(got.headers["content-encoding"], "gzip");
}

#[tokio::test]
async fn responses_pass_through() {
    let e = env().await;
    let (_, t) = e.tokens.database_token(&[("db", true, false)]).await;
    e.upstream.set_response(Canned {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/x-msgpack".into()),
            ("x-influxdb-version".into(), "1.6.7".into()),
        ],
        body: bytes::Bytes::from_static(b"\x81\xa7results\x90"),
    });
    let auth = token_header(&t);
    let r = send(request(
        "GET",
        &e.proxy.url("/query?db=db&q=SELECT+*+FROM+m"),
        &[
            ("authorization", &auth),
            ("accept", "application/x-msgpack"),
        ],
        "",
    ))
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/x-msgpack");
    assert_eq!(r.headers["x-influxdb-version"], "1.6.7");
    assert_eq!(&r.body[..], b"\x81\xa7results\x90");
    assert_eq!(e.upstream.last().headers["accept"], "application/x-msgpack");
}

#[tokio::test]
async fn show_databases_lists_only_readable_databases() {
    let e = env().await;
    let (_, t) = e
        .tokens
        .database_token(&[("b", true, false), ("c", false, true)])
        .await;
    e.upstream.set_response(Canned {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: bytes::Bytes::from_static(
            br#"{"results":[{"statement_id":0,"series":[{"name":"databases","columns":["name"],"values":[["_internal"],["a"],["b"],["c"]]}]}]}"#,
        ),
    });
    let auth = token_header(&t);
    let r = send(request(
        "GET",
        &e.proxy.url("/query?q=SHOW+DATABASES"),
        &[
            ("authorization", &auth),
            ("accept", "application/x-msgpack"),
        ],
        "",
    ))
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(
        v["results"][0]["series"][0]["values"],
        serde_json::json!([["b"]])
    );
    assert_eq!(e.upstream.last().headers["accept"], "application/json");
    let r = send(request(
        "GET",
        &e.proxy.url("/query?q=SHOW+DATABASES"),
        &[("authorization", "Token bad")],
        "",
    ))
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn public_paths_need_no_token_and_unknown_paths_are_refused() {
    let e = env().await;
    let r = send(request("GET", &e.proxy.url("/ping"), &[], "")).await;
    assert_eq!(r.status, 204);
    let r = send(request("GET", &e.proxy.url("/api/v2/orgs"), &[], "")).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str().unwrap().to_owned()),
        (404, "not found".to_owned())
    );
    let r = send(request("GET", &e.proxy.url("/write?db=x"), &[], "")).await;
    assert_eq!(r.status, 405);
    assert_eq!(e.upstream.count(), 1);
}

#[tokio::test]
async fn token_service_down_means_503_and_nothing_forwarded() {
    let upstream = CaptureUpstream::start().await;
    // A port with nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let authorizer = authz_client(format!("http://{closed}"), Duration::from_millis(500));
    let proxy = ProxyServer::start(authorizer, &upstream.url()).await;
    let r = send(request(
        "POST",
        &proxy.url("/write?db=a"),
        &[("authorization", "Token x")],
        "m v=1",
    ))
    .await;
    assert_eq!(r.status, 503);
    assert!(r.json()["error"].is_string());
    let r = send(request(
        "POST",
        &proxy.url("/api/v2/write?bucket=a"),
        &[("authorization", "Token x")],
        "m v=1",
    ))
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str().unwrap().to_owned()),
        (503, "unavailable".to_owned())
    );
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn slow_token_service_times_out_with_503() {
    // A TCP listener that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let upstream = CaptureUpstream::start().await;
    let authorizer = authz_client(format!("http://{addr}"), Duration::from_secs(10));
    let mut s = settings();
    s.authz_timeout = Duration::from_millis(300);
    let proxy = ProxyServer::start_with(authorizer, &upstream.url(), s, None).await;
    let r = send(request(
        "POST",
        &proxy.url("/write?db=a"),
        &[("authorization", "Token x")],
        "m v=1",
    ))
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn upstream_down_means_502_with_influxdb_body() {
    let tokens = TokenServer::start().await;
    let (_, t) = tokens.database_token(&[("db", true, true)]).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let authorizer = authz_client(tokens.url(), Duration::from_secs(2));
    let proxy = ProxyServer::start(authorizer, &format!("http://{closed}")).await;
    let auth = token_header(&t);
    let r = send(request(
        "POST",
        &proxy.url("/write?db=db"),
        &[("authorization", &auth)],
        "m v=1",
    ))
    .await;
    assert_eq!(r.status, 502);
    assert!(r.json()["error"].is_string());
}

#[tokio::test]
async fn upstream_credential_replaces_the_callers() {
    let tokens = TokenServer::start().await;
    let (_, t) = tokens.database_token(&[("db", true, true)]).await;
    let upstream = CaptureUpstream::start().await;
    let authorizer = authz_client(tokens.url(), Duration::from_secs(2));
    let credential = http::HeaderValue::from_static("Token upstream-secret");
    let proxy =
        ProxyServer::start_with(authorizer, &upstream.url(), settings(), Some(credential)).await;
    let auth = token_header(&t);
    let r = send(request(
        "POST",
        &proxy.url("/write?db=db"),
        &[("authorization", &auth)],
        "m v=1",
    ))
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        upstream.last().headers["authorization"],
        "Token upstream-secret"
    );
}

#[tokio::test]
async fn revocation_is_seen_by_the_next_request() {
    let e = env().await;
    let (id, t) = e.tokens.database_token(&[("db", true, true)]).await;
    let auth = token_header(&t);
    assert_eq!(
        send(request(
            "POST",
            &e.proxy.url("/write?db=db"),
            &[("authorization", &auth)],
            "m v=1"
        ))
        .await
        .status,
        204
    );
    e.tokens
        .registry
        .revoke(&id, fluxgate::tokens::model::TokenKind::Database)
        .await
        .unwrap();
    assert_eq!(
        send(request(
            "POST",
            &e.proxy.url("/write?db=db"),
            &[("authorization", &auth)],
            "m v=1"
        ))
        .await
        .status,
        401
    );
}
