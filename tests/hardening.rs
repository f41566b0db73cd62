//! What stops an unauthenticated client from costing the proxy anything,
//! and what ends requests that stall: the token is checked before a body is
//! read, bodies are bounded in time and (across connections) in memory,
//! invalid tokens are throttled per address before the token service is
//! asked, and an upstream that does not answer is abandoned. Outcomes are
//! audited as what happened (an allowed request whose upstream fails is an
//! `error`, not a `deny`), on HTTP and Flight alike.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arrow_flight::{FlightClient, Ticket};
use async_trait::async_trait;
use common::TokenServer;
use common::capture::CaptureUpstream;
use common::flight::FlightUpstream;
use common::proxy::{ProxyServer, request, send, settings};
use fluxgate::audit::{Audit, Destination};
use fluxgate::authz::client::AuthzClient;
use fluxgate::authz::{Authorizer, AuthzError, Need, Verdict};
use fluxgate::credentials::Token;
use fluxgate::proxy::gate::{Gate, GateSettings};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;

/// The real Authorize client, counting the calls that reach it.
#[derive(Debug)]
struct Counting {
    inner: AuthzClient,
    calls: AtomicUsize,
}

#[async_trait]
impl Authorizer for Counting {
    async fn check(&self, token: &Token, needs: &[Need]) -> Result<Verdict, AuthzError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.check(token, needs).await
    }

    async fn ready(&self) -> Result<(), String> {
        self.inner.ready().await
    }
}

struct Env {
    tokens: TokenServer,
    upstream: CaptureUpstream,
    proxy: ProxyServer,
    authorizer: Arc<Counting>,
    gate: Gate,
}

impl Env {
    async fn start(settings: GateSettings) -> Self {
        Self::start_audited(settings, Audit::off()).await
    }

    async fn start_audited(settings: GateSettings, audit: Audit) -> Self {
        let tokens = TokenServer::start().await;
        let upstream = CaptureUpstream::start().await;
        let authorizer = Arc::new(Counting {
            inner: AuthzClient::for_uri(tokens.url().parse().unwrap(), Duration::from_secs(2)),
            calls: AtomicUsize::new(0),
        });
        let gate = Gate::new(
            Arc::clone(&authorizer) as Arc<dyn Authorizer>,
            &settings,
            audit,
        );
        let proxy = ProxyServer::with_gate(gate.clone(), &upstream.url(), None).await;
        Self {
            tokens,
            upstream,
            proxy,
            authorizer,
            gate,
        }
    }

    fn calls(&self) -> usize {
        self.authorizer.calls.load(Ordering::SeqCst)
    }
}

