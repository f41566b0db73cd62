//! Operating the built binary: no token in any log line at debug level, the
//! audit trail, metrics and health endpoints, graceful shutdown with a
//! request in flight, the listener's limits, and `check-config`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::binary::{Serve, binary};
use common::capture::CaptureUpstream;
use common::proxy::{request, send};

fn raw_exchange(port: u16, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_token_reaches_any_log_line_at_debug_level() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = CaptureUpstream::start().await;
    let audit = dir.path().join("audit.jsonl");
    let serve = Serve::start(
        dir.path(),
        &upstream.url(),
        &[
            "--log-level",
            "trace",
            "--log-format",
            "json",
            "--audit-log",
            audit.to_str().unwrap(),
        ],
        &[],
    );
    let (_, valid) = serve.create_token(&["db"], &["db"]).await;
    let unknown = "fgdb_thisTokenIsUnknownButMustNeverBeLoggedEither0123456789abcdef";
    let malformed = "malformed-secret-value-0123456789";
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("user:{valid}"));
    // (path, headers, the status the proxy must answer): every kind of
    // credential, valid, unknown and malformed, in every place.
    type Case = (String, Vec<(&'static str, String)>, u16);
    let cases: Vec<Case> = vec![
        (
            "/write?db=db".into(),
            vec![("authorization", format!("Token {valid}"))],
            204,
        ),
        (
            "/write?db=db".into(),
            vec![("authorization", format!("Bearer {unknown}"))],
            401,
        ),
        (
            "/write?db=db".into(),
            vec![("authorization", format!("Basic {basic}"))],
            204,
        ),
        (
            "/write?db=db".into(),
            vec![("authorization", format!("Digest {malformed}"))],
            400,
        ),
        (
            "/write?db=db".into(),
            vec![("authorization", format!("Token {malformed} extra"))],
            400,
        ),
        (format!("/write?db=db&u=x&p={valid}"), vec![], 204),
        (format!("/write?db=db&p={unknown}"), vec![], 401),
        (format!("/write?db=other&p={valid}"), vec![], 403),
        (
            format!("/query?db=db&q=SELECT+*+FROM+m&p={valid}"),
            vec![],
            204,
        ),
        (
            format!("/api/v2/write?bucket=db&p={valid}"),
            vec![("authorization", format!("Token {unknown}"))],
            401,
        ),
        (
            "/write?db=db".into(),
            vec![
                ("authorization", format!("Token {valid}")),
                ("authorization", format!("Token {valid}")),
            ],
            400,
        ),
    ];
    for (path, headers, status) in &cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = if path.starts_with("/query") {
            ""
        } else {
            "m v=1"
        };
        let r = send(request("POST", &serve.url(path), &headers, body)).await;
        assert_eq!(r.status, *status, "{path}: {:?}", r.body);
    }
    // The management API with the management token in metadata, too.
    let _ = serve.create_token(&["x"], &[]).await;
    let management = serve.management_token();
    // One audit event per request (none is public), all written.
    let events = common::wait_for_lines(&audit, cases.len()).await;
    assert_eq!(events.len(), cases.len());
    let logs = serve.process.log_text();
    let audit_text = std::fs::read_to_string(&audit).unwrap();
    assert!(!audit_text.is_empty());
    assert!(
        logs.contains("DEBUG") || logs.contains("\"level\":\"DEBUG\""),
        "debug logging was not on"
    );
    for secret in [valid.as_str(), unknown, malformed, &basic, &management] {
        assert!(!logs.contains(secret), "a token reached the log");
        assert!(
            !audit_text.contains(secret),
            "a token reached the audit log"
        );
        // Neither the part after the prefix.
        let tail = &secret[secret.len() - 24..];
        assert!(!logs.contains(tail) && !audit_text.contains(tail));
    }
    for line in logs.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_has_one_event_per_decision() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = CaptureUpstream::start().await;
    let audit = dir.path().join("audit.jsonl");
    let serve = Serve::start(
        dir.path(),
        &upstream.url(),
        &["--audit-log", audit.to_str().unwrap()],
        &[],
    );
    let (id, token) = serve.create_token(&["db"], &[]).await;
    let auth = format!("Token {token}");
    assert_eq!(
        send(request(
            "GET",
            &serve.url("/query?db=db&q=SELECT+*+FROM+m"),
            &[("authorization", &auth)],
            ""
        ))
        .await
        .status,
        204
    );
    assert_eq!(
        send(request(
            "POST",
            &serve.url("/write?db=db"),
            &[("authorization", &auth)],
            "m v=1"
        ))
        .await
        .status,
        403
    );
    assert_eq!(
        send(request("POST", &serve.url("/write?db=db"), &[], "m v=1"))
            .await
            .status,
        401
    );
    assert_eq!(
        send(request("GET", &serve.url("/ping"), &[], ""))
            .await
            .status,
        204
    );
    let events = common::wait_for_lines(&audit, 3).await;
    assert_eq!(
        events.len(),
        3,
        "public /ping is not a decision: {events:?}"
    );
    assert_eq!(events[0]["decision"], "allow");
    assert_eq!(events[0]["token_id"], id.as_str());
    assert_eq!(events[0]["databases"], serde_json::json!(["db"]));
    assert_eq!(events[0]["actions"], serde_json::json!(["read"]));
    assert_eq!(events[0]["api"], "v1");
    assert_eq!(events[0]["path"], "/query");
    for key in ["time", "client", "method", "status", "cache", "latency_ms"] {
        assert!(events[0].get(key).is_some(), "missing {key}");
    }
    assert_eq!(
        (events[1]["decision"].as_str(), events[1]["status"].as_u64()),
        (Some("deny"), Some(403))
    );
    assert_eq!(events[1]["token_id"], id.as_str());
    assert_eq!(
        (
            events[2]["status"].as_u64(),
            events[2]["token_id"].is_null()
        ),
        (Some(401), true)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_health_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = CaptureUpstream::start().await;
    let serve = Serve::start(dir.path(), &upstream.url(), &[], &[]);
    let (_, token) = serve.create_token(&["db"], &["db"]).await;
    let auth = format!("Token {token}");
    let r = send(request(
        "POST",
        &serve.url("/write?db=db"),
        &[("authorization", &auth)],
        "m v=1",
    ))
    .await;
    assert_eq!(r.status, 204);
    let r = send(request("POST", &serve.url("/write?db=db"), &[], "m v=1")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        send(request("GET", &serve.admin_url("/healthz"), &[], ""))
            .await
            .status,
        200
    );
    assert_eq!(
        send(request("GET", &serve.admin_url("/readyz"), &[], ""))
            .await
            .status,
        200
    );
    let metrics = send(request("GET", &serve.admin_url("/metrics"), &[], "")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    for name in [
        "fluxgate_requests_total{api=\"v1\",route=\"v1_write\",action=\"write\",status=\"204\"}",
        "fluxgate_requests_total{api=\"v1\",route=\"v1_write\",action=\"none\",status=\"401\"}",
        "fluxgate_decisions_total{api=\"v1\",decision=\"allow\"}",
        "fluxgate_requests_in_flight",
        "fluxgate_upstream_seconds",
        "fluxgate_open_connections",
        "fluxgate_build_info",
        "fluxgate_tokens{",
        "fluxgate_authorize_requests_total",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_slow_write_finish() {
    // An upstream that takes 1.5 s to answer a write.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                    *r.status_mut() = http::StatusCode::NO_CONTENT;
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(
        dir.path(),
        &format!("http://{addr}"),
        &["--shutdown-grace", "10s"],
        &[],
    );
    let (_, token) = serve.create_token(&[], &["db"]).await;
    let url = serve.url("/write?db=db");
    let auth = format!("Token {token}");
    let write = tokio::spawn(async move {
        send(request("POST", &url, &[("authorization", &auth)], "m v=1"))
            .await
            .status
    });
    tokio::time::sleep(Duration::from_millis(400)).await; // the write is now waiting on the upstream
    let code = tokio::task::spawn_blocking(move || {
        let code = serve.process.terminate();
        (code, serve)
    })
    .await
    .unwrap();
    assert_eq!(
        write.await.unwrap(),
        204,
        "the in-flight write must complete"
    );
    assert_eq!(code.0, 0, "exit code after SIGTERM");
    // And nothing listens any more, nor claims to.
    assert!(TcpStream::connect(("127.0.0.1", code.1.port)).is_err());
    assert!(
        !dir.path().join("fluxgate.addresses.json").exists(),
        "the addresses file is removed on exit"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn listener_limits() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = CaptureUpstream::start().await;
    let serve = Serve::start(
        dir.path(),
        &upstream.url(),
        &[
            "--header-read-timeout",
            "500ms",
            "--max-header-bytes",
            "8KiB",
            "--idle-timeout",
            "500ms",
            "--max-connections",
            "2",
        ],
        &[],
    );
    let port = serve.port;
    tokio::task::spawn_blocking(move || {
        // Slowloris: half a request head, then silence → closed by the server.
        let started = Instant::now();
        let reply = raw_exchange(
            port,
            b"POST /write?db=a HTTP/1.1\r\nHost: x\r\n",
            Duration::from_secs(5),
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "slow header not cut off"
        );
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
            "{reply}"
        );

        // An oversized head → 431, never forwarded.
        let big = format!(
            "GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(20_000)
        );
        let reply = raw_exchange(port, big.as_bytes(), Duration::from_secs(5));
        assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

        // Idle keep-alive connection → closed after the idle timeout.
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 204"));
        let idle_start = Instant::now();
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "connection should be closed");
        assert!(idle_start.elapsed() < Duration::from_secs(4));

        // Two connections at most: a third is not served until one closes.
        let a = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let b = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        c.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert!(
            c.read(&mut buf).is_err(),
            "third connection served beyond the limit"
        );
        drop(a);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = c.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 204"));
        drop(b);
    })
    .await
    .unwrap();
    assert_eq!(
        upstream
            .requests()
            .iter()
            .filter(|r| r.uri.path() == "/write")
            .count(),
        0
    );
}

#[test]
fn check_config_names_the_bad_key_and_follows_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "upstream = \"http://127.0.0.1:8087\"\nlisten = \"127.0.0.1:7001\"\n",
    )
    .unwrap();
    let out = assert_cmd::Command::new(binary())
        .args([
            "check-config",
            "--config",
            good.to_str().unwrap(),
            "--for",
            "proxy",
        ])
        .env_remove("FLUXGATE_LISTEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:7001"));
    // The environment beats the file.
    let out = assert_cmd::Command::new(binary())
        .args([
            "check-config",
            "--config",
            good.to_str().unwrap(),
            "--for",
            "proxy",
        ])
        .env("FLUXGATE_LISTEN", "127.0.0.1:7002")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:7002"),
        "{out:?}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "upstream = \"http://127.0.0.1:8087\"\ncache-allow-ttl = \"forever\"\n",
    )
    .unwrap();
    let out = assert_cmd::Command::new(binary())
        .args([
            "check-config",
            "--config",
            bad.to_str().unwrap(),
            "--for",
            "proxy",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`cache-allow-ttl`"),
        "{out:?}"
    );

    std::fs::write(
        &bad,
        "upstream = \"http://127.0.0.1:8087\"\nlisten-address = \"x\"\n",
    )
    .unwrap();
    let out = assert_cmd::Command::new(binary())
        .args(["check-config", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`listen-address`"),
        "{out:?}"
    );

    // A missing required option is reported by name too.
    std::fs::write(&bad, "listen = \"127.0.0.1:7003\"\n").unwrap();
    let out = assert_cmd::Command::new(binary())
        .args([
            "check-config",
            "--config",
            bad.to_str().unwrap(),
            "--for",
            "serve",
        ])
        .env_remove("FLUXGATE_UPSTREAM")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--upstream"),
        "{out:?}"
    );
}
