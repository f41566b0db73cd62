//! Clients of several replicas: a proxy (Authorize and the change stream)
//! and the CLI move to another replica when theirs is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxgate::authz::cache::{CacheConfig, CachedAuthorizer};
use fluxgate::authz::client::{AuthzClient, ProxyCredential};
use fluxgate::authz::failover::AuthzEndpoints;
use fluxgate::authz::{Authorizer as _, CacheUse, Need, NeedDecision};
use fluxgate::credentials::Token;
use tokio_util::sync::CancellationToken;

use crate::common::binary::free_port;
use crate::common::postgres::PgCluster;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proxy_moves_to_another_replica_without_flushing_its_cache() {
    let cluster = PgCluster::shared();
    let root = tempfile::tempdir().unwrap();
    let (mut replicas, admin) = three_replicas(cluster, root.path(), &[]).await;
    let mut manage_c = replicas[2].tokens().await;
    let (id, token) = create(&mut manage_c, &admin, "db").await;
    let (_, other_token) = create(&mut manage_c, &admin, "db").await;
    // Both tokens known to a and b before the proxy asks (an early answer
    // would be cached as a refusal).
    for r in &replicas[..2] {
        let client = r.authz().await;
        for t in [&token, &other_token] {
            eventually("the tokens reach a and b", DEADLINE, || {
                let mut c = client.clone();
                let t = t.clone();
                async move { may_write(&mut c, &t, "db").await }
            })
            .await;
        }
    }

    // The proxy's side, as `fluxgate proxy --authz A,B --authz-token-file`
    // builds it.
    let proxy = proxy_token(&mut manage_c, &admin).await;
    let endpoints = AuthzEndpoints::new(vec![replicas[0].endpoint(), replicas[1].endpoint()]);
    let cache = CachedAuthorizer::new(
        Arc::new(
            AuthzClient::new(endpoints.clone(), Duration::from_secs(2))
                .with_credential(ProxyCredential::new(&proxy)),
        ),
        CacheConfig {
            allow_ttl: Duration::from_secs(300),
            deny_ttl: Duration::from_secs(300),
            disconnected_ttl: Duration::from_secs(300),
            ..CacheConfig::default()
        },
    );
    let stop = CancellationToken::new();
    let _follower = cache.follow_with(endpoints, follow_options(&proxy), stop.clone());
    eventually("the proxy follows replica a", DEADLINE, || {
        let connected = cache.watch_status().connected;
        async move { connected }
    })
    .await;
    let before = cache.watch_status();
    assert_eq!((before.syncs, before.flushes), (1, 1), "{before:?}");

    let token = Token::new(token.into_bytes()).unwrap();
    let needs = [Need::write("db")];
    let allowed = |v: &fluxgate::authz::Verdict| {
        matches!(v.decisions.as_slice(), [NeedDecision::Allowed { .. }])
    };
    let first = cache.check(&token, &needs).await.unwrap();
    assert!(allowed(&first) && first.cache == CacheUse::Miss);
    let hit = cache.check(&token, &needs).await.unwrap();
    assert!(allowed(&hit) && hit.cache == CacheUse::Hit);

    replicas[0].kill();
    eventually("the proxy follows replica b", DEADLINE, || {
        let status = cache.watch_status();
        async move { status.connected && status.syncs == 2 }
    })
    .await;
    let after = cache.watch_status();
    assert_eq!(after.flushes, 1, "resumed on b without flushing: {after:?}");
    let hit = cache.check(&token, &needs).await.unwrap();
    assert!(allowed(&hit), "the cached allow is kept");
    assert_eq!(hit.cache, CacheUse::Hit, "served from the kept cache");

    // Authorize itself fails over too: an uncached token is asked of b.
    let other = Token::new(other_token.into_bytes()).unwrap();
    let fresh = cache
        .check(&other, &needs)
        .await
        .expect("answered by replica b");
    assert!(allowed(&fresh) && fresh.cache == CacheUse::Miss);

    // And the stream from b carries revocations made on c.
    let revoked_at = Instant::now();
    revoke(&mut manage_c, &admin, &id).await;
    eventually(
        "the revoke reaches the proxy through replica b",
        REVOCATION_BOUND * 2,
        || {
            let cache = cache.clone();
            let token = token.clone();
            let needs = needs.clone();
            async move {
                cache
                    .check(&token, &needs)
                    .await
                    .is_ok_and(|v| matches!(v.decisions.as_slice(), [NeedDecision::InvalidToken]))
            }
        },
    )
    .await;
    eprintln!(
        "revoke on c refused by the proxy following b after {:?}",
        revoked_at.elapsed()
    );
    assert_eq!(cache.watch_status().flushes, 1);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_uses_the_first_replica_that_answers() {
    let cluster = PgCluster::shared();
    let root = tempfile::tempdir().unwrap();
    let (mut replicas, admin) = three_replicas(cluster, root.path(), &[]).await;
    let token_file = root.path().join("admin-token");
    std::fs::write(&token_file, format!("{admin}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    replicas[0].kill();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let list = format!("{dead},{},{}", replicas[0].url(), replicas[1].url());
    let cli = |args: &[&str]| {
        std::process::Command::new(crate::common::binary::binary())
            .args(args)
            .args([
                "--authz",
                &list,
                "--token-file",
                token_file.to_str().unwrap(),
            ])
            .env_remove("FLUXGATE_AUTHZ")
            .env_remove("FLUXGATE_TOKEN")
            .output()
            .unwrap()
    };
    let created = cli(&[
        "token",
        "create",
        "--write-database",
        "db",
        "--format",
        "json",
        "via the list",
    ]);
    let stderr = String::from_utf8_lossy(&created.stderr);
    assert!(created.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    assert!(json["token"].as_str().unwrap().starts_with("fgdb_"));
    // Every replica is down: one message naming each.
    replicas[1].kill();
    replicas[2].kill();
    let list = format!("{dead},{}", replicas[1].url());
    let failed = std::process::Command::new(crate::common::binary::binary())
        .args([
            "token",
            "list",
            "--authz",
            &list,
            "--token-file",
            token_file.to_str().unwrap(),
        ])
        .env_remove("FLUXGATE_AUTHZ")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(5), "unavailable: {stderr}");
    assert!(
        stderr.contains("cannot reach any token service replica")
            && stderr.contains(&dead)
            && stderr.contains(&replicas[1].url()),
        "{stderr}"
    );
}
