//! The embedded store: everything survives a restart, the bootstrap token is
//! written once with mode 0600, and no file of the store ever holds a token
//! string (only SHA-512 hashes).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fluxgate::proto::iox_authz::resource_action_permission::Action;
use fluxgate::proto::tokens as pb;
use sha2::{Digest as _, Sha512};
use tonic::Code;

use crate::common::{Backend, TestStore, TokenServer};
use crate::{
    authorize, authz_client, bearer, contains, create_db_token, db_perm, expect_code, id_of, perm,
    tokens_client,
};

const BOOTSTRAP_FILE: &str = "bootstrap-management-token";

async fn get(server: &TokenServer, id: &str) -> pb::TokenInfo {
    let mut client = tokens_client(server).await;
    client
        .get_database_token(bearer(
            pb::GetTokenRequest { id: id.to_owned() },
            &server.management_token,
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn tokens_survive_a_restart(backend: Backend) {
    let store = TestStore::new(backend).await;
    let server = TokenServer::start_over(&store).await;
    let mgmt = server.management_token.clone();
    let mut client = tokens_client(&server).await;

    let kept = create_db_token(
        &mut client,
        &mgmt,
        "kept",
        vec![db_perm("db1", true, false), db_perm("*", false, true)],
        Some(std::time::SystemTime::now() + std::time::Duration::from_secs(3600)),
    )
    .await;
    let updated = create_db_token(
        &mut client,
        &mgmt,
        "updated",
        vec![db_perm("u", true, false)],
        None,
    )
    .await;
    client
        .update_database_token(bearer(
            pb::UpdateDatabaseTokenRequest {
                id: id_of(&updated),
                permissions: vec![db_perm("u", true, true)],
                description: Some("updated again".into()),
            },
            &mgmt,
        ))
        .await
        .unwrap();
    let revoked = create_db_token(
        &mut client,
        &mgmt,
        "revoked",
        vec![db_perm("db1", true, true)],
        None,
    )
    .await;
    client
        .revoke_database_token(bearer(
            pb::RevokeTokenRequest {
                id: id_of(&revoked),
            },
            &mgmt,
        ))
        .await
        .unwrap();
    let extra_mgmt = client
        .create_management_token(bearer(
            pb::CreateManagementTokenRequest {
                description: "second admin".into(),
                expires_at: None,
            },
            &mgmt,
        ))
        .await
        .unwrap()
        .into_inner();

    let before: Vec<pb::TokenInfo> = [
        get(&server, &id_of(&kept)).await,
        get(&server, &id_of(&updated)).await,
        get(&server, &id_of(&revoked)).await,
    ]
    .into();
    let mgmt_before = client
        .list_management_tokens(bearer(
            pb::ListTokensRequest {
                include_revoked: true,
                ..Default::default()
            },
            &mgmt,
        ))
        .await
        .unwrap()
        .into_inner();
    let head_before = server.registry.head_revision();
    drop(client);
    server.stop().await;

    let server = TokenServer::start_over(&store).await;
    // The restarted server had tokens: no new bootstrap, the helper made a
    // management token of its own; the old ones still work too.
    let after: Vec<pb::TokenInfo> = [
        get(&server, &id_of(&kept)).await,
        get(&server, &id_of(&updated)).await,
        get(&server, &id_of(&revoked)).await,
    ]
    .into();
    assert_eq!(
        before, after,
        "ids, permissions, descriptions and times kept"
    );
    assert!(server.registry.head_revision() > head_before);

    let mut client = tokens_client(&server).await;
    for old_mgmt in [&mgmt, &extra_mgmt.token] {
        let listed = client
            .list_management_tokens(bearer(
                pb::ListTokensRequest {
                    include_revoked: true,
                    ..Default::default()
                },
                old_mgmt,
            ))
            .await
            .expect("management tokens survive")
            .into_inner();
        for t in &mgmt_before.tokens {
            assert!(listed.tokens.contains(t), "management token {} kept", t.id);
        }
    }

    let mut authz = authz_client(&server).await;
    let r = authorize(
        &mut authz,
        kept.token.as_bytes(),
        vec![
            perm("db1", Action::Read),
            perm("other", Action::Write),
            perm("db1", Action::Write),
            perm("other", Action::Read),
        ],
    )
    .await;
    assert!(r.valid);
    assert_eq!(r.subject.unwrap().id, id_of(&kept));
    assert_eq!(
        r.permissions,
        vec![
            perm("db1", Action::Read),
            perm("other", Action::Write),
            perm("db1", Action::Write)
        ]
    );
    let r = authorize(
        &mut authz,
        updated.token.as_bytes(),
        vec![perm("u", Action::Write)],
    )
    .await;
    assert!(r.valid && r.permissions.len() == 1);
    let r = authorize(
        &mut authz,
        revoked.token.as_bytes(),
        vec![perm("db1", Action::Read)],
    )
    .await;
    assert!(
        !r.valid && r.subject.is_none() && r.permissions.is_empty(),
        "revoked stays refused"
    );
    expect_code(
        client
            .update_database_token(bearer(
                pb::UpdateDatabaseTokenRequest {
                    id: id_of(&revoked),
                    permissions: vec![db_perm("x", true, false)],
                    description: None,
                },
                &mgmt,
            ))
            .await,
        Code::FailedPrecondition,
    );
    server.stop().await;
}

async fn bootstrap_token_is_written_once_with_mode_0600(backend: Backend) {
    use std::os::unix::fs::PermissionsExt as _;

    let store = TestStore::new(backend).await;
    let server = TokenServer::start_over(&store).await;
    let path = store.dir.join(BOOTSTRAP_FILE);
    let meta = std::fs::metadata(&path).expect("bootstrap file written on first start");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let content = std::fs::read_to_string(&path).unwrap();
    let token = content.trim();
    assert!(token.starts_with("fgmt_"), "a management token");
    assert_eq!(token, server.management_token);

    let mut client = tokens_client(&server).await;
    let listed = client
        .list_management_tokens(bearer(pb::ListTokensRequest::default(), token))
        .await
        .expect("the bootstrap token works")
        .into_inner();
    assert_eq!(listed.tokens.len(), 1);
    let bootstrap_id = listed.tokens[0].id.clone();
    // A management token holds no data access.
    let mut authz = authz_client(&server).await;
    let r = authorize(&mut authz, token.as_bytes(), vec![perm("db", Action::Read)]).await;
    assert!(r.valid && r.permissions.is_empty());
    drop(client);
    server.stop().await;

    let server = TokenServer::start_over(&store).await;
    assert_ne!(server.management_token, token, "no second bootstrap token");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        content,
        "file untouched"
    );
    let mut client = tokens_client(&server).await;
    let listed = client
        .list_management_tokens(bearer(pb::ListTokensRequest::default(), token))
        .await
        .expect("the bootstrap token still works")
        .into_inner();
    let ids: Vec<_> = listed.tokens.iter().map(|t| t.id.clone()).collect();
    assert_eq!(ids.len(), 2, "bootstrap + the test helper's token: {ids:?}");
    assert_eq!(ids[0], bootstrap_id);
    let bootstraps = listed
        .tokens
        .iter()
        .filter(|t| t.description.contains("bootstrap"))
        .count();
    assert_eq!(bootstraps, 1);
    let entries: Vec<_> = std::fs::read_dir(&store.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("bootstrap"))
        .collect();
    assert_eq!(entries, vec![BOOTSTRAP_FILE.to_owned()]);
    server.stop().await;
}

/// Every file of the store (the bootstrap file is the one place a token is
/// meant to be written, once) as (name, bytes).
fn store_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == BOOTSTRAP_FILE || !entry.file_type().unwrap().is_file() {
            continue;
        }
        files.push((name, std::fs::read(entry.path()).unwrap()));
    }
    files
}

