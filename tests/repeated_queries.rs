//! A `GET /query` repeated on its connection is not read again
//! (`proxy/last_query.rs`): what must still hold. A repeat is forwarded
//! exactly as when first read; every repeat is decided with the token it
//! carries (another token, none, a revoked one); a query string that
//! differs in any byte is read afresh; a token in the query string is never
//! kept, so a repeat carrying a second token in its header is refused as a
//! conflict; a POST with the same query string is read as a POST; a repeat
//! with ambiguous framing is refused; a refusal stays one with a decision
//! cache and the connection's memo of decisions in play; HTTP/2 streams
//! of several queries at once on one connection each get their own.
//!
//! A reading is kept once its query string has been read twice in a row;
//! `fluxgate_query_readings_reused_total` counts the requests decided from
//! it, and each test says how many of its requests were. The tests take
//! turns, so that the count is theirs alone.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::TokenServer;
use common::capture::CaptureUpstream;
use common::proxy::ProxyServer;
use fluxgate::authz::Authorizer;
use fluxgate::authz::cache::{CacheConfig, CachedAuthorizer};
use fluxgate::authz::client::AuthzClient;
use fluxgate::tokens::model::TokenKind;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

struct Env {
    tokens: TokenServer,
    upstream: CaptureUpstream,
    proxy: ProxyServer,
    /// This test's turn.
    _turn: tokio::sync::MutexGuard<'static, ()>,
    reused_before: u64,
}

impl Env {
    /// Requests decided from a kept reading since the test began.
    fn reused(&self) -> u64 {
        reused_total() - self.reused_before
    }
}

fn reused_total() -> u64 {
    let text = fluxgate::telemetry::init_metrics().render();
    text.lines()
        .find_map(|l| l.strip_prefix("fluxgate_query_readings_reused_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no reused count in:\n{text}"))
}

/// A proxy asking the token service on every request (no cache), so a
/// revocation shows on the next one.
async fn env() -> Env {
    env_with(false).await
}

/// With `cached`, a decision cache in front of the token service (and so
/// the connection's memo of decisions as well).
async fn env_with(cached: bool) -> Env {
    static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let turn = TURNS.lock().await;
    let tokens = TokenServer::start().await;
    let upstream = CaptureUpstream::start().await;
    let client = AuthzClient::for_uri(tokens.url().parse().unwrap(), Duration::from_secs(2));
    let authorizer: Arc<dyn Authorizer> = if cached {
        Arc::new(CachedAuthorizer::new(
            Arc::new(client),
            CacheConfig::default(),
        ))
    } else {
        Arc::new(client)
    };
    let proxy = ProxyServer::start(authorizer, &upstream.url()).await;
    Env {
        tokens,
        upstream,
        proxy,
        _turn: turn,
        reused_before: reused_total(),
    }
}

/// One keep-alive HTTP/1.1 connection to the proxy.
async fn connect(e: &Env) -> SendRequest<Full<Bytes>> {
    common::proxy::connection(e.proxy.addr).await
}

/// Sends `method` `path_and_query` with `token` (if any) and `body` over
/// `sender`; the status.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path_and_query: &str,
    token: Option<&str>,
    body: &'static str,
) -> u16 {
    sender.ready().await.unwrap();
    let mut request = http::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header("host", "proxy.example");
    if let Some(token) = token {
        request = request.header("authorization", format!("Token {token}"));
    }
    if !body.is_empty() {
        request = request.header("content-type", "application/x-www-form-urlencoded");
    }
    let request = request
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    response.into_body().collect().await.unwrap();
    status
}

async fn get(sender: &mut SendRequest<Full<Bytes>>, query: &str, token: Option<&str>) -> u16 {
    send(sender, "GET", &format!("/query?{query}"), token, "").await
}

/// `SELECT * FROM m` on `a`, with credentials and a parameter InfluxDB does
/// not read, encoded otherwise than fluxgate forwards it.
const QUERY: &str = "u=me&db=a&x=1&q=SELECT%20*%20FROM+%22m%22&epoch=ms";
const FORWARDED: &str = "/query?q=SELECT+*+FROM+%22m%22&db=a&epoch=ms";

/// A connection that has sent [`QUERY`] twice with `token` (allowed), so
/// that its reading is kept.
async fn kept(e: &Env, token: &str) -> SendRequest<Full<Bytes>> {
    let mut caller = connect(e).await;
    for _ in 0..2 {
        assert_eq!(get(&mut caller, QUERY, Some(token)).await, 204);
    }
    assert_eq!(e.reused(), 0, "read both times");
    caller
}

