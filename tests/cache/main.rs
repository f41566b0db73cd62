//! The proxy's decision cache against a real token service on 127.0.0.1:0:
//! hits and coalescing, TTLs and the expiry bound, failing closed, stale
//! grace, and the invalidation follower (revocations, resume, flush).
//!
//! Waits are bounded polls or gates, never sleeps for synchronization; the
//! only sleeps let a deliberately short TTL (hundreds of ms) run out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod basics;
mod failure;
mod outage;
mod watch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use fluxgate::authz::cache::{CacheConfig, CachedAuthorizer};
use fluxgate::authz::client::{AuthzClient, ProxyCredential};
use fluxgate::authz::invalidation::{FollowOptions, WatchMode};
use fluxgate::authz::{Authorizer, AuthzError, Need, NeedDecision, Verdict};
use fluxgate::credentials::Token;
use fluxgate::tokens::model::{DatabasePermission, TokenKind};
use parking_lot::Mutex;
use tokio::sync::watch as gate;
use tokio_util::sync::CancellationToken;

use common::{Setup, TokenServer, seed_proxy_token};

/// Bound on every wait for an event.
pub(crate) const DEADLINE: Duration = Duration::from_secs(15);

/// Where a [`Counting`] authorizer holds calls until released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GateAt {
    /// Before asking the real authorizer.
    Before,
    /// After the real answer arrived, before returning it.
    After,
}

/// Wraps a real authorizer: counts calls, records their needs, and can hold
/// them at a gate.
#[derive(Debug)]
pub(crate) struct Counting {
    inner: Arc<dyn Authorizer>,
    calls: AtomicUsize,
    entered: AtomicUsize,
    answered: AtomicUsize,
    needs: Mutex<Vec<Vec<Need>>>,
    gate: gate::Sender<bool>,
    gate_at: Mutex<Option<GateAt>>,
}

impl Counting {
    pub(crate) fn new(inner: Arc<dyn Authorizer>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            calls: AtomicUsize::new(0),
            entered: AtomicUsize::new(0),
            answered: AtomicUsize::new(0),
            needs: Mutex::new(Vec::new()),
            gate: gate::Sender::new(true),
            gate_at: Mutex::new(None),
        })
    }

    /// Calls made so far.
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Calls waiting at (or past) the gate.
    pub(crate) fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }

    /// Calls the real authorizer answered (they may still wait at the gate).
    pub(crate) fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// The needs of every call.
    pub(crate) fn needs(&self) -> Vec<Vec<Need>> {
        self.needs.lock().clone()
    }

    /// Holds later calls at `at` until [`Counting::open`].
    pub(crate) fn close(&self, at: GateAt) {
        *self.gate_at.lock() = Some(at);
        self.gate.send_replace(false);
    }

    /// Releases held calls.
    pub(crate) fn open(&self) {
        self.gate.send_replace(true);
    }

    async fn pass(&self, here: GateAt) {
        if *self.gate_at.lock() != Some(here) {
            return;
        }
        let mut rx = self.gate.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

#[async_trait]
impl Authorizer for Counting {
    async fn check(&self, token: &Token, needs: &[Need]) -> Result<Verdict, AuthzError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.needs.lock().push(needs.to_vec());
        self.entered.fetch_add(1, Ordering::SeqCst);
        self.pass(GateAt::Before).await;
        let verdict = self.inner.check(token, needs).await;
        self.answered.fetch_add(1, Ordering::SeqCst);
        self.pass(GateAt::After).await;
        verdict
    }

    async fn ready(&self) -> Result<(), String> {
        self.inner.ready().await
    }
}

/// Test settings: no jitter (exact TTLs), long TTLs unless overridden.
pub(crate) fn config() -> CacheConfig {
    CacheConfig {
        allow_ttl: Duration::from_secs(60),
        deny_ttl: Duration::from_secs(60),
        jitter: 0.0,
        max_entries: 10_000,
        stale_grace: None,
        disconnected_ttl: Duration::from_secs(60),
        fetch_timeout: Duration::from_secs(2),
    }
}

/// A token service, a counting authorizer over a real client, and a cache
/// in front of it; the cache follows the change stream when `follow`.
pub(crate) struct Env {
    tokens: Option<TokenServer>,
    pub(crate) counting: Arc<Counting>,
    pub(crate) cache: CachedAuthorizer,
    stop_follower: CancellationToken,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    /// The proxy token the follower presents.
    proxy: String,
    store_id: Option<String>,
}

impl Env {
    pub(crate) async fn start(config: CacheConfig, follow: bool) -> Self {
        Self::start_with(config, follow, None).await
    }