fn assert_no_secret_in_store(dir: &Path, secrets: &[String], hashes: &[Vec<u8>]) {
    let files = store_files(dir);
    let names: Vec<_> = files.iter().map(|(n, _)| n.clone()).collect();
    assert!(
        names.contains(&"fluxgate.db".to_owned()),
        "store files: {names:?}"
    );
    for secret in secrets {
        let (_, suffix) = secret.split_once('_').unwrap();
        let random = URL_SAFE_NO_PAD.decode(suffix).unwrap();
        for (name, bytes) in &files {
            assert!(
                !contains(bytes, secret.as_bytes()),
                "{name} contains a token string"
            );
            assert!(
                !contains(bytes, suffix.as_bytes()),
                "{name} contains a token's random part"
            );
            assert!(
                !contains(bytes, &random),
                "{name} contains a token's raw random bytes"
            );
        }
    }
    // Sanity check that the scan sees the data: every hash is somewhere.
    for hash in hashes {
        assert!(
            files.iter().any(|(_, bytes)| contains(bytes, hash)),
            "a token's SHA-512 hash is in none of {names:?}"
        );
    }
}

#[tokio::test]
async fn store_files_never_contain_token_strings() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TokenServer::start_in(tmp.path()).await;
    let mgmt = server.management_token.clone();
    let mut client = tokens_client(&server).await;

    let mut secrets = vec![mgmt.clone()];
    for i in 0..5 {
        let created = create_db_token(
            &mut client,
            &mgmt,
            &format!("db token {i}"),
            vec![db_perm(&format!("db{i}"), true, i % 2 == 0)],
            None,
        )
        .await;
        if i == 3 {
            client
                .revoke_database_token(bearer(
                    pb::RevokeTokenRequest {
                        id: id_of(&created),
                    },
                    &mgmt,
                ))
                .await
                .unwrap();
        }
        if i == 4 {
            client
                .update_database_token(bearer(
                    pb::UpdateDatabaseTokenRequest {
                        id: id_of(&created),
                        permissions: vec![db_perm("*", true, true)],
                        description: None,
                    },
                    &mgmt,
                ))
                .await
                .unwrap();
        }
        secrets.push(created.token);
    }
    for i in 0..3 {
        let created = client
            .create_management_token(bearer(
                pb::CreateManagementTokenRequest {
                    description: format!("admin {i}"),
                    expires_at: None,
                },
                &mgmt,
            ))
            .await
            .unwrap()
            .into_inner();
        secrets.push(created.token);
    }
    let hashes: Vec<Vec<u8>> = secrets
        .iter()
        .map(|s| Sha512::digest(s.as_bytes()).to_vec())
        .collect();

    // While running (WAL not yet checkpointed) and after a clean stop.
    assert_no_secret_in_store(tmp.path(), &secrets, &hashes);
    drop(client);
    server.stop().await;
    assert_no_secret_in_store(tmp.path(), &secrets, &hashes);
    // The only file holding a token is the bootstrap file, and only that one.
    let bootstrap = std::fs::read_to_string(tmp.path().join(BOOTSTRAP_FILE)).unwrap();
    assert_eq!(bootstrap.trim(), mgmt);
}

