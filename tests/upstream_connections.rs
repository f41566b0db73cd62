//! Which upstream connection carries a request: an HTTP/1.1 caller's first
//! request goes through the shared pool, its later ones over one upstream
//! connection kept for the caller's connection; every request is forwarded
//! alike on either; a kept connection the upstream closes costs no request,
//! it closes when the caller's connection does, requests the proxy did
//! not decide (no token) never get one, and callers past the limit on kept
//! connections are served through the pool.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::TokenServer;
use common::capture::{Canned, CaptureUpstream, Captured};
use common::proxy::ProxyServer;
use fluxgate::authz::client::AuthzClient;
use fluxgate::proxy::listener::ListenerSettings;
use futures_util::future::join_all;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;

struct Env {
    _tokens: TokenServer,
    upstream: CaptureUpstream,
    proxy: ProxyServer,
    auth: String,
}

async fn env() -> Env {
    env_with(ListenerSettings::default()).await
}

async fn env_with(listening: ListenerSettings) -> Env {
    let tokens = TokenServer::start().await;
    let (_, token) = tokens.database_token(&[("db", true, true)]).await;
    let upstream = CaptureUpstream::start().await;
    let authorizer = Arc::new(AuthzClient::for_uri(
        tokens.url().parse().unwrap(),
        Duration::from_secs(2),
    ));
    let proxy = ProxyServer::start_listening(
        authorizer,
        &upstream.url(),
        common::proxy::settings(),
        None,
        listening,
    )
    .await;
    Env {
        _tokens: tokens,
        upstream,
        proxy,
        auth: format!("Token {token}"),
    }
}

/// One keep-alive HTTP/1.1 connection to the proxy.
async fn connect(e: &Env) -> SendRequest<Full<Bytes>> {
    common::proxy::connection(e.proxy.addr).await
}