fn query_form(
    auth: &str,
    body: impl Into<bytes::Bytes>,
    url: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    request(
        "POST",
        url,
        &[
            ("authorization", auth),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        body,
    )
}

#[tokio::test]
async fn invalid_tokens_beyond_the_rate_are_refused_before_any_authorize_call() {
    let e = Env::start(GateSettings {
        invalid_token_rate: 3,
        ..settings()
    })
    .await;
    let (_, good) = e.tokens.database_token(&[("db", true, true)]).await;
    for i in 0..3 {
        let r = send(request(
            "POST",
            &e.proxy.url("/write?db=db"),
            &[("authorization", &format!("Token guess-{i}"))],
            "m v=1",
        ))
        .await;
        assert_eq!(r.status, 401);
    }
    let asked = e.calls();
    // 429 where clients retry it; 503 on v1, whose Telegraf output drops a
    // batch on any 4xx.
    for (path, shape, status) in [
        ("/write?db=db", "error", 503),
        ("/api/v2/write?bucket=db", "code", 429),
        ("/api/v3/write_lp?db=db", "error", 429),
    ] {
        let r = send(request(
            "POST",
            &e.proxy.url(path),
            &[("authorization", "Token guess-again")],
            "m v=1",
        ))
        .await;
        assert_eq!(r.status, status, "{path}");
        let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(r.json()[shape].is_string(), "{path}: {:?}", r.body);
    }
    // A valid token from the same address is refused too: an exception
    // would tell a guesser which guesses are right.
    let r = send(request(
        "POST",
        &e.proxy.url("/write?db=db"),
        &[("authorization", &format!("Token {good}"))],
        "m v=1",
    ))
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(e.calls(), asked, "no Authorize call while throttled");
    assert_eq!(e.upstream.count(), 0);
}

#[tokio::test]
async fn flight_callers_are_throttled_with_resource_exhausted() {
    let tokens = TokenServer::start().await;
    let upstream = FlightUpstream::start().await;
    let gate = common::proxy::gate(
        Arc::new(AuthzClient::for_uri(
            tokens.url().parse().unwrap(),
            Duration::from_secs(2),
        )),
        &GateSettings {
            invalid_token_rate: 2,
            ..settings()
        },
    );
    let proxy = ProxyServer::with_gate(gate, "http://127.0.0.1:9", Some(&upstream.url())).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", proxy.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut codes = Vec::new();
    for _ in 0..3 {
        let mut c = FlightClient::new(channel.clone());
        c.add_header("authorization", "Bearer wrong").unwrap();
        let ticket = br#"{"database": "db", "sql_query": "SELECT 1"}"#.to_vec();
        let code = match c.do_get(Ticket::new(ticket)).await {
            Err(arrow_flight::error::FlightError::Tonic(s)) => s.code(),
            other => panic!("{other:?}"),
        };
        codes.push(code);
    }
    assert_eq!(
        codes,
        [
            Code::PermissionDenied,
            Code::PermissionDenied,
            Code::ResourceExhausted
        ]
    );
    assert!(upstream.calls().is_empty());
}

#[tokio::test]
async fn an_unknown_token_is_refused_before_its_body_is_read() {
    // The body never comes: a proxy that read it before checking the token
    // would wait out the (long) body timeout instead of answering.
    let e = Env::start(GateSettings {
        body_read_timeout: Duration::from_secs(60),
        ..settings()
    })
    .await;
    let head = "POST /query HTTP/1.1\r\nhost: x\r\nauthorization: Token nobody\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 900000\r\n\r\n".to_owned();
    let status = stalled(e.proxy.addr, head, b"q=SELECT").await;
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    assert_eq!(e.calls(), 1, "one probe, then refused");
    assert_eq!(e.upstream.count(), 0);
}

#[tokio::test]
async fn the_buffer_budget_answers_503_when_exhausted() {
    let e = Env::start(GateSettings {
        max_buffered_bytes: 1000,
        ..settings()
    })
    .await;
    let (_, t) = e.tokens.database_token(&[("db", true, false)]).await;
    let auth = format!("Token {t}");
    let small = "q=SELECT+*+FROM+m&db=db";
    let r = send(query_form(&auth, small, &e.proxy.url("/query"))).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let big = format!("q=SELECT+*+FROM+m&db=db&pad={}", "x".repeat(2000));
    let r = send(query_form(&auth, big, &e.proxy.url("/query"))).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(e.upstream.count(), 1);
    assert_eq!(e.gate.limits().budget.available(), 1000, "all given back");
}

/// Sends `head` and `body_start` on a raw connection (the rest of the body
/// never comes) and returns the response's status line.
async fn stalled(addr: std::net::SocketAddr, head: String, body_start: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body_start).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the proxy answered a stalled body")
        .unwrap();
    String::from_utf8_lossy(&answer[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn bodies_that_stall_end_with_408() {
    let e = Env::start(GateSettings {
        body_read_timeout: Duration::from_millis(200),
        ..settings()
    })
    .await;
    let (_, t) = e.tokens.database_token(&[("db", true, true)]).await;
    // A query body the proxy reads to decide.
    let head = format!(
        "POST /query HTTP/1.1\r\nhost: x\r\nauthorization: Token {t}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\n"
    );
    let status = stalled(e.proxy.addr, head, b"q=SELECT").await;
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    assert_eq!(e.upstream.count(), 0);
    // A write body streamed upstream after the decision.
    let head = format!(
        "POST /write?db=db HTTP/1.1\r\nhost: x\r\nauthorization: Token {t}\r\ncontent-length: 100\r\n\r\n"
    );
    let status = stalled(e.proxy.addr, head, b"m v=1\n").await;
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
}

#[tokio::test]
async fn an_upstream_that_never_answers_ends_with_504() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&held);
    let _keep = tokio::spawn(async move {
        let mut streams = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            streams.push(s);
        }
    });
    let tokens = TokenServer::start().await;
    let (_, t) = tokens.database_token(&[("db", true, true)]).await;
    let gate = common::proxy::gate(
        Arc::new(AuthzClient::for_uri(
            tokens.url().parse().unwrap(),
            Duration::from_secs(2),
        )),
        &settings(),
    );
    let url = format!("http://{addr}");
    let proxy = ProxyServer::with_gate(gate, &url, Some(&url)).await;
    let r = send(request(
        "POST",
        &proxy.url("/write?db=db"),
        &[("authorization", &format!("Token {t}"))],
        "m v=1",
    ))
    .await;
    assert_eq!(r.status, 504);
    assert!(r.json()["error"].as_str().unwrap().contains("in time"));

    let channel = tonic::transport::Channel::from_shared(format!("http://{}", proxy.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = FlightClient::new(channel);
    c.add_header("authorization", &format!("Bearer {t}"))
        .unwrap();
    let ticket = br#"{"database": "db", "sql_query": "SELECT 1"}"#.to_vec();
    match c.do_get(Ticket::new(ticket)).await {
        Err(arrow_flight::error::FlightError::Tonic(s)) => {
            assert_eq!(s.code(), Code::DeadlineExceeded, "{s}");
        }
        other => panic!("{other:?}"),
    }
    assert!(held.load(Ordering::SeqCst) >= 1);
}

/// A 504 for a request that was given its whole timeout (500 ms).
fn timed_out((status, took): (u16, Duration)) {
    assert_eq!(status, 504);
    assert!(
        took >= Duration::from_millis(450),
        "timed out after {took:?}"
    );
}

/// An HTTP/1.1 caller's requests share one response timer, moved on from
/// request to request: each is still held to the timeout (500 ms here),
/// after a request that timed out, and after the connection sat idle past
/// an earlier deadline (a deadline left over would end the next request
/// at once).
#[tokio::test]
async fn every_request_on_a_kept_connection_is_held_to_the_upstream_timeout() {
    // Answers `db=slow` after 30 s, anything else at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _upstream = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        if req.uri().query().unwrap_or("").contains("db=slow") {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        }
                        let mut r =
                            http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                        *r.status_mut() = http::StatusCode::NO_CONTENT;
                        Ok::<_, std::convert::Infallible>(r)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let tokens = TokenServer::start().await;
    let (_, t) = tokens
        .database_token(&[("fast", false, true), ("slow", false, true)])
        .await;
    let gate = common::proxy::gate(
        Arc::new(AuthzClient::for_uri(
            tokens.url().parse().unwrap(),
            Duration::from_secs(2),
        )),
        &settings(),
    );
    let proxy = ProxyServer::with_gate(gate, &format!("http://{addr}"), None).await;

    // One caller connection for every request.
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut caller, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let _connection = tokio::spawn(connection);
    let auth = format!("Token {t}");
    let mut write = async |db: &str| {
        let request = http::Request::post(format!("/write?db={db}"))
            .header("host", "proxy")
            .header("authorization", &auth)
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"m v=1",
            )))
            .unwrap();
        caller.ready().await.unwrap();
        let started = std::time::Instant::now();
        let status = caller.send_request(request).await.unwrap().status();
        (status.as_u16(), started.elapsed())
    };
    // The first through the pool, the next over the connection kept.
    assert_eq!(write("fast").await.0, 204);
    assert_eq!(write("fast").await.0, 204);
    timed_out(write("slow").await);
    // The timer fired; set again, it holds the next request to its own
    // deadline (the upstream connection is a new one).
    assert_eq!(write("fast").await.0, 204);
    // Idle past that request's deadline: the next is not ended by it.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(write("fast").await.0, 204);
    timed_out(write("slow").await);
    assert_eq!(write("fast").await.0, 204);
}

