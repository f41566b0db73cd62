//! The three outage scenarios of issue 18 (finding 2): what a proxy serves
//! while its change stream is down, and when it comes back to another
//! token store.
//!
//! 1. An allow cached before the stream broke is not served past
//!    `--cache-disconnected-allow-ttl` (counted from its fetch).
//! 2. A token revoked during the outage, which the proxy cannot learn of,
//!    is served stale at most `--stale-grace` after the stream broke.
//! 3. A token service that comes back over a different store (another
//!    store id), even one whose revisions are at or past the proxy's, gets
//!    the cache flushed before anything is served.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxgate::authz::{AuthzError, Need};
use fluxgate::tokens::model::TokenKind;
use fluxgate::tokens::{SqliteStore, TokenRegistry};

use crate::common::capture::CaptureUpstream;
use crate::common::proxy::{ProxyServer, request, send};
use crate::{Env, allowed, config, create, eventually, invalid};

/// Stops the token service and returns once the follower noticed, with the
/// moment it did (the stream broke at or before it).
async fn outage(env: &mut Env) -> Instant {
    env.stop_tokens().await;
    let cache = env.cache.clone();
    eventually("the follower notices the outage", || {
        !cache.watch_status().connected
    })
    .await;
    Instant::now()
}

#[tokio::test]
async fn a_pre_outage_allow_is_not_served_past_the_disconnected_ttl() {
    const DISCONNECTED: Duration = Duration::from_millis(300);
    let mut cfg = config();
    cfg.allow_ttl = Duration::from_secs(60);
    cfg.disconnected_ttl = DISCONNECTED;
    let mut env = Env::start(cfg, true).await;
    let upstream = CaptureUpstream::start().await;
    let proxy = ProxyServer::start(Arc::new(env.cache.clone()), &upstream.url()).await;
    let (_, token) = create(env.tokens(), &[("db", false, true)], None).await;
    let write = || {
        request(
            "POST",
            &proxy.url("/api/v2/write?bucket=db"),
            &[("authorization", &format!("Token {token}"))],
            "m v=1",
        )
    };
    assert_eq!(send(write()).await.status, 204);
    let fetched = Instant::now();
    assert_eq!(send(write()).await.status, 204);
    assert_eq!(env.counting.calls(), 1, "a 60 s allow while connected");

    outage(&mut env).await;
    // Past the disconnected TTL from its fetch: no longer served, though its
    // own TTL has 59 s to go. The token service is down: 503, nothing sent.
    tokio::time::sleep_until((fetched + DISCONNECTED + Duration::from_millis(50)).into()).await;
    assert!(matches!(
        env.check(&token, &[Need::write("db")]).await,
        Err(AuthzError::Unavailable(_))
    ));
    assert_eq!(send(write()).await.status, 503);
    assert_eq!(upstream.count(), 2, "nothing forwarded without a decision");

    // Back and caught up: the entry, never evicted, is served again.
    env.restart_tokens().await;
    let cache = env.cache.clone();
    eventually("the follower reconnects", || cache.watch_status().connected).await;
    let calls = env.counting.calls();
    assert!(allowed(&env.check(&token, &[Need::write("db")]).await));
    assert_eq!(env.counting.calls(), calls, "a hit again");
}

#[tokio::test]
async fn a_revocation_during_an_outage_is_served_at_most_the_stale_grace_after_the_break() {
    const GRACE: Duration = Duration::from_millis(1500);
    let mut cfg = config();
    cfg.allow_ttl = Duration::from_secs(60);
    cfg.disconnected_ttl = Duration::from_millis(200);
    cfg.stale_grace = Some(GRACE);
    let mut env = Env::start(cfg, true).await;
    let (id, token) = create(env.tokens(), &[("db", true, false)], None).await;
    assert!(allowed(&env.check(&token, &[Need::read("db")]).await));
    env.caught_up().await;

    let noticed = outage(&mut env).await;
    // Revoked while the proxy cannot hear of it: only the store knows.
    {
        let store = SqliteStore::open(env.data_dir()).await.unwrap();
        let registry = TokenRegistry::open(Arc::new(store)).await.unwrap();
        registry.revoke(&id, TokenKind::Database).await.unwrap();
    }
    // Within the grace: the stale allow is served (the documented trade).
    tokio::time::sleep(Duration::from_millis(250)).await;
    if noticed.elapsed() < GRACE - Duration::from_millis(200) {
        assert!(allowed(&env.check(&token, &[Need::read("db")]).await));
        assert!(env.cache.stats().stale_served >= 1);
    }
    // Past the grace counted from the break (not from the entry's 60 s TTL):
    // refused, 503-style, though the entry is still in the cache.
    tokio::time::sleep_until((noticed + GRACE + Duration::from_millis(50)).into()).await;
    let result = env.check(&token, &[Need::read("db")]).await;
    assert!(
        matches!(result, Err(AuthzError::Unavailable(_))),
        "{:?} after the stream broke: {result:?}",
        noticed.elapsed()
    );

    // Back: the revocation is replayed and the token refused for good.
    env.restart_tokens().await;
    let cache = env.cache.clone();
    eventually("the follower reconnects", || cache.watch_status().connected).await;
    assert!(invalid(&env.check(&token, &[Need::read("db")]).await));
}

#[tokio::test]
async fn a_swapped_store_is_flushed_before_serving() {
    let mut env = Env::start_with(config(), true, Some("store-a")).await;
    let (_, token) = create(env.tokens(), &[("db", false, true)], None).await;
    assert!(allowed(&env.check(&token, &[Need::write("db")]).await));
    env.caught_up().await;
    let before = env.cache.watch_status();
    let last = before.revision.unwrap();

    // Another store, further along than the proxy's revision: the resume
    // request succeeds (resumed = true), which alone would keep the cache.
    let _b = env
        .replace_tokens_with(Some("store-b"), last as usize + 5)
        .await;
    assert!(env.tokens().registry.head_revision() > last);
    let cache = env.cache.clone();
    eventually("the follower syncs with the other store", || {
        let s = cache.watch_status();
        s.connected && s.syncs == before.syncs + 1
    })
    .await;
    assert_eq!(env.cache.watch_status().flushes, before.flushes + 1);
    // The token, unknown to store B, is asked again and refused.
    let calls = env.counting.calls();
    assert!(invalid(&env.check(&token, &[Need::write("db")]).await));
    assert_eq!(env.counting.calls(), calls + 1);
}

#[tokio::test]
async fn an_unknown_store_id_does_not_flush_a_resumed_stream() {
    // Empty ids (servers that predate them) are "unknown": a restart of the
    // same store resumes without a flush, as before.
    let mut env = Env::start(config(), true).await;
    let (_, token) = create(env.tokens(), &[("db", false, true)], None).await;
    assert!(allowed(&env.check(&token, &[Need::write("db")]).await));
    env.caught_up().await;
    let before = env.cache.watch_status();
    env.restart_tokens().await;
    let cache = env.cache.clone();
    eventually("the follower resumes", || {
        let s = cache.watch_status();
        s.connected && s.syncs == before.syncs + 1
    })
    .await;
    assert_eq!(env.cache.watch_status().flushes, before.flushes);
    let calls = env.counting.calls();
    assert!(allowed(&env.check(&token, &[Need::write("db")]).await));
    assert_eq!(env.counting.calls(), calls, "kept");
}