    /// [`Env::start`] with a token service announcing `store_id`.
    pub(crate) async fn start_with(
        config: CacheConfig,
        follow: bool,
        store_id: Option<&str>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup {
            store_id: store_id.map(str::to_owned),
            ..Setup::default()
        };
        let tokens =
            TokenServer::start_with(dir.path(), "127.0.0.1:0".parse().unwrap(), setup).await;
        let addr = tokens.addr;
        let proxy = tokens.proxy_token().await;
        let client = AuthzClient::for_uri(tokens.url().parse().unwrap(), Duration::from_secs(2));
        let counting = Counting::new(Arc::new(client));
        let cache = CachedAuthorizer::new(counting.clone(), config);
        let stop_follower = CancellationToken::new();
        if follow {
            cache.follow_with(
                tonic::transport::Endpoint::from_shared(tokens.url()).unwrap(),
                follow_options(&proxy),
                stop_follower.clone(),
            );
            let c = cache.clone();
            eventually("the follower connects", || c.watch_status().connected).await;
        }
        Self {
            tokens: Some(tokens),
            counting,
            cache,
            stop_follower,
            dir,
            addr,
            proxy,
            store_id: store_id.map(str::to_owned),
        }
    }

    /// The running token service.
    pub(crate) fn tokens(&self) -> &TokenServer {
        self.tokens.as_ref().expect("the token service is running")
    }

    /// Stops the token service (its data stays).
    pub(crate) async fn stop_tokens(&mut self) {
        if let Some(t) = self.tokens.take() {
            t.stop().await;
        }
    }

    /// Starts the token service again on the same port and data.
    pub(crate) async fn restart_tokens(&mut self) {
        self.stop_tokens().await;
        let setup = Setup {
            store_id: self.store_id.clone(),
            ..Setup::default()
        };
        self.tokens = Some(TokenServer::start_with(self.dir.path(), self.addr, setup).await);
    }

    /// Starts a token service with no history on the same port (holding
    /// only the follower's proxy token).
    pub(crate) async fn replace_tokens(&mut self) -> tempfile::TempDir {
        self.replace_tokens_with(None, 0).await
    }

    /// Starts a token service over another store on the same port: one
    /// holding the follower's proxy token, `extra` more changes, and
    /// announcing `store_id`.
    pub(crate) async fn replace_tokens_with(
        &mut self,
        store_id: Option<&str>,
        extra: usize,
    ) -> tempfile::TempDir {
        self.stop_tokens().await;
        let fresh = tempfile::tempdir().unwrap();
        for _ in 0..extra {
            seed_proxy_token(fresh.path(), &format!("fgpx_filler-{}", rand_suffix())).await;
        }
        seed_proxy_token(fresh.path(), &self.proxy).await;
        let setup = Setup {
            store_id: store_id.map(str::to_owned),
            ..Setup::default()
        };
        self.tokens = Some(TokenServer::start_with(fresh.path(), self.addr, setup).await);
        fresh
    }

    /// The token service's data directory.
    pub(crate) fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until the follower applied everything up to the service's head.
    pub(crate) async fn caught_up(&self) {
        let head = self.tokens().registry.head_revision();
        let c = self.cache.clone();
        eventually("the follower catches up", || {
            c.watch_status().revision.is_some_and(|r| r >= head)
        })
        .await;
    }

    pub(crate) async fn check(&self, token: &str, needs: &[Need]) -> Result<Verdict, AuthzError> {
        self.cache.check(&tok(token), needs).await
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop_follower.cancel();
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// Following the change stream with the proxy token `proxy` (mode `required`).
pub(crate) fn follow_options(proxy: &str) -> FollowOptions {
    FollowOptions {
        mode: WatchMode::Required,
        credential: ProxyCredential::new(proxy),
    }
}

/// A [`Token`] from a string.
pub(crate) fn tok(s: &str) -> Token {
    Token::new(s.as_bytes().to_vec()).unwrap()
}

/// Creates a database token with `perms` (database, read, write) and an
/// optional expiry; returns (id, token).
pub(crate) async fn create(
    tokens: &TokenServer,
    perms: &[(&str, bool, bool)],
    expires_at: Option<SystemTime>,
) -> (String, String) {
    let perms = perms
        .iter()
        .map(|(d, r, w)| DatabasePermission {
            database: (*d).to_owned(),
            read: *r,
            write: *w,
        })
        .collect();
    let (record, token) = tokens
        .registry
        .create(TokenKind::Database, "cache test".into(), perms, expires_at)
        .await
        .expect("create database token");
    (record.id.clone(), token.into_string())
}

/// True when every decision is an allow.
pub(crate) fn allowed(v: &Result<Verdict, AuthzError>) -> bool {
    v.as_ref().is_ok_and(|v| {
        !v.decisions.is_empty()
            && v.decisions
                .iter()
                .all(|d| matches!(d, NeedDecision::Allowed { .. }))
    })
}

/// True when the token was refused as invalid.
pub(crate) fn invalid(v: &Result<Verdict, AuthzError>) -> bool {
    v.as_ref()
        .is_ok_and(|v| v.decisions.iter().all(|d| *d == NeedDecision::InvalidToken))
}

/// Polls `cond` until it holds, for at most [`DEADLINE`].
pub(crate) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
