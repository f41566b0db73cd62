//! Hits, one call for several needs, coalescing of concurrent misses, a
//! caller dropped mid-check, invalid tokens, and the metrics.

use std::sync::Arc;

use fluxgate::authz::{Authorizer, Need, NeedDecision};

use crate::{Env, GateAt, allowed, config, create, eventually, invalid, tok};

#[tokio::test]
async fn a_hit_costs_no_call_and_missing_needs_go_out_together() {
    let env = Env::start(config(), false).await;
    let (id, token) = create(env.tokens(), &[("a", true, true), ("b", true, false)], None).await;

    let v = env
        .check(&token, &[Need::read("a"), Need::write("a")])
        .await
        .unwrap();
    assert_eq!(
        v.decisions,
        vec![
            NeedDecision::Allowed {
                subject: Arc::from(id.as_str())
            };
            2
        ]
    );
    assert_eq!(env.counting.calls(), 1);

    // One hit, one miss (b, forbidden for write): one call, for b only.
    let v = env
        .check(&token, &[Need::read("a"), Need::write("b")])
        .await
        .unwrap();
    assert_eq!(
        v.decisions[1],
        NeedDecision::Forbidden {
            subject: Arc::from(id.as_str())
        }
    );
    assert_eq!(env.counting.calls(), 2);
    assert_eq!(env.counting.needs()[1], vec![Need::write("b")]);
    assert_eq!(v.cache, fluxgate::authz::CacheUse::Miss);

    // Everything cached now, including the forbidden answer.
    for _ in 0..10 {
        let v = env
            .check(&token, &[Need::write("b"), Need::write("a")])
            .await
            .unwrap();
        assert!(matches!(v.decisions[0], NeedDecision::Forbidden { .. }));
        assert!(matches!(v.decisions[1], NeedDecision::Allowed { .. }));
        assert_eq!(v.cache, fluxgate::authz::CacheUse::Hit);
    }
    assert_eq!(env.counting.calls(), 2);
    let stats = env.cache.stats();
    assert_eq!(stats.misses, 3);
    assert_eq!(stats.hits, 1 + 20);
    assert_eq!(stats.inner_calls, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_misses_make_one_call() {
    const N: usize = 50;
    let env = Env::start(config(), false).await;
    let (_, token) = create(env.tokens(), &[("db", true, false)], None).await;
    env.counting.close(GateAt::Before);

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..N {
        let cache = env.cache.clone();
        let token = token.clone();
        tasks.spawn(async move { cache.check(&tok(&token), &[Need::read("db")]).await });
    }
    // Every caller is waiting on the one call before it may proceed.
    let cache = env.cache.clone();
    eventually("49 callers joined the call in flight", || {
        cache.stats().coalesced == (N - 1) as u64
    })
    .await;
    assert_eq!(env.counting.calls(), 1);
    env.counting.open();

    while let Some(result) = tasks.join_next().await {
        assert!(allowed(&result.unwrap()));
    }
    assert_eq!(env.counting.calls(), 1, "exactly one Authorize call");
    let stats = env.cache.stats();
    assert_eq!(stats.misses, N as u64);
    assert_eq!(stats.coalesced, (N - 1) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_dropped_mid_check_neither_poisons_nor_stalls_the_entry() {
    let env = Env::start(config(), false).await;
    let (_, token) = create(env.tokens(), &[("db", true, false)], None).await;
    env.counting.close(GateAt::Before);

    // The first caller starts the call, then goes away (client disconnect).
    let first = {
        let cache = env.cache.clone();
        let token = token.clone();
        tokio::spawn(async move { cache.check(&tok(&token), &[Need::read("db")]).await })
    };
    let counting = env.counting.clone();
    eventually("the call is in flight", || counting.entered() == 1).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());

    // A second caller joins the same call and gets its answer.
    let second = {
        let cache = env.cache.clone();
        let token = token.clone();
        tokio::spawn(async move { cache.check(&tok(&token), &[Need::read("db")]).await })
    };
    let cache = env.cache.clone();
    eventually("the second caller joined", || cache.stats().coalesced == 1).await;
    env.counting.open();
    let result = tokio::time::timeout(crate::DEADLINE, second)
        .await
        .expect("the second caller is not stalled")
        .unwrap();
    assert!(allowed(&result));
    assert_eq!(env.counting.calls(), 1);

    // And the answer was cached for everyone after.
    assert!(allowed(&env.check(&token, &[Need::read("db")]).await));
    assert_eq!(env.counting.calls(), 1);
}

#[tokio::test]
async fn a_call_whose_callers_all_left_still_fills_the_cache() {
    let env = Env::start(config(), false).await;
    let (_, token) = create(env.tokens(), &[("db", true, false)], None).await;
    env.counting.close(GateAt::Before);
    let first = {
        let cache = env.cache.clone();
        let token = token.clone();
        tokio::spawn(async move { cache.check(&tok(&token), &[Need::read("db")]).await })
    };
    let counting = env.counting.clone();
    eventually("the call is in flight", || counting.entered() == 1).await;
    first.abort();
    env.counting.open();
    // The call was not cancelled with its caller: the next check joins it
    // or finds its answer cached, and the one after is a hit.
    assert!(allowed(&env.check(&token, &[Need::read("db")]).await));
    let hits = env.cache.stats().hits;
    assert!(allowed(&env.check(&token, &[Need::read("db")]).await));
    assert_eq!(env.cache.stats().hits, hits + 1);
    assert_eq!(env.counting.calls(), 1);
}

#[tokio::test]
async fn an_invalid_token_is_remembered_for_every_database() {
    let env = Env::start(config(), false).await;
    let unknown = "fgdb_not-a-real-token";
    assert!(invalid(&env.check(unknown, &[Need::read("a")]).await));
    assert_eq!(env.counting.calls(), 1);
    for db in ["b", "c", "d"] {
        assert!(invalid(
            &env.check(unknown, &[Need::write(db), Need::read("a")])
                .await
        ));
    }
    assert_eq!(
        env.counting.calls(),
        1,
        "one call for any number of databases"
    );
}

#[tokio::test]
async fn distinct_tokens_do_not_share_entries() {
    let env = Env::start(config(), false).await;
    let (_, reader) = create(env.tokens(), &[("db", true, false)], None).await;
    let (_, writer) = create(env.tokens(), &[("db", false, true)], None).await;
    assert!(allowed(&env.check(&reader, &[Need::read("db")]).await));
    let v = env.check(&writer, &[Need::read("db")]).await.unwrap();
    assert!(matches!(v.decisions[0], NeedDecision::Forbidden { .. }));
    assert_eq!(env.counting.calls(), 2);
}

#[tokio::test]
async fn metrics_are_exposed_on_the_prometheus_registry() {
    let handle = fluxgate::telemetry::init_metrics();
    fluxgate::authz::cache::describe_metrics();
    let env = Env::start(config(), true).await;
    let cache: Arc<dyn Authorizer> = Arc::new(env.cache.clone());
    let (_, token) = create(env.tokens(), &[("db", true, false)], None).await;
    for _ in 0..3 {
        assert!(allowed(
            &cache.check(&tok(&token), &[Need::read("db")]).await
        ));
    }
    let text = handle.render();
    // One family each: a metric counted outside the registry and in it too
    // would print its `# TYPE` twice, which Prometheus refuses.
    let mut families = std::collections::HashSet::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap_or_default();
        assert!(families.insert(name.to_owned()), "twice: {line}");
    }
    let hits: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("fluxgate_cache_hits_total "))
        .and_then(|n| n.parse().ok())
        .expect("a hit count");
    assert!(hits >= 2, "the two hits above are counted: {hits}");
    for name in [
        "fluxgate_cache_hits_total",
        "fluxgate_cache_misses_total",
        "fluxgate_cache_coalesced_total",
        "fluxgate_authz_calls_total{result=\"allowed\"}",
        "fluxgate_authz_call_seconds_bucket",
        "fluxgate_cache_entries",
        "fluxgate_stale_served_total",
        "fluxgate_invalidations_total",
        "fluxgate_watch_connected",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

#[tokio::test]
async fn no_needs_is_not_cached() {
    let env = Env::start(config(), false).await;
    let (_, token) = create(env.tokens(), &[("db", true, false)], None).await;
    let v = env.check(&token, &[]).await.unwrap();
    assert!(v.decisions.is_empty());
    let _ = env.check(&token, &[]).await.unwrap();
    assert_eq!(env.counting.calls(), 2);
}

#[tokio::test]
async fn cached_entries_are_counted() {
    let env = Env::start(config(), false).await;
    let (_, token) = create(env.tokens(), &[("a", true, false)], None).await;
    let _ = env
        .check(
            &token,
            &[Need::read("a"), Need::read("b"), Need::write("a")],
        )
        .await
        .unwrap();
    env.cache.run_maintenance().await;
    assert_eq!(env.cache.entry_count(), 3);
}
