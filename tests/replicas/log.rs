//! One change log for every replica: gapless revisions in commit order,
//! the same stream from each, revocations everywhere within a second, one
//! bootstrap token when replicas start together.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fluxgate::proto::tokens as pb;
use fluxgate::proto::tokens::token_service_client::TokenServiceClient;

use crate::common::postgres::PgCluster;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_creates_over_three_replicas_share_one_gapless_log() {
    let cluster = PgCluster::shared();
    let root = tempfile::tempdir().unwrap();
    let (replicas, admin) = three_replicas(cluster, root.path(), &[]).await;

    let mut creates = Vec::new();
    for i in 0..50 {
        let url = replicas[i % 3].url();
        let admin = admin.clone();
        creates.push(tokio::spawn(async move {
            let mut client = TokenServiceClient::connect(url).await.unwrap();
            create(&mut client, &admin, &format!("db{i}")).await
        }));
    }
    let mut created = Vec::new();
    for c in creates {
        created.push(c.await.unwrap());
    }

    // The same 52 changes (the bootstrap token, the 50, then the proxy
    // token), revisions 1 to 52 with no gap, on every replica.
    let proxy = proxy_token(&mut replicas[0].tokens().await, &admin).await;
    let mut logs = Vec::new();
    for r in &replicas {
        logs.push(log_of(r, &proxy, 0, 52).await);
    }
    let revisions: Vec<u64> = logs[0].iter().map(|c| c.0).collect();
    assert_eq!(revisions, (1..=52).collect::<Vec<_>>(), "gapless, in order");
    assert_eq!(logs[0], logs[1], "replica b streams the same log");
    assert_eq!(logs[0], logs[2], "replica c streams the same log");
    let ids: HashSet<&String> = logs[0].iter().map(|c| &c.1).collect();
    for (id, _) in &created {
        assert!(ids.contains(id), "{id} is in the log");
    }

    // Every token authorizes on every replica.
    for r in &replicas {
        let mut client = r.authz().await;
        for (i, (_, token)) in created.iter().enumerate() {
            let db = format!("db{i}");
            let mut c = client.clone();
            eventually("the token authorizes on every replica", DEADLINE, || {
                let mut c = c.clone();
                let (token, db) = (token.clone(), db.clone());
                async move { may_write(&mut c, &token, &db).await }
            })
            .await;
            assert!(!may_write(&mut c, token, "other").await);
            client = c;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoke_on_one_replica_is_refused_by_the_others_within_a_second() {
    let cluster = PgCluster::shared();
    let root = tempfile::tempdir().unwrap();
    let (replicas, admin) = three_replicas(cluster, root.path(), &[]).await;
    let mut manage = replicas[0].tokens().await;
    let mut b = replicas[1].authz().await;
    let mut c = replicas[2].authz().await;
    let mut slowest = Duration::ZERO;
    for round in 0..20 {
        let (id, token) = create(&mut manage, &admin, "db").await;
        for client in [&b, &c] {
            let client = client.clone();
            let token = token.clone();
            eventually("a new token reaches every replica", DEADLINE, move || {
                let mut client = client.clone();
                let token = token.clone();
                async move { may_write(&mut client, &token, "db").await }
            })
            .await;
        }
        revoke(&mut manage, &admin, &id).await;
        let revoked_at = Instant::now();
        for client in [&mut b, &mut c] {
            while may_write(client, &token, "db").await {
                assert!(
                    revoked_at.elapsed() < REVOCATION_BOUND,
                    "round {round}: a replica still allowed a token revoked {:?} ago",
                    revoked_at.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        slowest = slowest.max(revoked_at.elapsed());
    }
    eprintln!("slowest cross-replica revocation: {slowest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_starting_together_on_an_empty_store_create_one_bootstrap_token() {
    let cluster = PgCluster::shared();
    for round in 0..3 {
        let root = tempfile::tempdir().unwrap();
        let database = cluster.database().await;
        let mut replicas: Vec<Replica> = ["a", "b"]
            .iter()
            .map(|n| Replica::spawn(cluster, &database, root.path(), n, &[]))
            .collect();
        for r in &mut replicas {
            r.wait();
        }
        let written: Vec<String> = replicas
            .iter()
            .filter_map(Replica::bootstrap_token)
            .collect();
        assert_eq!(written.len(), 1, "round {round}: one bootstrap file");
        let tokens = cluster.query(&database, "SELECT kind FROM tokens").await;
        assert_eq!(
            tokens,
            vec!["management"],
            "round {round}: one token in the store"
        );
        let log = cluster
            .query(&database, "SELECT revision FROM changes")
            .await;
        assert_eq!(log, vec!["1"], "round {round}");
        // Both replicas accept it.
        for r in &replicas {
            let mut client = r.tokens().await;
            eventually(
                "the bootstrap token works on every replica",
                DEADLINE,
                || {
                    let mut client = client.clone();
                    let admin = written[0].clone();
                    async move {
                        client
                            .list_management_tokens(bearer(
                                pb::ListTokensRequest::default(),
                                &admin,
                            ))
                            .await
                            .is_ok()
                    }
                },
            )
            .await;
            client = client.clone();
            drop(client);
        }
    }
}
