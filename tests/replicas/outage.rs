//! PostgreSQL stopped under running replicas: writes refused, reads served,
//! readiness dropped, recovery without a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxgate::authz::cache::{CacheConfig, CachedAuthorizer};
use fluxgate::authz::client::{AuthzClient, ProxyCredential};
use fluxgate::proto::tokens as pb;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::common::postgres::PgCluster;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_outage_refuses_writes_serves_reads_drops_readiness_and_recovers() {
    let mut cluster = PgCluster::start();
    let root = tempfile::tempdir().unwrap();
    let database = cluster.database().await;
    let extra = ["--store-stale-after", "2s"];
    let mut a = Replica::spawn(&cluster, &database, root.path(), "a", &extra);
    let mut b = Replica::spawn(&cluster, &database, root.path(), "b", &extra);
    a.wait();
    b.wait();
    let admin = a.bootstrap_token().or_else(|| b.bootstrap_token()).unwrap();
    wait_for_admin(&[&a, &b], &admin).await;
    let mut manage_a = a.tokens().await;
    let (id, token) = create(&mut manage_a, &admin, "db").await;
    let mut authz_b = b.authz().await;
    eventually("the token reaches b", DEADLINE, || {
        let mut c = authz_b.clone();
        let token = token.clone();
        async move { may_write(&mut c, &token, "db").await }
    })
    .await;
    assert_eq!(a.readyz().await.0, 200);
    assert_eq!(b.health().await, ServingStatus::Serving);

    // A proxy following a across the outage.
    let proxy = proxy_token(&mut manage_a, &admin).await;
    let cache = CachedAuthorizer::new(
        Arc::new(
            AuthzClient::new(a.endpoint(), Duration::from_secs(2))
                .with_credential(ProxyCredential::new(&proxy)),
        ),
        CacheConfig::default(),
    );
    let stop = CancellationToken::new();
    let _follower = cache.follow_with(a.endpoint(), follow_options(&proxy), stop.clone());
    eventually("the proxy follows a", DEADLINE, || {
        let connected = cache.watch_status().connected;
        async move { connected }
    })
    .await;

    cluster.stop();

    // Writes: refused with UNAVAILABLE and a message that says why.
    let refused = manage_a
        .create_database_token(bearer(
            pb::CreateDatabaseTokenRequest {
                description: "during the outage".into(),
                permissions: vec![pb::DatabasePermission {
                    database: "db".into(),
                    read: true,
                    write: false,
                }],
                expires_at: None,
            },
            &admin,
        ))
        .await
        .expect_err("no write without the store");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("token store")
            && refused.message().contains("nothing was changed"),
        "{refused:?}"
    );
    let mut manage_b = b.tokens().await;
    let refused = manage_b
        .revoke_database_token(bearer(pb::RevokeTokenRequest { id: id.clone() }, &admin))
        .await
        .expect_err("no revoke without the store");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    // Reads: answered from memory.
    assert!(may_write(&mut authz_b, &token, "db").await);
    let mut authz_a = a.authz().await;
    assert!(may_write(&mut authz_a, &token, "db").await);
    manage_b
        .list_database_tokens(bearer(pb::ListTokensRequest::default(), &admin))
        .await
        .expect("listing is answered from memory");

    // Readiness drops once the store has not been read for 2 s.
    for r in [&a, &b] {
        eventually("readiness drops", DEADLINE, || async {
            r.readyz().await.0 == 503
        })
        .await;
        let (_, body) = r.readyz().await;
        assert!(body.contains("token store"), "{body}");
        eventually("health reports NOT_SERVING", DEADLINE, || async {
            r.health().await == ServingStatus::NotServing
        })
        .await;
    }
    assert!(
        may_write(&mut authz_a, &token, "db").await,
        "still answering"
    );

    cluster.restart();

    // Recovery without a restart.
    for r in [&a, &b] {
        eventually("ready again", DEADLINE, || async {
            r.readyz().await.0 == 200
        })
        .await;
        eventually("health reports SERVING", DEADLINE, || async {
            r.health().await == ServingStatus::Serving
        })
        .await;
    }
    let manage_b = b.tokens().await;
    eventually("writes work again", DEADLINE, || {
        let mut m = manage_b.clone();
        let (admin, id) = (admin.clone(), id.clone());
        async move {
            m.revoke_database_token(bearer(pb::RevokeTokenRequest { id }, &admin))
                .await
                .is_ok()
        }
    })
    .await;
    let revoked_at = Instant::now();
    eventually("a revoke on b reaches a (LISTEN again)", DEADLINE, || {
        let mut c = authz_a.clone();
        let token = token.clone();
        async move { !may_write(&mut c, &token, "db").await }
    })
    .await;
    eprintln!(
        "after recovery, a revoke on b reached a in {:?}",
        revoked_at.elapsed()
    );
    // The proxy's stream to a never broke: nothing was flushed.
    let status = cache.watch_status();
    assert_eq!((status.flushes, status.syncs), (1, 1), "{status:?}");
    drop(manage_a);
    drop(manage_b);
    stop.cancel();
}
