//! A store written by the first release (before versioned migrations:
//! `tests/fixtures/store-v0`, made with commit 5162505's `SqliteStore` and
//! `TokenRegistry`; `expected.json` lists what it holds, token strings
//! included, all throwaway) opens, migrates and keeps every token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fluxgate::proto::iox_authz::resource_action_permission::Action;
use fluxgate::proto::tokens as pb;
use fluxgate::proto::tokens::watch_token_changes_response::Event;
use serde_json::Value;
use tonic::Code;

use crate::common::TokenServer;
use crate::{authorize, authz_client, bearer, expect_code, perm, tokens_client};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-v0");

fn ms(v: &Value) -> Option<SystemTime> {
    v.as_u64().map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

fn time(t: &Option<prost_types::Timestamp>) -> Option<SystemTime> {
    t.map(|t| SystemTime::try_from(t).unwrap())
}

/// A copy of the fixture in a temporary directory (opening migrates it).
fn fixture_copy() -> (tempfile::TempDir, Value) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        format!("{FIXTURE}/fluxgate.db"),
        tmp.path().join("fluxgate.db"),
    )
    .unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURE}/expected.json")).unwrap())
            .unwrap();
    (tmp, expected)
}

#[tokio::test]
async fn a_store_written_by_the_first_release_keeps_every_token() {
    let (tmp, expected) = fixture_copy();
    let server = TokenServer::start_in(tmp.path()).await;
    assert!(
        !tmp.path().join("bootstrap-management-token").exists(),
        "a store with tokens is not bootstrapped again"
    );
    let mut client = tokens_client(&server).await;
    let mut authz = authz_client(&server).await;
    let admin = &server.management_token;
    let all = |kind| {
        let mut client = client.clone();
        async move {
            let request = bearer(
                pb::ListTokensRequest {
                    include_revoked: true,
                    ..Default::default()
                },
                admin,
            );
            let listed = match kind {
                "database" => client.list_database_tokens(request).await,
                _ => client.list_management_tokens(request).await,
            };
            listed.unwrap().into_inner().tokens
        }
    };
    let database = all("database").await;
    let management = all("management").await;
    let now = SystemTime::now();

    let tokens = expected["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 8);
    for t in tokens {
        let id = t["id"].as_str().unwrap();
        let kind = t["kind"].as_str().unwrap();
        let listed = if kind == "database" {
            &database
        } else {
            &management
        };
        let info = listed
            .iter()
            .find(|i| i.id == id)
            .unwrap_or_else(|| panic!("token {id} ({}) kept", t["description"]));
        assert_eq!(info.description, t["description"].as_str().unwrap());
        let permissions: Vec<(String, bool, bool)> = info
            .permissions
            .iter()
            .map(|p| (p.database.clone(), p.read, p.write))
            .collect();
        let want: Vec<(String, bool, bool)> = t["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["database"].as_str().unwrap().to_owned(),
                    p["read"].as_bool().unwrap(),
                    p["write"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(permissions, want, "{id}");
        assert_eq!(time(&info.created_at), ms(&t["created_at_ms"]), "{id}");
        assert_eq!(time(&info.expires_at), ms(&t["expires_at_ms"]), "{id}");
        assert_eq!(time(&info.revoked_at), ms(&t["revoked_at_ms"]), "{id}");
        assert_eq!(time(&info.updated_at), ms(&t["updated_at_ms"]), "{id}");

        // The token strings still work exactly as before.
        let secret = t["token"].as_str().unwrap();
        let usable =
            t["revoked_at_ms"].is_null() && ms(&t["expires_at_ms"]).is_none_or(|e| e > now);
        let r = authorize(
            &mut authz,
            secret.as_bytes(),
            vec![perm("db1", Action::Read)],
        )
        .await;
        assert_eq!(r.valid, usable, "{id} ({})", t["description"]);
        if kind == "management" {
            let call = client
                .list_database_tokens(bearer(pb::ListTokensRequest::default(), secret))
                .await;
            if usable {
                call.unwrap_or_else(|s| panic!("management token {id} works: {s:?}"));
            } else {
                expect_code(call, Code::Unauthenticated);
            }
        }
    }

    // The log continues where it stopped, and a follower that had seen the
    // whole old log resumes without a flush.
    let old_head = expected["head_revision"].as_u64().unwrap();
    assert!(server.registry.head_revision() > old_head);
    let proxy = server.proxy_token().await;
    let mut stream = client
        .watch_token_changes(bearer(
            pb::WatchTokenChangesRequest {
                after_revision: Some(old_head),
            },
            &proxy,
        ))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let Some(Event::Sync(sync)) = first.event else {
        panic!("sync first")
    };
    assert!(sync.resumed);
    assert!(
        !sync.store_id.is_empty(),
        "a migrated store gets an identity"
    );
    let next = stream.message().await.unwrap().unwrap();
    assert_eq!(next.revision, old_head + 1, "revisions stay gapless");
    drop(stream);
    let store_id = sync.store_id;
    server.stop().await;

    // The identity is kept.
    let server = TokenServer::start_in(tmp.path()).await;
    assert_eq!(server.registry.store_id(), Some(store_id.as_str()));
    server.stop().await;
}