/// Writes `line` to `db` over `sender`; the status.
async fn write(e: &Env, sender: &mut SendRequest<Full<Bytes>>, line: &'static str) -> u16 {
    sender.ready().await.unwrap();
    let request = http::Request::post("/write?db=db&precision=s&u=x")
        .header("host", "proxy.example")
        .header("authorization", &e.auth)
        .body(Full::new(Bytes::from_static(line.as_bytes())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    response.into_body().collect().await.unwrap();
    status
}

/// What must be the same whichever connection carried a request.
fn forwarded_alike(got: &Captured, upstream: &CaptureUpstream, line: &str) {
    assert_eq!(got.uri.to_string(), "/write?db=db&precision=s");
    assert_eq!(got.headers["host"], upstream.addr.to_string());
    assert_eq!(got.headers.get_all("host").iter().count(), 1);
    assert!(got.headers.get("authorization").is_none());
    assert_eq!(got.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(got.headers["x-forwarded-proto"], "http");
    assert_eq!(got.body, line.as_bytes());
}

#[tokio::test]
async fn a_keep_alive_caller_keeps_one_upstream_connection_after_the_first_request() {
    let e = env().await;
    let mut first = connect(&e).await;
    let lines = ["m v=1", "m v=2", "m v=3", "m v=4"];
    for line in lines {
        assert_eq!(write(&e, &mut first, line).await, 204);
    }
    let got = e.upstream.requests();
    assert_eq!(got.len(), 4);
    for (got, line) in got.iter().zip(lines) {
        forwarded_alike(got, &e.upstream, line);
    }
    // The first through the pool; the rest over one connection of its own.
    let kept = got[1].peer;
    assert_ne!(got[0].peer, kept);
    assert!(got[1..].iter().all(|g| g.peer == kept));

    // Another caller connection: its own kept connection, never the first's.
    let mut second = connect(&e).await;
    assert_eq!(write(&e, &mut second, "m v=5").await, 204);
    assert_eq!(write(&e, &mut second, "m v=6").await, 204);
    let got = e.upstream.requests();
    assert_ne!(got[5].peer, kept);
    // The first caller's connection still has its own.
    assert_eq!(write(&e, &mut first, "m v=7").await, 204);
    assert_eq!(e.upstream.last().peer, kept);
}

#[tokio::test]
async fn a_kept_connection_the_upstream_closes_costs_no_request() {
    let e = env().await;
    let mut caller = connect(&e).await;
    assert_eq!(write(&e, &mut caller, "m v=1").await, 204);
    assert_eq!(write(&e, &mut caller, "m v=2").await, 204);
    let kept = e.upstream.last().peer;
    // The upstream answers the next request and closes the connection.
    e.upstream.set_response(Canned {
        headers: vec![("connection".into(), "close".into())],
        ..Canned::default()
    });
    assert_eq!(write(&e, &mut caller, "m v=3").await, 204);
    assert_eq!(e.upstream.last().peer, kept);
    e.upstream.set_response(Canned::default());
    // The caller's own connection is still open, and the next request
    // goes over a new upstream connection.
    assert_eq!(write(&e, &mut caller, "m v=4").await, 204);
    let got = e.upstream.requests();
    assert_eq!(got.len(), 4);
    assert_ne!(got[3].peer, kept);
    forwarded_alike(&got[3], &e.upstream, "m v=4");
}

#[tokio::test]
async fn the_kept_connection_closes_with_the_callers() {
    let e = env().await;
    let mut caller = connect(&e).await;
    assert_eq!(write(&e, &mut caller, "m v=1").await, 204);
    assert_eq!(write(&e, &mut caller, "m v=2").await, 204);
    // The pool's connection and the kept one.
    assert_eq!(e.upstream.open_connections(), 2);
    drop(caller);
    // The pool keeps its idle connection; the kept one goes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while e.upstream.open_connections() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the kept connection outlived the caller's"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(e.upstream.open_connections(), 1);
}

#[tokio::test]
async fn requests_without_a_token_never_get_a_connection_of_their_own() {
    let e = env().await;
    let mut caller = connect(&e).await;
    for _ in 0..3 {
        caller.ready().await.unwrap();
        let request = http::Request::get("/ping")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = caller.send_request(request).await.unwrap();
        assert_eq!(response.status(), 204);
        response.into_body().collect().await.unwrap();
    }
    let got = e.upstream.requests();
    assert_eq!(got.len(), 3);
    // All over the pool's one connection.
    assert!(got.iter().all(|g| g.peer == got[0].peer));
    assert_eq!(e.upstream.open_connections(), 1);
}

#[tokio::test]
async fn callers_past_the_kept_connection_limit_are_served_through_the_pool() {
    // A listener thread opens at most 32 kept connections a second (and
    // keeps at most 256): the callers past that are served through the
    // shared pool, their requests forwarded alike.
    const CALLERS: usize = 48;
    let e = env_with(ListenerSettings {
        threads: 1,
        ..ListenerSettings::default()
    })
    .await;
    let mut callers = join_all((0..CALLERS).map(|_| connect(&e))).await;
    // Every caller's first request goes through the pool, all at once and
    // answered together: the pool opens a connection for each, so the
    // callers that later fall back to it find one idle.
    e.upstream.hold_answers_until(Some(CALLERS));
    let firsts = join_all(callers.iter_mut().map(|c| write(&e, c, "m v=1"))).await;
    e.upstream.hold_answers_until(None);
    assert!(firsts.iter().all(|s| *s == 204), "{firsts:?}");
    let pooled: std::collections::HashSet<_> =
        e.upstream.requests().iter().map(|r| r.peer).collect();
    assert_eq!(pooled.len(), CALLERS);
    // Every second request wants a kept connection at once.
    let started = std::time::Instant::now();
    let seconds = join_all(callers.iter_mut().map(|c| write(&e, c, "m v=2"))).await;
    let took = started.elapsed();
    assert!(seconds.iter().all(|s| *s == 204), "{seconds:?}");
    let got = e.upstream.requests();
    assert_eq!(got.len(), 2 * CALLERS);
    for (i, got) in got.iter().enumerate() {
        forwarded_alike(
            got,
            &e.upstream,
            if i < CALLERS { "m v=1" } else { "m v=2" },
        );
    }
    // Kept connections are new ones; the rest reused the pool's.
    let kept = got[CALLERS..]
        .iter()
        .filter(|r| !pooled.contains(&r.peer))
        .count();
    let windows = usize::try_from(took.as_secs()).unwrap() + 1;
    assert!(
        kept <= 32 * windows,
        "{kept} kept connections opened in {took:?} (at most 32 a second)"
    );
    assert!(kept > 0, "no caller got a kept connection");
    // And every caller is still served, kept or not.
    let thirds = join_all(callers.iter_mut().map(|c| write(&e, c, "m v=3"))).await;
    assert!(thirds.iter().all(|s| *s == 204), "{thirds:?}");
}
