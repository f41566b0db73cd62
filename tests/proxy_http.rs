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

    // v1: {"error": ...}
    let r = send(request("POST", &e.proxy.url("/write?db=db"), &[], "m v=1")).await;
    assert_eq!(
        (r.status, r.headers["content-type"].to_str().unwrap()),
        (401, "application/json")
    );
    assert!(r.json()["error"].as_str().unwrap().contains("token"));
    let r = send(request(
        "POST",
        &e.proxy.url("/write?db=db"),
        &[("authorization", "Token fgdb_unknown")],
        "m v=1",
    ))
    .await;
    assert_eq!(r.status, 401);
    let r = send(request(
        "POST",
        &e.proxy.url("/write?db=db"),
        &[("authorization", &ro)],
        "m v=1",
    ))
    .await;
    assert_eq!(r.status, 403);
    assert!(r.json()["error"].as_str().unwrap().contains("write"));

    // v2: {"code", "message"}
    let r = send(request(
        "POST",
        &e.proxy.url("/api/v2/write?bucket=db&org=x"),
        &[("authorization", &ro)],
        "m v=1",
    ))
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["code"], "forbidden");
    let r = send(request(
        "POST",
        &e.proxy.url("/api/v2/write?bucket=db"),
        &[],
        "m v=1",
    ))
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str().unwrap().to_owned()),
        (401, "unauthorized".to_owned())
    );
    let r = send(request(
        "POST",
        &e.proxy.url("/api/v2/write?bucket=db"),
        &[("authorization", "Bearer")],
        "m v=1",
    ))
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str().unwrap().to_owned()),
        (400, "invalid".to_owned())
    );

    // v3: {"error": ...}
    let r = send(request(
        "POST",
        &e.proxy.url("/api/v3/write_lp?db=db"),
        &[("authorization", &ro)],
        "m v=1",
    ))
    .await;
    assert_eq!(r.status, 403);
    assert!(r.json()["error"].is_string());

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
    let get = |q: &str| {
        let q = form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>();
        request(
            "GET",
            &e.proxy.url(&format!("/query?db=mine&q={q}")),
            &[("authorization", &auth)],
            "",
        )
    };
    assert_eq!(send(get("SELECT * FROM cpu")).await.status, 204);
    assert_eq!(
        send(get("SELECT * FROM \"mine\".\"autogen\".\"cpu\""))
            .await
            .status,
        204
    );
    assert_eq!(send(get("SELECT * FROM other..cpu")).await.status, 403);
    assert_eq!(
        send(get("SELECT * FROM cpu; SELECT * FROM other.autogen.cpu"))
            .await
            .status,
        403
    );
    assert_eq!(
        send(get("SELECT * INTO mine..copy FROM cpu")).await.status,
        403,
        "INTO needs write"
    );
    assert_eq!(
        send(get("SELECT * FROM (SELECT * FROM secret..cpu)"))
            .await
            .status,
        403
    );
    assert_eq!(send(get("SHOW MEASUREMENTS ON other")).await.status, 403);
    let r = send(get("CREATE DATABASE \"telegraf\"")).await;
    assert_eq!(r.status, 403);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("skip_database_creation")
    );
    assert_eq!(send(get("DROP MEASUREMENT cpu")).await.status, 403);
    assert_eq!(send(get("this is not influxql")).await.status, 400);
    let forwarded = e.upstream.count();
    assert_eq!(
        forwarded, 2,
        "only the two allowed queries reach the upstream"
    );

    // Unknown token on an admin statement: 401, not 403.
    let q = form_urlencoded::byte_serialize(b"CREATE DATABASE x").collect::<String>();
    let r = send(request(
        "GET",
        &e.proxy.url(&format!("/query?q={q}")),
        &[("authorization", "Token nope")],
        "",
    ))
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn query_bodies_are_read_checked_and_forwarded_rebuilt() {
    let e = env().await;
    let (_, t) = e.tokens.database_token(&[("mine", true, false)]).await;
    let auth = token_header(&t);
    let form = "q=SELECT+*+FROM+cpu&db=mine";
    let r = send(request(
        "POST",
        &e.proxy.url("/query"),
        &[
            ("authorization", &auth),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        form,
    ))
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(e.upstream.last().body, form.as_bytes());

    let r = send(request(
        "POST",
        &e.proxy.url("/query"),
        &[
            ("authorization", &auth),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        "q=SELECT+*+FROM+secret..cpu&db=mine",
    ))
    .await;
    assert_eq!(r.status, 403);

    // The URL's db and the body's db must agree.
    let r = send(request(
        "POST",
        &e.proxy.url("/query?db=mine"),
        &[
            ("authorization", &auth),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        "q=SELECT+*+FROM+cpu&db=secret",
    ))
    .await;
    assert_eq!(r.status, 400);

    let r = send(request(
        "POST",
        &e.proxy.url("/query?db=mine"),
        &[
            ("authorization", &auth),
            ("content-type", "application/vnd.influxql"),
        ],
        "SELECT * FROM cpu",
    ))
    .await;
    assert_eq!(r.status, 204);

    // v3 JSON
    let body = r#"{"db":"mine","q":"SELECT * FROM cpu","format":"json"}"#;
    let r = send(request(
        "POST",
        &e.proxy.url("/api/v3/query_sql"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body,
    ))
    .await;
    assert_eq!(r.status, 204);
    // Forwarded re-serialized from the values decided on.
    assert_eq!(
        e.upstream.last().body,
        r#"{"db":"mine","format":"json","q":"SELECT * FROM cpu"}"#.as_bytes()
    );
    let r = send(request(
        "POST",
        &e.proxy.url("/api/v3/query_sql?db=secret"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body,
    ))
    .await;
    assert_eq!(r.status, 400, "URL db disagrees with body db");
    let r = send(request(
        "GET",
        &e.proxy.url("/api/v3/query_sql?db=secret&q=SELECT+1"),
        &[("authorization", &auth)],
        "",
    ))
    .await;
    assert_eq!(r.status, 403);

    // Too large to authorize.
    let big = format!("q=SELECT+*+FROM+cpu&db=mine&pad={}", "x".repeat(2 << 20));
    let r = send(request(
        "POST",
        &e.proxy.url("/query"),
        &[
            ("authorization", &auth),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        big,
    ))
    .await;
    assert_eq!(r.status, 413);
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
