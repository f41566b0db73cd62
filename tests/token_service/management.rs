//! The management API: who may call it, input validation, not-found and
//! revoked tokens, and listing.

use fluxgate::proto::tokens as pb;
use fluxgate::proto::tokens::token_service_client::TokenServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use fluxgate::tokens::TokenRegistry;
use fluxgate::tokens::model::TokenKind;

use crate::common::{Backend, TestStore, TokenServer};
use crate::{bearer, db_perm, id_of, tokens_client, with_auth};

/// The management RPCs (all but the change stream).
const MANAGEMENT_RPCS: [&str; 11] = [
    "CreateDatabaseToken",
    "ListDatabaseTokens",
    "GetDatabaseToken",
    "UpdateDatabaseToken",
    "RevokeDatabaseToken",
    "CreateManagementToken",
    "ListManagementTokens",
    "RevokeManagementToken",
    "CreateProxyToken",
    "ListProxyTokens",
    "RevokeProxyToken",
];

fn request<T>(message: T, authorization: Option<&str>) -> Request<T> {
    match authorization {
        Some(value) => with_auth(message, value),
        None => Request::new(message),
    }
}

/// Calls every management RPC with the given `authorization` metadata and
/// harmless arguments; returns each call's status code.
async fn call_every_rpc(
    client: &mut TokenServiceClient<Channel>,
    authorization: Option<&str>,
) -> Vec<(&'static str, Code, String)> {
    fn code<T>(r: Result<tonic::Response<T>, Status>) -> (Code, String) {
        match r {
            Ok(_) => (Code::Ok, String::new()),
            Err(s) => (s.code(), s.message().to_owned()),
        }
    }
    let id = "00000000-0000-0000-0000-000000000000".to_owned();
    let results = vec![
        code(
            client
                .create_database_token(request(
                    pb::CreateDatabaseTokenRequest {
                        description: "x".into(),
                        permissions: vec![db_perm("db", true, false)],
                        expires_at: None,
                    },
                    authorization,
                ))
                .await,
        ),
        code(
            client
                .list_database_tokens(request(pb::ListTokensRequest::default(), authorization))
                .await,
        ),
        code(
            client
                .get_database_token(request(
                    pb::GetTokenRequest { id: id.clone() },
                    authorization,
                ))
                .await,
        ),
        code(
            client
                .update_database_token(request(
                    pb::UpdateDatabaseTokenRequest {
                        id: id.clone(),
                        permissions: vec![db_perm("db", true, false)],
                        description: None,
                    },
                    authorization,
                ))
                .await,
        ),
        code(
            client
                .revoke_database_token(request(
                    pb::RevokeTokenRequest { id: id.clone() },
                    authorization,
                ))
                .await,
        ),
        code(
            client
                .create_management_token(request(
                    pb::CreateManagementTokenRequest {
                        description: "x".into(),
                        expires_at: None,
                    },
                    authorization,
                ))
                .await,
        ),
        code(
            client
                .list_management_tokens(request(pb::ListTokensRequest::default(), authorization))
                .await,
        ),
        code(
            client
                .revoke_management_token(request(
                    pb::RevokeTokenRequest { id: id.clone() },
                    authorization,
                ))
                .await,
        ),
        code(
            client
                .create_proxy_token(request(
                    pb::CreateProxyTokenRequest {
                        description: "x".into(),
                        expires_at: None,
                    },
                    authorization,
                ))
                .await,
        ),
        code(
            client
                .list_proxy_tokens(request(pb::ListTokensRequest::default(), authorization))
                .await,
        ),
        code(
            client
                .revoke_proxy_token(request(pb::RevokeTokenRequest { id }, authorization))
                .await,
        ),
    ];
    MANAGEMENT_RPCS
        .iter()
        .zip(results)
        .map(|(name, (code, message))| (*name, code, message))
        .collect()
}

