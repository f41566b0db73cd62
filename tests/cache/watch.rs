//! Invalidation and lifetimes: revocations and permission changes pushed
//! through the change stream, the answer-in-flight race, resume and flush
//! across token-service restarts, the expiry bound, the disconnected TTL,
//! and readiness.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fluxgate::authz::{Authorizer, Need, NeedDecision};
use fluxgate::tokens::model::{DatabasePermission, TokenKind};
use fluxgate::tokens::{SqliteStore, TokenRegistry};

use crate::{Env, GateAt, allowed, config, create, eventually, invalid, tok};

#[tokio::test]
async fn a_revocation_invalidates_the_cached_allow() {
    let env = Env::start(config(), true).await;
    let (id, token) = create(env.tokens(), &[("db", true, false)], None).await;
    assert!(allowed(&env.check(&token, &[Need::read("db")]).await));
    assert!(allowed(&env.check(&token, &[Need::read("db")]).await));
    assert_eq!(env.counting.calls(), 1);

    env.tokens()
        .registry
        .revoke(&id, TokenKind::Database)
        .await
        .unwrap();
    env.caught_up().await;
    assert!(invalid(&env.check(&token, &[Need::read("db")]).await));
    assert_eq!(env.counting.calls(), 2);
}

#[tokio::test]
async fn a_permission_change_invalidates_allows_and_denies() {
    let env = Env::start(config(), true).await;
    let (id, token) = create(env.tokens(), &[("a", true, false)], None).await;
    let v = env
        .check(&token, &[Need::read("a"), Need::read("b")])
        .await
        .unwrap();
    assert!(matches!(v.decisions[0], NeedDecision::Allowed { .. }));
    assert!(matches!(v.decisions[1], NeedDecision::Forbidden { .. }));

    env.tokens()
        .registry
        .update(
            &id,
            vec![DatabasePermission {
                database: "b".into(),
                read: true,
                write: false,
            }],
            None,
        )
        .await
        .unwrap();
    env.caught_up().await;
    let v = env
        .check(&token, &[Need::read("a"), Need::read("b")])
        .await
        .unwrap();
    assert!(matches!(v.decisions[0], NeedDecision::Forbidden { .. }));
    assert!(matches!(v.decisions[1], NeedDecision::Allowed { .. }));
    assert_eq!(env.counting.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_in_flight_during_a_revocation_is_neither_cached_nor_served() {
    let env = Env::start(config(), true).await;
    let (id, token) = create(env.tokens(), &[("db", true, false)], None).await;
    env.caught_up().await;
    // The allow arrives, but is held until the revocation was processed.
    env.counting.close(GateAt::After);
    let check = {
        let cache = env.cache.clone();
        let token = token.clone();
        tokio::spawn(async move { cache.check(&tok(&token), &[Need::read("db")]).await })
    };
    let counting = env.counting.clone();
    eventually("the allow was answered", || counting.answered() == 1).await;
    env.tokens()
        .registry
        .revoke(&id, TokenKind::Database)
        .await
        .unwrap();
    env.caught_up().await;
    env.counting.open();

    let result = check.await.unwrap();
    assert!(
        invalid(&result),
        "asked again after the revocation: {result:?}"
    );
    assert_eq!(env.counting.calls(), 2);
    assert!(invalid(&env.check(&token, &[Need::read("db")]).await));
    assert_eq!(env.counting.calls(), 2);
}

#[tokio::test]
async fn the_follower_resumes_after_a_restart_and_misses_nothing() {
    let mut env = Env::start(config(), true).await;
    let (_, kept) = create(env.tokens(), &[("db", true, false)], None).await;
    let (revoked_id, revoked) = create(env.tokens(), &[("db", true, false)], None).await;
    for t in [&kept, &revoked] {
        assert!(allowed(&env.check(t, &[Need::read("db")]).await));
    }
    env.caught_up().await;
    let before = env.cache.watch_status();
    assert_eq!(before.flushes, 1, "the first sync flushes");

    // Revoked while the token service is down: only the log knows.
    env.stop_tokens().await;
    let cache = env.cache.clone();
    eventually("the follower notices", || !cache.watch_status().connected).await;
    {
        let store = SqliteStore::open(env.data_dir()).await.unwrap();
        let registry = TokenRegistry::open(Arc::new(store)).await.unwrap();
        registry
            .revoke(&revoked_id, TokenKind::Database)
            .await
            .unwrap();
    }
    env.restart_tokens().await;
    eventually("the follower reconnects", || {
        let s = cache.watch_status();
        s.connected && s.syncs == before.syncs + 1
    })
    .await;
    env.caught_up().await;

    let after = env.cache.watch_status();
    assert_eq!(after.flushes, before.flushes, "resumed, not flushed");
    assert_eq!(after.invalidations, before.invalidations + 1);
    assert!(allowed(&env.check(&kept, &[Need::read("db")]).await));
    assert_eq!(env.counting.calls(), 2, "the other token's entry survived");
    assert!(invalid(&env.check(&revoked, &[Need::read("db")]).await));
    assert_eq!(env.counting.calls(), 3);
}

#[tokio::test]
async fn the_cache_is_flushed_when_the_stream_cannot_resume() {
    let mut env = Env::start(config(), true).await;
    let (_, token) = create(env.tokens(), &[("db", true, false)], None).await;
    assert!(allowed(&env.check(&token, &[Need::read("db")]).await));
    env.caught_up().await;
    let before = env.cache.watch_status();

    // A token service with no history: the old revision means nothing.
    let _fresh = env.replace_tokens().await;
    let cache = env.cache.clone();
    eventually("the follower resyncs", || {
        let s = cache.watch_status();
        s.connected && s.syncs == before.syncs + 1
    })
    .await;
    assert_eq!(env.cache.watch_status().flushes, before.flushes + 1);
    // The new service does not know the token; the flushed allow is gone.
    assert!(invalid(&env.check(&token, &[Need::read("db")]).await));
    assert_eq!(env.counting.calls(), 2);
}

#[tokio::test]
async fn a_cached_allow_never_outlives_the_token() {
    // Not following: the expiry event cannot help, only the bound can.
    let env = Env::start(config(), false).await;
    let expires_in = Duration::from_secs(1);
    let expiry = Instant::now() + expires_in;
    let (_, token) = create(
        env.tokens(),
        &[("db", true, false)],
        Some(SystemTime::now() + expires_in),
    )
    .await;
    assert!(allowed(&env.check(&token, &[Need::read("db")]).await));
    assert!(allowed(&env.check(&token, &[Need::read("db")]).await));
    assert_eq!(env.counting.calls(), 1, "allow TTL 60 s: cached");

    tokio::time::sleep_until((expiry + Duration::from_millis(20)).into()).await;
    let result = env.check(&token, &[Need::read("db")]).await;
    let late = expiry.elapsed();
    assert!(
        invalid(&result),
        "refused {late:?} after expiry: {result:?}"
    );
    assert_eq!(env.counting.calls(), 2);
}

#[tokio::test]
async fn without_the_stream_entries_live_only_the_disconnected_ttl() {
    let mut cfg = config();
    cfg.disconnected_ttl = Duration::from_millis(200);
    let env = Env::start(cfg.clone(), false).await;
    let (_, token) = create(env.tokens(), &[("db", true, false)], None).await;
    let warmed = Instant::now();
    assert!(allowed(&env.check(&token, &[Need::read("db")]).await));
    tokio::time::sleep_until((warmed + Duration::from_millis(250)).into()).await;
    assert!(allowed(&env.check(&token, &[Need::read("db")]).await));
    assert_eq!(env.counting.calls(), 2, "expired after the short TTL");

    // Connected, the same settings keep the allow for its full TTL.
    let env = Env::start(cfg, true).await;
    let (_, token) = create(env.tokens(), &[("db", true, false)], None).await;
    let warmed = Instant::now();
    assert!(allowed(&env.check(&token, &[Need::read("db")]).await));
    tokio::time::sleep_until((warmed + Duration::from_millis(250)).into()).await;
    assert!(allowed(&env.check(&token, &[Need::read("db")]).await));
    assert_eq!(env.counting.calls(), 1);
}

#[tokio::test]
async fn ready_needs_the_token_service_and_the_stream_or_stale_grace() {
    let mut env = Env::start(config(), false).await;
    assert!(env.cache.ready().await.is_err(), "not following");

    let followed = Env::start(config(), true).await;
    assert_eq!(followed.cache.ready().await, Ok(()));

    let mut cfg = config();
    cfg.stale_grace = Some(Duration::from_secs(30));
    let graced = Env::start(cfg, false).await;
    assert_eq!(graced.cache.ready().await, Ok(()));

    env.stop_tokens().await;
    assert!(env.cache.ready().await.is_err(), "token service down");
}
