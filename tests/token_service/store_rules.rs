//! Rules the store enforces for every process using it, on both backends:
//! its identity in every sync, the last active management token kept, each
//! expiry logged once however many replicas watch it, and the recovery
//! path for lost management tokens (`fluxgate authz bootstrap`), which needs
//! the store itself, never the network.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fluxgate::proto::tokens as pb;
use fluxgate::proto::tokens::watch_token_changes_response::Event;
use fluxgate::tokens::TokenRegistry;
use fluxgate::tokens::model::{DatabasePermission, TokenKind};
use fluxgate::tokens::registry::RegistryError;
use fluxgate::tokens::store::ChangeKind;
use futures_util::StreamExt as _;
use tonic::Code;

use crate::common::{Backend, TestStore, TokenServer};
use crate::{EVENT_DEADLINE, bearer, expect_code, tokens_client};

async fn store_id_of(server: &TokenServer) -> String {
    let mut client = tokens_client(server).await;
    let proxy = server.proxy_token().await;
    let mut stream = client
        .watch_token_changes(bearer(
            pb::WatchTokenChangesRequest {
                after_revision: None,
            },
            &proxy,
        ))
        .await
        .unwrap()
        .into_inner();
    match stream.message().await.unwrap().unwrap().event {
        Some(Event::Sync(sync)) => sync.store_id,
        other => panic!("sync first: {other:?}"),
    }
}

async fn every_sync_carries_the_store_identity(backend: Backend) {
    let store = TestStore::new(backend).await;
    let a = TokenServer::start_over(&store).await;
    let b = TokenServer::start_over(&store).await;
    let id = store_id_of(&a).await;
    assert!(!id.is_empty());
    assert_eq!(store_id_of(&b).await, id, "one store, one identity");
    b.stop().await;
    a.stop().await;
    let restarted = TokenServer::start_over(&store).await;
    assert_eq!(store_id_of(&restarted).await, id, "kept across restarts");
    let other = TokenServer::start_on(backend).await;
    assert_ne!(store_id_of(&other).await, id, "another store, another id");
}

