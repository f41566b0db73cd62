//! When the token service cannot answer: fail closed, never cache the
//! error, and (only with `--stale-grace`) serve a recently stale allow —
//! never for a revoked token, never past the token's expiry.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fluxgate::authz::{AuthzError, Need};
use fluxgate::tokens::model::TokenKind;

use crate::common::capture::CaptureUpstream;
use crate::common::proxy::{ProxyServer, request, send};
use crate::{Env, GateAt, allowed, config, create, eventually, invalid};

/// Sleeps until `t` (to let a short TTL run out).
async fn until(t: Instant) {
    tokio::time::sleep_until(t.into()).await;
}

#[tokio::test]
async fn fails_closed_with_the_token_service_stopped() {
    let mut cfg = config();
    cfg.allow_ttl = Duration::from_millis(200);
    let mut env = Env::start(cfg, false).await;
    let upstream = CaptureUpstream::start().await;
    let proxy = ProxyServer::start(Arc::new(env.cache.clone()), &upstream.url()).await;
    let (_, cached) = create(env.tokens(), &[("db", true, true)], None).await;
    let (_, uncached) = create(env.tokens(), &[("db", true, true)], None).await;
    let write = |token: &str| {
        request(
            "POST",
            &proxy.url("/api/v2/write?bucket=db"),
            &[("authorization", &format!("Token {token}"))],
            "m v=1",
        )
    };
    assert_eq!(send(write(&cached)).await.status, 204);
    let warmed = Instant::now();
    assert_eq!(upstream.count(), 1);

    env.stop_tokens().await;

    // Not cached: nothing to decide with, nothing forwarded.
    assert!(matches!(
        env.check(&uncached, &[Need::write("db")]).await,
        Err(AuthzError::Unavailable(_))
    ));
    assert_eq!(send(write(&uncached)).await.status, 503);

    // Cached and fresh: still an allow (that is what the TTL is for).
    if warmed.elapsed() < Duration::from_millis(150) {
        assert!(allowed(&env.check(&cached, &[Need::write("db")]).await));
    }

    // Its TTL over: refused, no stale grace by default.
    until(warmed + Duration::from_millis(250)).await;
    assert!(env.check(&cached, &[Need::write("db")]).await.is_err());
    assert_eq!(send(write(&cached)).await.status, 503);
    assert_eq!(env.cache.stats().stale_served, 0);
    assert_eq!(upstream.count(), 1, "nothing forwarded without a decision");
}

#[tokio::test]
async fn errors_are_never_cached() {
    let mut env = Env::start(config(), false).await;
    let (_, token) = create(env.tokens(), &[("db", true, false)], None).await;
    env.stop_tokens().await;

    for n in 1..=2 {
        assert!(matches!(
            env.check(&token, &[Need::read("db")]).await,
            Err(AuthzError::Unavailable(_))
        ));
        assert_eq!(env.counting.calls(), n, "every failing check asks again");
    }

    env.restart_tokens().await;
    let result = env.check(&token, &[Need::read("db")]).await;
    assert!(allowed(&result), "the next call succeeds: {result:?}");
    assert_eq!(env.counting.calls(), 3);
    // And that answer is cached.
    assert!(allowed(&env.check(&token, &[Need::read("db")]).await));
    assert_eq!(env.counting.calls(), 3);
}

#[tokio::test]
async fn timeouts_are_never_cached() {
    let mut cfg = config();
    cfg.fetch_timeout = Duration::from_millis(200);
    let env = Env::start(cfg, false).await;
    let (_, token) = create(env.tokens(), &[("db", true, false)], None).await;
    env.counting.close(GateAt::Before);
    assert!(matches!(
        env.check(&token, &[Need::read("db")]).await,
        Err(AuthzError::Timeout)
    ));
    env.counting.open();
    assert!(allowed(&env.check(&token, &[Need::read("db")]).await));
    assert_eq!(env.counting.calls(), 2);
}

#[tokio::test]
async fn stale_grace_serves_recent_allows_only_and_never_revoked_or_expired_tokens() {
    const TTL: Duration = Duration::from_millis(300);
    const GRACE: Duration = Duration::from_secs(3);
    let mut cfg = config();
    cfg.allow_ttl = TTL;
    cfg.deny_ttl = TTL;
    cfg.stale_grace = Some(GRACE);
    let mut env = Env::start(cfg, true).await;
    let (_, kept) = create(env.tokens(), &[("db", true, false)], None).await;
    let (revoked_id, revoked) = create(env.tokens(), &[("db", true, false)], None).await;
    let expiry = SystemTime::now() + Duration::from_millis(1500);
    let expiry_instant = Instant::now() + Duration::from_millis(1500);
    let (_, expiring) = create(env.tokens(), &[("db", true, false)], Some(expiry)).await;

    let warmed = Instant::now();
    for t in [&kept, &revoked, &expiring] {
        assert!(allowed(&env.check(t, &[Need::read("db")]).await));
    }
    assert_eq!(env.counting.calls(), 3);

    env.tokens()
        .registry
        .revoke(&revoked_id, TokenKind::Database)
        .await
        .unwrap();
    let cache = env.cache.clone();
    eventually("the revocation reached the cache", || {
        cache.watch_status().invalidations >= 1
    })
    .await;
    env.stop_tokens().await;

    until(warmed + TTL + Duration::from_millis(100)).await;
    // Stale, within the grace, token service down: served and counted.
    assert!(allowed(&env.check(&kept, &[Need::read("db")]).await));
    assert_eq!(env.cache.stats().stale_served, 1);
    // Never for the revoked token.
    assert!(env.check(&revoked, &[Need::read("db")]).await.is_err());
    // The expiring token still within its life: served.
    if Instant::now() + Duration::from_millis(100) < expiry_instant {
        assert!(allowed(&env.check(&expiring, &[Need::read("db")]).await));
    }

    // Past the token's expiry: never, even within the grace.
    until(expiry_instant + Duration::from_millis(50)).await;
    assert!(env.check(&expiring, &[Need::read("db")]).await.is_err());
    if Instant::now() + Duration::from_millis(100) < warmed + TTL + GRACE {
        assert!(allowed(&env.check(&kept, &[Need::read("db")]).await));
    }

    // Past the grace: refused.
    until(warmed + TTL + GRACE + Duration::from_millis(50)).await;
    assert!(env.check(&kept, &[Need::read("db")]).await.is_err());

    // Once the service is back, answers are fresh again.
    env.restart_tokens().await;
    let result = env.check(&revoked, &[Need::read("db")]).await;
    assert!(invalid(&result), "{result:?}");
}