#[tokio::test]
async fn an_allowed_request_whose_upstream_fails_is_an_error_not_a_deny() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let audit = Audit::start(&Destination::File(path.clone()))
        .await
        .unwrap();
    let tokens = TokenServer::start().await;
    let (id, t) = tokens.database_token(&[("db", true, true)]).await;
    let gate = Gate::new(
        Arc::new(AuthzClient::for_uri(
            tokens.url().parse().unwrap(),
            Duration::from_secs(2),
        )),
        &settings(),
        audit,
    );
    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{closed}");
    let proxy = ProxyServer::with_gate(gate, &url, Some(&url)).await;
    let r = send(request(
        "POST",
        &proxy.url("/write?db=db"),
        &[("authorization", &format!("Token {t}"))],
        "m v=1",
    ))
    .await;
    assert_eq!(r.status, 502);
    let r = send(request(
        "POST",
        &proxy.url("/write?db=other"),
        &[("authorization", &format!("Token {t}"))],
        "m v=1",
    ))
    .await;
    assert_eq!(r.status, 403);
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", proxy.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = FlightClient::new(channel);
    c.add_header("authorization", &format!("Bearer {t}"))
        .unwrap();
    let ticket = br#"{"database": "db", "sql_query": "SELECT 1"}"#.to_vec();
    match c.do_get(Ticket::new(ticket)).await {
        Err(arrow_flight::error::FlightError::Tonic(s)) => assert_eq!(s.code(), Code::Unavailable),
        other => panic!("{other:?}"),
    }

    let events = common::wait_for_lines(&path, 3).await;
    let summary: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e["api"].as_str().unwrap().to_owned(),
                e["decision"].as_str().unwrap().to_owned(),
                e["token_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("v1".to_owned(), "error".to_owned(), id.clone()),
            ("v1".to_owned(), "deny".to_owned(), id.clone()),
            ("flight".to_owned(), "error".to_owned(), id),
        ]
    );
}