#[track_caller]
fn assert_all(results: &[(&'static str, Code, String)], expected: Code, case: &str) {
    for (rpc, code, message) in results {
        assert_eq!(*code, expected, "{rpc} with {case}: {code:?} {message:?}");
        assert!(!message.is_empty(), "{rpc} with {case}: a readable message");
    }
}

async fn management_calls_need_a_management_token(backend: Backend) {
    let server = TokenServer::start_on(backend).await;
    let mut client = tokens_client(&server).await;
    let mgmt = server.management_token.clone();

    let r = call_every_rpc(&mut client, None).await;
    assert_all(&r, Code::Unauthenticated, "no metadata");

    let r = call_every_rpc(&mut client, Some("Bearer fgmt_unknown-token")).await;
    assert_all(&r, Code::Unauthenticated, "unknown token");

    for malformed in [
        "Basic",
        "Bearer",
        "Bearer ",
        "Token",
        "Basic !!notbase64",
        "Digest abc",
        mgmt.as_str(),
        "Bearer a b",
    ] {
        let r = call_every_rpc(&mut client, Some(malformed)).await;
        assert_all(&r, Code::Unauthenticated, "malformed authorization");
    }

    // Management token not a secret in messages.
    let r = call_every_rpc(&mut client, Some(&format!("Bearer {mgmt}x"))).await;
    for (rpc, _, message) in &r {
        assert!(!message.contains(&mgmt), "{rpc} echoes the token");
    }

    let (_, db_token) = server.database_token(&[("*", true, true)]).await;
    let r = call_every_rpc(&mut client, Some(&format!("Bearer {db_token}"))).await;
    assert_all(&r, Code::PermissionDenied, "a database token");
    let r = call_every_rpc(&mut client, Some(&format!("Token {db_token}"))).await;
    assert_all(
        &r,
        Code::PermissionDenied,
        "a database token (Token scheme)",
    );
    // A proxy token follows the change stream and does nothing else.
    let proxy = server.proxy_token().await;
    let r = call_every_rpc(&mut client, Some(&format!("Bearer {proxy}"))).await;
    assert_all(&r, Code::PermissionDenied, "a proxy token");
    assert!(
        r[0].2.contains("a proxy token cannot manage tokens"),
        "{r:?}"
    );

    // With a management token nothing is refused for want of rights.
    for scheme in ["Bearer", "Token", "bearer", "token"] {
        let r = call_every_rpc(&mut client, Some(&format!("{scheme} {mgmt}"))).await;
        for (rpc, code, message) in &r {
            assert!(
                !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
                "{rpc} refused a management token with scheme {scheme}: {code:?} {message}"
            );
        }
        // The dummy id does not exist: get/update/revoke answer NOT_FOUND.
        assert_eq!(r[0].1, Code::Ok);
        assert_eq!(r[1].1, Code::Ok);
        assert_eq!(r[2].1, Code::NotFound);
        assert_eq!(r[3].1, Code::NotFound);
        assert_eq!(r[4].1, Code::NotFound);
        assert_eq!(r[5].1, Code::Ok);
        assert_eq!(r[6].1, Code::Ok);
        assert_eq!(r[7].1, Code::NotFound);
        assert_eq!(r[8].1, Code::Ok);
        assert_eq!(r[9].1, Code::Ok);
        assert_eq!(r[10].1, Code::NotFound);
    }
}

async fn revoked_management_token_is_unauthenticated(backend: Backend) {
    let server = TokenServer::start_on(backend).await;
    let mut client = tokens_client(&server).await;
    let mgmt = server.management_token.clone();
    let second = client
        .create_management_token(bearer(
            pb::CreateManagementTokenRequest {
                description: "second".into(),
                expires_at: None,
            },
            &mgmt,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(second.token.starts_with("fgmt_"));
    assert_eq!(
        second.info.as_ref().unwrap().kind,
        pb::TokenKind::Management as i32
    );
    assert!(second.info.as_ref().unwrap().permissions.is_empty());
    // The new one works, and can revoke the first one.
    let revoked = client
        .revoke_management_token(bearer(
            pb::RevokeTokenRequest { id: id_of(&second) },
            &second.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked_at.is_some());
    let r = call_every_rpc(&mut client, Some(&format!("Bearer {}", second.token))).await;
    assert_all(&r, Code::Unauthenticated, "a revoked management token");
    // The bootstrap one is untouched.
    client
        .list_management_tokens(bearer(pb::ListTokensRequest::default(), &mgmt))
        .await
        .unwrap();
}

crate::on_both_backends!(
    management_calls_need_a_management_token,
    revoked_management_token_is_unauthenticated,
);

/// A management token another process has just written to the store
/// (`fluxgate authz bootstrap`, as deploy/README.md runs it right before
/// `fluxgate management create`) works at once: the service reads the
/// store's newest changes before refusing an unknown management token,
/// instead of waiting for the next poll or notification.
#[tokio::test]
async fn a_management_token_written_by_another_process_works_at_once() {
    let store = TestStore::new(Backend::Sqlite).await;
    let server = TokenServer::start_over(&store).await;
    let (record, token) = TokenRegistry::new_token(
        TokenKind::Management,
        "written elsewhere".to_owned(),
        Vec::new(),
        None,
    )
    .unwrap();
    store.seed(vec![record]).await;
    let mut client = tokens_client(&server).await;
    let listed = client
        .list_management_tokens(bearer(
            pb::ListTokensRequest::default(),
            &token.into_string(),
        ))
        .await;
    assert!(
        listed.is_ok(),
        "refused a management token already in the store: {listed:?}"
    );
}