async fn management_token_ids(server: &TokenServer) -> Vec<String> {
    let mut client = tokens_client(server).await;
    client
        .list_management_tokens(bearer(
            pb::ListTokensRequest::default(),
            &server.management_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .into_iter()
        .map(|t| t.id)
        .collect()
}

async fn the_last_active_management_token_cannot_be_revoked(backend: Backend) {
    let server = TokenServer::start_on(backend).await;
    let mut client = tokens_client(&server).await;
    let admin = server.management_token.clone();
    // The helper's server holds the bootstrap token only.
    let ids = management_token_ids(&server).await;
    assert_eq!(ids.len(), 1);
    let status = expect_code(
        client
            .revoke_management_token(bearer(
                pb::RevokeTokenRequest { id: ids[0].clone() },
                &admin,
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains("last active management token")
            && status.message().contains("fluxgate authz bootstrap"),
        "{status:?}"
    );

    // A second one that expires soon does not count once expired.
    let expiring = client
        .create_management_token(bearer(
            pb::CreateManagementTokenRequest {
                description: "short".into(),
                expires_at: Some((SystemTime::now() + Duration::from_millis(300)).into()),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let expires_at = SystemTime::try_from(expiring.info.unwrap().expires_at.unwrap()).unwrap();
    let deadline = Instant::now() + EVENT_DEADLINE;
    while SystemTime::now() < expires_at {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    expect_code(
        client
            .revoke_management_token(bearer(
                pb::RevokeTokenRequest { id: ids[0].clone() },
                &admin,
            ))
            .await,
        Code::FailedPrecondition,
    );

    // With another active one, the first can go; then the other is the last.
    let second = client
        .create_management_token(bearer(
            pb::CreateManagementTokenRequest {
                description: "second".into(),
                expires_at: None,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    client
        .revoke_management_token(bearer(
            pb::RevokeTokenRequest { id: ids[0].clone() },
            &admin,
        ))
        .await
        .expect("not the last one any more");
    let second_id = second.info.unwrap().id;
    expect_code(
        client
            .revoke_management_token(bearer(
                pb::RevokeTokenRequest {
                    id: second_id.clone(),
                },
                &second.token,
            ))
            .await,
        Code::FailedPrecondition,
    );
    // Still usable: the refusal changed nothing.
    client
        .list_management_tokens(bearer(pb::ListTokensRequest::default(), &second.token))
        .await
        .expect("the last management token still works");
    // Revoking an already revoked one stays a no-op, even now.
    client
        .revoke_management_token(bearer(
            pb::RevokeTokenRequest { id: ids[0].clone() },
            &second.token,
        ))
        .await
        .expect("revoking a revoked token changes nothing");
}

/// Two registries (replicas) over one store revoke the last two active
/// management tokens at the same moment: exactly one succeeds, every round.
async fn concurrent_revokes_never_remove_every_management_token(backend: Backend) {
    let store = TestStore::new(backend).await;
    let a = TokenRegistry::open(store.open().await).await.unwrap();
    let b = TokenRegistry::open(store.open().await).await.unwrap();
    a.create_first_management_token("first".into())
        .await
        .unwrap()
        .expect("empty store");
    for round in 0..5 {
        // Top up to exactly two active management tokens.
        let active: Vec<String> = a
            .list(TokenKind::Management, false)
            .iter()
            .map(|t| t.id.clone())
            .collect();
        assert_eq!(active.len(), 1, "round {round}: {active:?}");
        let (other, _) = a
            .create(
                TokenKind::Management,
                format!("round {round}"),
                vec![],
                None,
            )
            .await
            .unwrap();
        wait_until("b sees the new token", || {
            b.get(&other.id, TokenKind::Management).is_ok()
        })
        .await;
        let (ra, rb) = tokio::join!(
            a.revoke(&active[0], TokenKind::Management),
            b.revoke(&other.id, TokenKind::Management)
        );
        let refused =
            |r: &Result<_, RegistryError>| matches!(r, Err(RegistryError::LastManagementToken(_)));
        assert!(
            ra.is_ok() != rb.is_ok() && (refused(&ra) || refused(&rb)),
            "round {round}: exactly one revoke wins: {ra:?} / {rb:?}"
        );
        let head = a.head_revision().max(b.head_revision());
        wait_until("both replicas applied the revoke", || {
            a.head_revision() >= head && b.head_revision() >= head
        })
        .await;
    }
    assert_eq!(a.list(TokenKind::Management, false).len(), 1);
    assert_eq!(b.list(TokenKind::Management, false).len(), 1);
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + EVENT_DEADLINE;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three registries watch the same 20 expiries: the log gets each once.
async fn each_expiry_is_logged_once_whatever_the_replicas(backend: Backend) {
    let store = TestStore::new(backend).await;
    let mut replicas = Vec::new();
    let mut announcers = Vec::new();
    for _ in 0..3 {
        let r = TokenRegistry::open(store.open().await).await.unwrap();
        announcers.push(tokio::spawn(Arc::clone(&r).run_expiry_announcer()));
        replicas.push(r);
    }
    let expires = SystemTime::now() + Duration::from_secs(3);
    let mut ids = Vec::new();
    for i in 0..20 {
        let (t, _) = replicas[i % 3]
            .create(
                TokenKind::Database,
                format!("expiring {i}"),
                vec![DatabasePermission {
                    database: "db".into(),
                    read: true,
                    write: false,
                }],
                Some(expires),
            )
            .await
            .unwrap();
        ids.push(t.id.clone());
    }
    // Every replica sees the 20 expiries...
    let (_, stream) = replicas[0].subscribe(Some(0)).await.unwrap();
    let mut stream = Box::pin(stream);
    let mut expired = Vec::new();
    let deadline = Instant::now() + EVENT_DEADLINE;
    while expired.len() < ids.len() {
        let change = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .expect("every expiry logged in time")
            .unwrap()
            .unwrap();
        if change.kind == ChangeKind::Expired {
            expired.push(change.token_id);
        }
    }
    // ...then a marker, after which no second expiry of any may appear.
    let (marker, _) = replicas[1]
        .create(TokenKind::Management, "marker".into(), vec![], None)
        .await
        .unwrap();
    loop {
        let change = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .expect("the marker arrives")
            .unwrap()
            .unwrap();
        if change.token_id == marker.id {
            break;
        }
        assert_ne!(
            change.kind,
            ChangeKind::Expired,
            "an expiry logged twice: {change:?}"
        );
    }
    expired.sort();
    ids.sort();
    assert_eq!(expired, ids, "each expiry exactly once");
    for a in announcers {
        a.abort();
    }
}

/// `fluxgate authz bootstrap` against the store of a running service: a new
/// 0600 file with a management token the service accepts by itself, never
/// printed, never overwriting.
async fn authz_bootstrap_mints_a_token_the_running_service_picks_up(backend: Backend) {
    use std::os::unix::fs::PermissionsExt as _;

    let store = TestStore::new(backend).await;
    let server = TokenServer::start_over(&store).await;
    let out = store.dir.join("recovered-token");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_fluxgate"))
            .arg("authz")
            .arg("bootstrap")
            .args(store.args())
            .arg("--out")
            .arg(&out)
            .env_remove("FLUXGATE_STORE")
            .env_remove("FLUXGATE_DATA_DIR")
            .output()
            .unwrap()
    };
    let first = run();
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&first.stderr).into_owned();
    assert!(first.status.success(), "{stdout}\n{stderr}");
    let token = std::fs::read_to_string(&out).unwrap().trim().to_owned();
    assert!(token.starts_with("fgmt_"));
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!stdout.contains(&token) && !stderr.contains(&token));
    assert!(stdout.contains(out.to_str().unwrap()), "{stdout}");

    // The running service follows the store's log: no restart needed.
    let mut client = tokens_client(&server).await;
    let deadline = Instant::now() + EVENT_DEADLINE;
    loop {
        match client
            .list_database_tokens(bearer(pb::ListTokensRequest::default(), &token))
            .await
        {
            Ok(_) => break,
            Err(s) => {
                assert_eq!(s.code(), Code::Unauthenticated);
                assert!(Instant::now() < deadline, "the minted token never worked");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    // Never overwrites.
    let again = run();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("recovered-token"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), token);
    server.stop().await;
}

crate::on_both_backends!(
    every_sync_carries_the_store_identity,
    the_last_active_management_token_cannot_be_revoked,
    concurrent_revokes_never_remove_every_management_token,
    each_expiry_is_logged_once_whatever_the_replicas,
    authz_bootstrap_mints_a_token_the_running_service_picks_up,
);