#[tokio::test]
async fn a_query_repeated_on_its_connection_is_forwarded_as_when_first_read() {
    let e = env().await;
    let (_, token) = e.tokens.database_token(&[("a", true, false)]).await;
    let mut caller = kept(&e, &token).await;
    for _ in 0..2 {
        assert_eq!(get(&mut caller, QUERY, Some(&token)).await, 204);
    }
    assert_eq!(e.reused(), 2);
    let got = e.upstream.requests();
    assert_eq!(got.len(), 4);
    for got in &got {
        assert_eq!(got.method, http::Method::GET);
        assert_eq!(got.uri.to_string(), FORWARDED);
        assert!(got.headers.get("authorization").is_none());
        assert!(got.body.is_empty());
    }
}

#[tokio::test]
async fn every_repeat_is_decided_with_the_token_it_carries() {
    let e = env().await;
    let (id, reader) = e.tokens.database_token(&[("a", true, false)]).await;
    let (_, writer) = e.tokens.database_token(&[("a", false, true)]).await;
    let mut caller = kept(&e, &reader).await;
    assert_eq!(get(&mut caller, QUERY, Some(&writer)).await, 403);
    assert_eq!(get(&mut caller, QUERY, Some("fgdb_not-a-token")).await, 401);
    assert_eq!(get(&mut caller, QUERY, None).await, 401);
    assert_eq!(get(&mut caller, QUERY, Some(&reader)).await, 204);
    e.tokens
        .registry
        .revoke(&id, TokenKind::Database)
        .await
        .unwrap();
    assert_eq!(get(&mut caller, QUERY, Some(&reader)).await, 401);
    assert_eq!(e.reused(), 5, "every request after the first two");
    assert_eq!(e.upstream.count(), 3, "only the allowed ones forwarded");
}

#[tokio::test]
async fn a_query_string_that_differs_in_any_byte_is_read_afresh() {
    let e = env().await;
    let (_, token) = e.tokens.database_token(&[("a", true, false)]).await;
    let mut caller = kept(&e, &token).await;
    for (query, status) in [
        // Another database, by parameter or in the statement.
        ("u=me&db=b&x=1&q=SELECT%20*%20FROM+%22m%22&epoch=ms", 403),
        ("u=me&db=a&x=1&q=SELECT%20*%20FROM+%22b%22..m&epoch=ms", 403),
        // A statement no token may run.
        ("u=me&db=a&x=1&q=DROP%20DATABASE+a&epoch=ms", 403),
        // The database given twice.
        (
            "u=me&db=a&x=1&q=SELECT%20*%20FROM+%22m%22&epoch=ms&db=b",
            400,
        ),
        // Cut short, and broken.
        ("u=me&db=a&x=1&q=SELECT%20*%20FROM+%22m", 400),
        ("u=me&db=a&x=1&q=SELECT%20*%20FROM+%22m%22&epoch=ms%", 400),
    ] {
        assert_eq!(
            get(&mut caller, query, Some(&token)).await,
            status,
            "{query}"
        );
    }
    assert_eq!(get(&mut caller, QUERY, Some(&token)).await, 204);
    assert_eq!(e.reused(), 1, "only the last");
    assert_eq!(e.upstream.count(), 3);
}

#[tokio::test]
async fn a_token_in_the_query_string_is_never_kept() {
    let e = env().await;
    let (_, reader) = e.tokens.database_token(&[("a", true, false)]).await;
    let (_, writer) = e.tokens.database_token(&[("a", false, true)]).await;
    let mut caller = connect(&e).await;
    // `%70` decodes to `p`: a token all the same.
    for key in ["p", "%70"] {
        let with_token = format!("{QUERY}&{key}={reader}");
        assert_eq!(get(&mut caller, &with_token, None).await, 204);
        assert_eq!(get(&mut caller, &with_token, None).await, 204);
        // Read afresh, the two tokens conflict: had the reading been kept,
        // the header's token would have decided alone.
        assert_eq!(get(&mut caller, &with_token, Some(&writer)).await, 400);
    }
    assert_eq!(e.reused(), 0);
    for got in e.upstream.requests() {
        assert_eq!(got.uri.to_string(), FORWARDED, "no credential forwarded");
    }
}

