//! `fluxgate proxy` in front of an authorizer built from the IOx contract
//! alone (issue 18, finding 8): a tonic server on 127.0.0.1:0 serving only
//! `IoxAuthorizerService/Authorize`, no change stream. With `--authz-watch
//! auto` (the default) the proxy notices the missing stream (UNIMPLEMENTED),
//! goes on without it, is ready once Authorize answers, and authorizes
//! requests; with `required` it is not ready.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxgate::authz::cache::CachedAuthorizer;
use fluxgate::authz::client::AuthzClient;
use fluxgate::authz::invalidation::{FollowOptions, WatchMode};
use fluxgate::authz::{Authorizer, Need};
use fluxgate::credentials::Token;
use fluxgate::proto::iox_authz::iox_authorizer_service_server::{
    IoxAuthorizerService, IoxAuthorizerServiceServer,
};
use fluxgate::proto::iox_authz::permission::PermissionOneOf;
use fluxgate::proto::iox_authz::resource_action_permission::{Action, Target};
use fluxgate::proto::iox_authz::{AuthorizeRequest, AuthorizeResponse, Subject};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use common::binary::Process;
use common::capture::CaptureUpstream;
use common::proxy::{request, send};

/// The whole authorizer: one token, allowed to write database `x`.
#[derive(Debug, Clone)]
struct Minimal;

const TOKEN: &str = "iox-token-with-write-on-x";

#[tonic::async_trait]
impl IoxAuthorizerService for Minimal {
    async fn authorize(
        &self,
        request: Request<AuthorizeRequest>,
    ) -> Result<Response<AuthorizeResponse>, Status> {
        let request = request.into_inner();
        if request.token != TOKEN.as_bytes() {
            return Ok(Response::new(AuthorizeResponse {
                valid: false,
                subject: None,
                permissions: vec![],
            }));
        }
        let held = request
            .permissions
            .into_iter()
            .filter(|p| match &p.permission_one_of {
                Some(PermissionOneOf::ResourceAction(ra)) => {
                    ra.action == Action::Write as i32
                        && ra.target == Some(Target::ResourceName("x".into()))
                }
                None => false,
            })
            .collect();
        Ok(Response::new(AuthorizeResponse {
            valid: true,
            subject: Some(Subject { id: "iox-1".into() }),
            permissions: held,
        }))
    }
}

/// Serves only Authorize on 127.0.0.1:0 until `stop`.
async fn serve_minimal(stop: CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(IoxAuthorizerServiceServer::new(Minimal))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.cancelled_owned(),
            )
            .await
            .unwrap();
    });
    addr
}

/// Polls `url` until it answers `status`, for at most 20 s.
async fn until_status(url: &str, status: u16, process: &Process) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = send(request("GET", url, &[], "")).await;
        if reply.status == status {
            return String::from_utf8_lossy(&reply.body).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{url} still answers {} ({:?}):\n{}",
            reply.status,
            reply.body,
            process.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_is_ready_and_authorizes_in_front_of_an_authorize_only_authorizer() {
    let stop = CancellationToken::new();
    let authz = serve_minimal(stop.clone()).await;
    let upstream = CaptureUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "proxy".to_owned(),
        "--listen=127.0.0.1:0".to_owned(),
        "--admin-listen=127.0.0.1:0".to_owned(),
        format!("--upstream={}", upstream.url()),
        format!("--authz=http://{authz}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut proxy, bound) = Process::listening(&args, &[], &dir.path().join("proxy.log"));
    let (port, admin) = (bound.proxy.unwrap(), bound.admin.unwrap());
    until_status(&format!("http://127.0.0.1:{admin}/readyz"), 200, &proxy).await;

    let write = |token: &str, db: &str| {
        request(
            "POST",
            &format!("http://127.0.0.1:{port}/api/v2/write?bucket={db}"),
            &[("authorization", &format!("Token {token}"))],
            "m v=1",
        )
    };
    assert_eq!(send(write(TOKEN, "x")).await.status, 204);
    assert_eq!(upstream.last().body, "m v=1");
    assert_eq!(send(write(TOKEN, "y")).await.status, 403);
    assert_eq!(send(write("wrong", "x")).await.status, 401);
    assert_eq!(upstream.count(), 1);
    let log = proxy.log_text();
    assert!(
        log.contains("does not implement the token change stream"),
        "the fallback is logged:\n{log}"
    );
    assert_eq!(proxy.terminate(), 0);

    // `required` refuses to be ready without the stream.
    let args = [
        "proxy".to_owned(),
        "--listen=127.0.0.1:0".to_owned(),
        "--admin-listen=127.0.0.1:0".to_owned(),
        format!("--upstream={}", upstream.url()),
        format!("--authz=http://{authz}"),
        "--authz-watch=required".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut proxy, bound) = Process::listening(&args, &[], &dir.path().join("required.log"));
    let (port, admin) = (bound.proxy.unwrap(), bound.admin.unwrap());
    // It still decides (fail-closed needs no stream)...
    let reply = send(request(
        "POST",
        &format!("http://127.0.0.1:{port}/api/v2/write?bucket=x"),
        &[("authorization", &format!("Token {TOKEN}"))],
        "m v=1",
    ))
    .await;
    assert_eq!(reply.status, 204);
    // ...but is not ready: Kubernetes sends it no traffic.
    let why = until_status(&format!("http://127.0.0.1:{admin}/readyz"), 503, &proxy).await;
    assert!(why.contains("change stream"), "{why}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !proxy
        .log_text()
        .contains("which --authz-watch required needs")
    {
        assert!(Instant::now() < deadline, "{}", proxy.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.terminate(), 0);
    stop.cancel();
}

#[tokio::test]
async fn without_a_stream_allows_live_the_disconnected_ttl() {
    let stop = CancellationToken::new();
    let authz = serve_minimal(stop.clone()).await;
    let url: http::Uri = format!("http://{authz}").parse().unwrap();
    let client = AuthzClient::for_uri(url.clone(), Duration::from_secs(2));
    let config = fluxgate::authz::cache::CacheConfig {
        allow_ttl: Duration::from_secs(60),
        disconnected_ttl: Duration::from_millis(200),
        jitter: 0.0,
        ..Default::default()
    };
    let cache = CachedAuthorizer::new(Arc::new(client), config);
    cache.follow_with(
        tonic::transport::Endpoint::from(url),
        FollowOptions {
            mode: WatchMode::Auto,
            credential: None,
        },
        stop.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cache.watch_status().streamless {
        assert!(Instant::now() < deadline, "the missing stream is detected");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(cache.ready().await, Ok(()));
    let token = Token::new(TOKEN.as_bytes().to_vec()).unwrap();
    let fetched = Instant::now();
    let v = cache.check(&token, &[Need::write("x")]).await.unwrap();
    assert!(matches!(
        v.decisions[0],
        fluxgate::authz::NeedDecision::Allowed { .. }
    ));
    cache.check(&token, &[Need::write("x")]).await.unwrap();
    let calls = cache.stats().inner_calls;
    tokio::time::sleep_until((fetched + Duration::from_millis(250)).into()).await;
    cache.check(&token, &[Need::write("x")]).await.unwrap();
    assert_eq!(
        cache.stats().inner_calls,
        calls + 1,
        "asked again after the disconnected TTL, not the 60 s allow TTL"
    );
    stop.cancel();
}