async fn revisions_continue_and_resume_across_a_restart(backend: Backend) {
    use fluxgate::proto::tokens::watch_token_changes_response::Event;

    let store = TestStore::new(backend).await;
    let server = TokenServer::start_over(&store).await;
    let (first, _) = server.database_token(&[("a", true, false)]).await;
    let proxy = server.proxy_token().await;
    let head = server.registry.head_revision();
    assert_eq!(head, 3, "bootstrap, the database token, the proxy token");
    server.stop().await;

    let server = TokenServer::start_over(&store).await;
    // The helper created one management token on this start: revision 4.
    assert_eq!(server.registry.head_revision(), head + 1);
    let mut client = tokens_client(&server).await;
    let mut stream = client
        .watch_token_changes(crate::bearer(
            pb::WatchTokenChangesRequest {
                after_revision: Some(1),
            },
            &proxy,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut messages = Vec::new();
    for _ in 0..4 {
        let m = tokio::time::timeout(crate::EVENT_DEADLINE, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        messages.push(m);
    }
    let Some(Event::Sync(sync)) = &messages[0].event else {
        panic!("sync first: {:?}", messages[0])
    };
    assert!(sync.resumed, "a revision from before the restart resumes");
    assert_eq!(sync.head_revision, head + 1);
    let Some(Event::Change(c)) = &messages[1].event else {
        panic!("change: {:?}", messages[1])
    };
    assert_eq!(
        (messages[1].revision, c.token_id.as_str()),
        (2, first.as_str())
    );
    let Some(Event::Change(c)) = &messages[2].event else {
        panic!("change: {:?}", messages[2])
    };
    assert_eq!(messages[2].revision, 3);
    assert_eq!(c.token_kind, pb::TokenKind::Proxy as i32);
    let Some(Event::Change(c)) = &messages[3].event else {
        panic!("change: {:?}", messages[3])
    };
    assert_eq!(messages[3].revision, 4);
    assert_eq!(c.token_kind, pb::TokenKind::Management as i32);
    drop(stream);
    drop(client);
    server.stop().await;
}

async fn bootstrap_never_overwrites_an_existing_file(backend: Backend) {
    use fluxgate::tokens::{TokenRegistry, server};

    let store = TestStore::new(backend).await;
    // An empty store, but a bootstrap file left from an earlier store.
    std::fs::write(store.dir.join(BOOTSTRAP_FILE), "fgmt_old\n").unwrap();
    let registry = TokenRegistry::open(store.open().await).await.unwrap();
    assert!(registry.is_empty());
    let result = server::bootstrap(&registry, &store.dir).await;
    let err = result.expect_err("an existing bootstrap file is never overwritten");
    assert!(err.to_string().contains(BOOTSTRAP_FILE), "{err}");
    assert_eq!(
        std::fs::read_to_string(store.dir.join(BOOTSTRAP_FILE)).unwrap(),
        "fgmt_old\n"
    );
    assert!(
        registry.is_empty(),
        "no management token nobody can read was created"
    );
}

crate::on_both_backends!(
    tokens_survive_a_restart,
    bootstrap_token_is_written_once_with_mode_0600,
    revisions_continue_and_resume_across_a_restart,
    bootstrap_never_overwrites_an_existing_file,
);