#[tokio::test]
async fn a_post_with_the_query_string_of_a_kept_get_is_read_as_a_post() {
    let e = env().await;
    let (_, token) = e.tokens.database_token(&[("a", true, false)]).await;
    let mut caller = kept(&e, &token).await;
    assert_eq!(get(&mut caller, QUERY, Some(&token)).await, 204);
    assert_eq!(e.reused(), 1);
    let path = format!("/query?{QUERY}");
    // POST carries the parameters in a form body.
    assert_eq!(
        send(&mut caller, "POST", &path, Some(&token), "").await,
        204
    );
    let got = e.upstream.last();
    assert_eq!(got.method, http::Method::POST);
    assert_eq!(got.uri.to_string(), "/query");
    assert_eq!(got.body, "q=SELECT+*+FROM+%22m%22&db=a&epoch=ms".as_bytes());
    // And a query in the body as well as the URL is refused.
    let twice = send(
        &mut caller,
        "POST",
        &path,
        Some(&token),
        "q=DROP+DATABASE+a",
    )
    .await;
    assert_eq!(twice, 400);
    assert_eq!(e.reused(), 1, "no POST decided from it");
    assert_eq!(e.upstream.count(), 4);
}

#[tokio::test]
async fn a_repeat_with_ambiguous_framing_is_refused() {
    let e = env().await;
    let (_, token) = e.tokens.database_token(&[("a", true, false)]).await;
    let mut stream = tokio::net::TcpStream::connect(e.proxy.addr).await.unwrap();
    let head =
        format!("GET /query?{QUERY} HTTP/1.1\r\nHost: x\r\nAuthorization: Token {token}\r\n");
    for _ in 0..2 {
        stream
            .write_all(format!("{head}\r\n").as_bytes())
            .await
            .unwrap();
        // A 204 is its head alone: read to its blank line.
        let mut answer = Vec::new();
        while !answer.ends_with(b"\r\n\r\n") {
            answer.push(stream.read_u8().await.unwrap());
        }
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 204"), "{text}");
    }
    // The same query string, kept by now, with both framings.
    let smuggling = format!(
        "{head}Content-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
    );
    stream.write_all(smuggling.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert_eq!(e.upstream.count(), 2);
    assert_eq!(e.reused(), 0, "refused before the reading was looked up");
}

#[tokio::test]
async fn a_refusal_stays_one_with_the_decision_cache_and_memo_in_play() {
    let e = env_with(true).await;
    let (_, token) = e.tokens.database_token(&[("a", true, false)]).await;
    let mut caller = connect(&e).await;
    let other = "u=me&db=b&x=1&q=SELECT%20*%20FROM+%22m%22&epoch=ms";
    for (query, status) in [(other, 403), (QUERY, 204), (other, 403)] {
        for _ in 0..4 {
            assert_eq!(
                get(&mut caller, query, Some(&token)).await,
                status,
                "{query}"
            );
        }
    }
    assert_eq!(e.reused(), 6, "two of each four");
    assert_eq!(e.upstream.count(), 4);
}

#[tokio::test]
async fn http2_streams_of_several_queries_at_once_each_get_their_own() {
    let e = env().await;
    let (_, token) = e.tokens.database_token(&[("a", true, false)]).await;
    let stream = tokio::net::TcpStream::connect(e.proxy.addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let queries = [
        (QUERY, 204),
        ("u=me&db=b&x=1&q=SELECT%20*%20FROM+%22m%22&epoch=ms", 403),
        ("u=me&db=a&x=1&q=SELECT%20*%20FROM+%22b%22..m&epoch=ms", 403),
    ];
    let send = |(query, status): (&'static str, u16)| {
        let mut sender = sender.clone();
        let auth = format!("Token {token}");
        tokio::spawn(async move {
            let request = http::Request::get(format!("http://proxy.example/query?{query}"))
                .header("authorization", auth)
                .body(Empty::<Bytes>::new())
                .unwrap();
            sender.ready().await.unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status().as_u16(), status, "{query}");
            response.into_body().collect().await.unwrap();
        })
    };
    // The first query's reading kept, then all of them at once, in runs of
    // two, so that readings are recalled, kept and replaced meanwhile.
    for _ in 0..2 {
        send(queries[0]).await.unwrap();
    }
    let streams: Vec<_> = (0..300)
        .map(|i| send(queries[(i / 2) % queries.len()]))
        .collect();
    for stream in streams {
        stream.await.unwrap();
    }
    assert_eq!(e.upstream.count(), 102);
    for got in e.upstream.requests() {
        assert_eq!(got.uri.to_string(), FORWARDED);
    }
    assert!(e.reused() > 0, "readings were recalled meanwhile");
}
