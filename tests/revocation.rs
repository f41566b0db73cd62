//! Revocation latency across proxies: three in-process proxies, each with
//! its own decision cache following one token service. Every cache is warm
//! with the token's allow; the token is revoked; the time until all three
//! proxies refuse it is measured. Repeated for many tokens, the p99 must
//! stay under one second (issue 6, point 5). The figures are printed
//! (`cargo test --test revocation -- --nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TokenServer;
use common::capture::CaptureUpstream;
use common::proxy::ProxyServer;
use fluxgate::authz::Authorizer;
use fluxgate::authz::cache::{CacheConfig, CachedAuthorizer};
use fluxgate::authz::client::{AuthzClient, ProxyCredential};
use fluxgate::authz::invalidation::{FollowOptions, WatchMode};
use fluxgate::tokens::model::{DatabasePermission, TokenKind};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

const PROXIES: usize = 3;
const REVOCATIONS: usize = 60;
/// Give up on one revocation after this long (a failure, not a sample).
const GIVE_UP: Duration = Duration::from_secs(10);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The status of a write with `token` through the proxy at `base`.
async fn write(client: &HttpClient, base: &str, token: &str) -> u16 {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("{base}/api/v2/write?bucket=db"))
        .header("authorization", format!("Token {token}"))
        .body(Full::new(Bytes::from_static(b"m v=1")))
        .unwrap();
    client.request(request).await.unwrap().status().as_u16()
}

/// Polls `base` until it refuses `token`; returns when it did.
async fn refused_at(client: HttpClient, base: String, token: String) -> Instant {
    let start = Instant::now();
    loop {
        if write(&client, &base, &token).await == 401 {
            return Instant::now();
        }
        assert!(
            start.elapsed() < GIVE_UP,
            "{base} still accepts a revoked token"
        );
        tokio::task::yield_now().await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_proxy_refuses_a_revoked_token_within_one_second_p99() {
    let tokens = TokenServer::start().await;
    let upstream = CaptureUpstream::start().await;
    let stop = CancellationToken::new();
    let config = CacheConfig {
        // Long TTLs: only the change stream can make a proxy refuse.
        allow_ttl: Duration::from_secs(300),
        deny_ttl: Duration::from_secs(300),
        disconnected_ttl: Duration::from_secs(300),
        ..CacheConfig::default()
    };
    let mut caches = Vec::new();
    let mut proxies = Vec::new();
    // Each proxy follows the change stream with a proxy token of its own.
    for _ in 0..PROXIES {
        let credential = ProxyCredential::new(&tokens.proxy_token().await);
        let client = AuthzClient::for_uri(tokens.url().parse().unwrap(), Duration::from_secs(2))
            .with_credential(credential.clone());
        let cache = CachedAuthorizer::new(Arc::new(client), config.clone());
        cache.follow_with(
            tonic::transport::Endpoint::from_shared(tokens.url()).unwrap(),
            FollowOptions {
                mode: WatchMode::Required,
                credential,
            },
            stop.clone(),
        );
        let authorizer: Arc<dyn Authorizer> = Arc::new(cache.clone());
        proxies.push(ProxyServer::start(authorizer, &upstream.url()).await);
        caches.push(cache);
    }
    let deadline = Instant::now() + GIVE_UP;
    while !caches.iter().all(|c| c.watch_status().connected) {
        assert!(Instant::now() < deadline, "followers did not connect");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut issued = Vec::new();
    for _ in 0..REVOCATIONS {
        let (record, token) = tokens
            .registry
            .create(
                TokenKind::Database,
                "revocation latency".into(),
                vec![DatabasePermission {
                    database: "db".into(),
                    read: false,
                    write: true,
                }],
                None,
            )
            .await
            .unwrap();
        issued.push((record.id.clone(), token.into_string()));
    }
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let bases: Vec<String> = proxies.iter().map(|p| p.url("")).collect();
    // Warm every cache, and check the allow is served from it.
    for (_, token) in &issued {
        for base in &bases {
            assert_eq!(write(&client, base, token).await, 204);
        }
    }
    let calls: Vec<u64> = caches.iter().map(|c| c.stats().inner_calls).collect();
    for (_, token) in &issued {
        for base in &bases {
            assert_eq!(write(&client, base, token).await, 204);
        }
    }
    for (cache, before) in caches.iter().zip(&calls) {
        assert_eq!(cache.stats().inner_calls, *before, "served from the cache");
    }

    let mut latencies = Vec::with_capacity(REVOCATIONS);
    for (id, token) in &issued {
        let start = Instant::now();
        tokens
            .registry
            .revoke(id, TokenKind::Database)
            .await
            .unwrap();
        let polls = bases
            .iter()
            .map(|b| tokio::spawn(refused_at(client.clone(), b.clone(), token.clone())));
        let mut last = start;
        for poll in polls {
            last = last.max(poll.await.unwrap());
        }
        latencies.push(last - start);
    }
    stop.cancel();

    latencies.sort();
    let (p50, p99, max) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies[latencies.len() - 1],
    );
    println!(
        "revocation latency over {REVOCATIONS} revocations, {PROXIES} proxies: p50 {p50:?}, p99 {p99:?}, max {max:?}"
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?} ≥ 1 s");
}
