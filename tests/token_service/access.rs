//! Who may follow the change stream (issue 13 item 4): a proxy token or a
//! verified client certificate, never a database or management token; a
//! revoked or expired proxy token ends its stream. And Authorize's
//! per-caller throttling of invalid-token answers.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fluxgate::proto::iox_authz::AuthorizeRequest;
use fluxgate::proto::iox_authz::resource_action_permission::Action;
use fluxgate::proto::tokens as pb;
use fluxgate::proto::tokens::watch_token_changes_response::Event;
use fluxgate::tokens::model::TokenKind;
use fluxgate::tokens::throttle::InvalidTokenThrottle;
use tonic::{Code, Request};

use crate::common::TokenServer;
use crate::watch::{change, sync, watch};
use crate::{
    EVENT_DEADLINE, authz_client, bearer, expect_code, id_of, perm, tokens_client, with_auth,
};

fn watch_request(authorization: Option<&str>) -> Request<pb::WatchTokenChangesRequest> {
    let message = pb::WatchTokenChangesRequest {
        after_revision: None,
    };
    match authorization {
        Some(value) => with_auth(message, value),
        None => Request::new(message),
    }
}

#[tokio::test]
async fn the_change_stream_needs_a_proxy_token() {
    let server = TokenServer::start().await;
    let mgmt = server.management_token.clone();
    let mut client = tokens_client(&server).await;

    let s = expect_code(
        client.watch_token_changes(watch_request(None)).await,
        Code::Unauthenticated,
    );
    assert!(s.message().contains("proxy token"), "{s:?}");
    for bad in ["Bearer fgpx_unknown", "Digest x", "Bearer"] {
        expect_code(
            client.watch_token_changes(watch_request(Some(bad))).await,
            Code::Unauthenticated,
        );
    }
    // Data and admin rights are not what a sidecar should hold.
    let (_, db) = server.database_token(&[("*", true, true)]).await;
    for (token, kind) in [(db.as_str(), "database"), (mgmt.as_str(), "management")] {
        let s = expect_code(
            client
                .watch_token_changes(watch_request(Some(&format!("Bearer {token}"))))
                .await,
            Code::PermissionDenied,
        );
        assert!(
            s.message().contains(&format!("a {kind} token may not")),
            "{s:?}"
        );
        assert!(!s.message().contains(token), "the token is not echoed");
    }

    // A proxy token made through the API: prefixed, listed as its own kind.
    let created = client
        .create_proxy_token(bearer(
            pb::CreateProxyTokenRequest {
                description: "sidecars of pool A".into(),
                expires_at: None,
            },
            &mgmt,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(created.token.starts_with("fgpx_"), "a recognisable prefix");
    assert_eq!(
        created.info.as_ref().unwrap().kind,
        pb::TokenKind::Proxy as i32
    );
    let listed = client
        .list_proxy_tokens(bearer(pb::ListTokensRequest::default(), &mgmt))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tokens.len(), 1);
    let management = client
        .list_management_tokens(bearer(pb::ListTokensRequest::default(), &mgmt))
        .await
        .unwrap()
        .into_inner();
    assert!(management.tokens.iter().all(|t| t.id != id_of(&created)));

    let mut stream = watch(&mut client, &created.token, None).await;
    let (_, s) = sync(&mut stream).await;
    assert!(!s.resumed);

    // It holds no data permission.
    let mut authz = authz_client(&server).await;
    let r = crate::authorize(
        &mut authz,
        created.token.as_bytes(),
        vec![perm("db", Action::Read)],
    )
    .await;
    assert!(r.valid && r.permissions.is_empty());
}

#[tokio::test]
async fn revoking_the_proxy_token_ends_its_open_stream() {
    let server = TokenServer::start().await;
    let mgmt = server.management_token.clone();
    let mut client = tokens_client(&server).await;
    let proxy = client
        .create_proxy_token(bearer(
            pb::CreateProxyTokenRequest {
                description: "p".into(),
                expires_at: None,
            },
            &mgmt,
        ))
        .await
        .unwrap()
        .into_inner();
    let other = server.proxy_token().await;
    let mut stream = watch(&mut client, &proxy.token, None).await;
    let mut unaffected = watch(&mut client, &other, None).await;
    let _ = sync(&mut stream).await;
    let _ = sync(&mut unaffected).await;

    client
        .revoke_proxy_token(bearer(pb::RevokeTokenRequest { id: id_of(&proxy) }, &mgmt))
        .await
        .unwrap();
    // The revocation itself is delivered, then the stream ends.
    let (_, c) = change(&mut stream).await;
    assert_eq!(c.token_id, id_of(&proxy));
    assert_eq!(c.kind, pb::ChangeKind::Revoked as i32);
    let end = tokio::time::timeout(EVENT_DEADLINE, stream.message())
        .await
        .expect("the stream ends");
    let status = end.expect_err("ends with an error status");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");

    // Another proxy's stream goes on; the revoked token opens none.
    let (_, c) = change(&mut unaffected).await;
    assert_eq!(c.token_id, id_of(&proxy));
    let (id, _) = server.database_token(&[("db", true, false)]).await;
    let (_, c) = change(&mut unaffected).await;
    assert_eq!(c.token_id, id);
    expect_code(
        client
            .watch_token_changes(watch_request(Some(&format!("Bearer {}", proxy.token))))
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn an_expiring_proxy_token_ends_its_stream() {
    let server = TokenServer::start().await;
    let (_, token) = server
        .registry
        .create(
            TokenKind::Proxy,
            "short".into(),
            vec![],
            Some(SystemTime::now() + Duration::from_millis(800)),
        )
        .await
        .unwrap();
    let token = token.into_string();
    let mut client = tokens_client(&server).await;
    let mut stream = watch(&mut client, &token, None).await;
    let _ = sync(&mut stream).await;
    let (_, c) = change(&mut stream).await;
    assert_eq!(c.kind, pb::ChangeKind::Expired as i32);
    let end = tokio::time::timeout(EVENT_DEADLINE, stream.message())
        .await
        .expect("the stream ends");
    assert_eq!(end.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test]
async fn the_sync_carries_the_store_id_when_known() {
    let server = TokenServer::start().await;
    let proxy = server.proxy_token().await;
    let mut client = tokens_client(&server).await;
    let mut stream = watch(&mut client, &proxy, None).await;
    let (_, s) = sync(&mut stream).await;
    assert_eq!(s.store_id, "", "unknown until the store keeps one");
    server.registry.set_store_id("store-a");
    let mut stream = watch(&mut client, &proxy, None).await;
    let m = tokio::time::timeout(EVENT_DEADLINE, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(Event::Sync(s)) = m.event else {
        panic!("sync first")
    };
    assert_eq!(s.store_id, "store-a");
}

fn authorize_request(token: &[u8], proxy: Option<&str>) -> Request<AuthorizeRequest> {
    let message = AuthorizeRequest {
        token: token.to_vec(),
        permissions: vec![perm("db", Action::Read)],
    };
    match proxy {
        Some(p) => bearer(message, p),
        None => Request::new(message),
    }
}

#[tokio::test]
async fn invalid_tokens_are_throttled_per_caller_and_proxies_are_exempt() {
    let metrics = fluxgate::telemetry::init_metrics();
    let throttle = Arc::new(InvalidTokenThrottle::per_minute(
        NonZeroU32::new(5).unwrap(),
    ));
    let server = TokenServer::start_throttled(throttle).await;
    let (_, valid) = server.database_token(&[("db", true, false)]).await;
    let proxy = server.proxy_token().await;
    let mut authz = authz_client(&server).await;

    // The IOx liveness probe (empty token) is never counted.
    for _ in 0..20 {
        let r = authz
            .authorize(authorize_request(b"", None))
            .await
            .unwrap()
            .into_inner();
        assert!(!r.valid);
    }
    // Five invalid answers, then RESOURCE_EXHAUSTED.
    for i in 0..5 {
        let r = authz
            .authorize(authorize_request(format!("fgdb_guess{i}").as_bytes(), None))
            .await
            .unwrap()
            .into_inner();
        assert!(!r.valid);
    }
    let s = expect_code(
        authz
            .authorize(authorize_request(b"fgdb_guess5", None))
            .await,
        Code::ResourceExhausted,
    );
    assert!(s.message().contains("too many invalid tokens"), "{s:?}");
    // Out of budget, even a right guess is not answered: hits and misses
    // look alike.
    expect_code(
        authz
            .authorize(authorize_request(valid.as_bytes(), None))
            .await,
        Code::ResourceExhausted,
    );
    // A proxy presenting its token is not throttled: invalid and valid
    // tokens of its clients are answered.
    for i in 0..20 {
        let r = authz
            .authorize(authorize_request(
                format!("fgdb_client{i}").as_bytes(),
                Some(&proxy),
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!r.valid);
    }
    let r = authz
        .authorize(authorize_request(valid.as_bytes(), Some(&proxy)))
        .await
        .unwrap()
        .into_inner();
    assert!(r.valid && r.permissions.len() == 1);
    // A database token in the metadata is no exemption.
    expect_code(
        authz
            .authorize(authorize_request(b"fgdb_x", Some(&valid)))
            .await,
        Code::ResourceExhausted,
    );
    let text = metrics.render();
    assert!(
        text.lines()
            .any(|l| l.starts_with("fluxgate_authorize_requests_total{result=\"throttled\"}")),
        "counted in metrics"
    );
}
