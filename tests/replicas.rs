//! Several `fluxgate authz` replicas (the real binary) over one PostgreSQL
//! database (a real cluster this test binary starts, see
//! `common/postgres.rs`): one gapless change log, revocations refused
//! everywhere within a second, a proxy that moves to another replica
//! without flushing its cache, exactly one bootstrap token when replicas
//! start together, PostgreSQL outages (writes refused, reads served,
//! readiness dropped, recovery without restart), and TLS to PostgreSQL
//! with a private CA.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "tls/certs.rs"]
mod certs;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxgate::authz::cache::{CacheConfig, CachedAuthorizer};
use fluxgate::authz::client::{AuthzClient, ProxyCredential};
use fluxgate::authz::failover::AuthzEndpoints;
use fluxgate::authz::invalidation::FollowOptions;
use fluxgate::authz::{Authorizer as _, CacheUse, Need, NeedDecision};
use fluxgate::credentials::Token;
use fluxgate::proto::iox_authz::iox_authorizer_service_client::IoxAuthorizerServiceClient;
use fluxgate::proto::iox_authz::permission::PermissionOneOf;
use fluxgate::proto::iox_authz::resource_action_permission::{Action, ResourceType, Target};
use fluxgate::proto::iox_authz::{AuthorizeRequest, Permission, ResourceActionPermission};
use fluxgate::proto::tokens as pb;
use fluxgate::proto::tokens::token_service_client::TokenServiceClient;
use fluxgate::proto::tokens::watch_token_changes_response::Event;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use common::binary::{Process, free_port};
use common::postgres::PgCluster;
use fluxgate::authz::invalidation::WatchMode;

/// Bound on waiting for anything that should happen by itself.
const DEADLINE: Duration = Duration::from_secs(20);
/// What a revocation must take to reach every replica.
const REVOCATION_BOUND: Duration = Duration::from_secs(1);
const BOOTSTRAP_FILE: &str = "bootstrap-management-token";

/// A `fluxgate authz` process over a PostgreSQL database.
struct Replica {
    process: Process,
    port: u16,
    admin: u16,
    dir: PathBuf,
}

impl Replica {
    /// Starts a replica (without waiting for it) with its own data
    /// directory under `root`.
    fn spawn(cluster: &PgCluster, database: &str, root: &Path, name: &str, extra: &[&str]) -> Self {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let (port, admin) = (free_port(), free_port());
        let listen = format!("127.0.0.1:{port}");
        let admin_listen = format!("127.0.0.1:{admin}");
        let password = cluster.password_file(&dir);
        let url = cluster.url(database);
        let mut args = vec![
            "authz",
            "--listen",
            &listen,
            "--admin-listen",
            &admin_listen,
            "--data-dir",
            dir.to_str().unwrap(),
            "--store",
            &url,
            "--store-password-file",
            password.to_str().unwrap(),
            "--shutdown-grace",
            "1s",
            // The tests poll Authorize for tokens not known (yet, or any
            // more) without a proxy token: not throttled as a guesser.
            "--authorize-invalid-rate",
            "1000000",
        ];
        args.extend_from_slice(extra);
        let process = Process::start(&args, &[("RUST_LOG", "info")], &dir.join("authz.log"));
        Self {
            process,
            port,
            admin,
            dir,
        }
    }

    fn wait(&mut self) {
        self.process.wait_for_port(self.port);
        self.process.wait_for_port(self.admin);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(self.url()).unwrap()
    }

    async fn channel(&self) -> Channel {
        self.endpoint().connect().await.unwrap()
    }

    async fn authz(&self) -> IoxAuthorizerServiceClient<Channel> {
        IoxAuthorizerServiceClient::new(self.channel().await)
    }

    async fn tokens(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::new(self.channel().await)
    }

    /// The bootstrap token, when this replica wrote it.
    fn bootstrap_token(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(BOOTSTRAP_FILE))
            .ok()
            .map(|t| t.trim().to_owned())
    }

    /// `GET /readyz` on the admin listener: status and body.
    async fn readyz(&self) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.admin))
            .await
            .unwrap();
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    async fn health(&self) -> ServingStatus {
        let mut health = HealthClient::new(self.channel().await);
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        ServingStatus::try_from(status).unwrap()
    }

    /// SIGKILL, no goodbye.
    fn kill(&mut self) {
        self.process.child.kill().unwrap();
        self.process.child.wait().unwrap();
    }
}

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn write_permission(database: &str) -> Permission {
    Permission {
        permission_one_of: Some(PermissionOneOf::ResourceAction(ResourceActionPermission {
            resource_type: ResourceType::Database as i32,
            target: Some(Target::ResourceName(database.to_owned())),
            action: Action::Write as i32,
        })),
    }
}

/// Whether `token` may write `db` according to the replica behind `client`.
async fn may_write(
    client: &mut IoxAuthorizerServiceClient<Channel>,
    token: &str,
    db: &str,
) -> bool {
    let r = client
        .authorize(AuthorizeRequest {
            token: token.as_bytes().to_vec(),
            permissions: vec![write_permission(db)],
        })
        .await
        .expect("Authorize answers")
        .into_inner();
    r.valid && !r.permissions.is_empty()
}

/// Creates a database token (write on `db`) through `client`.
async fn create(
    client: &mut TokenServiceClient<Channel>,
    admin: &str,
    db: &str,
) -> (String, String) {
    let created = client
        .create_database_token(bearer(
            pb::CreateDatabaseTokenRequest {
                description: format!("writes {db}"),
                permissions: vec![pb::DatabasePermission {
                    database: db.to_owned(),
                    read: false,
                    write: true,
                }],
                expires_at: None,
            },
            admin,
        ))
        .await
        .expect("create a database token")
        .into_inner();
    (created.info.unwrap().id, created.token)
}

/// Creates a proxy token (what a proxy presents to follow the change
/// stream) through `client`.
async fn proxy_token(client: &mut TokenServiceClient<Channel>, admin: &str) -> String {
    client
        .create_proxy_token(bearer(
            pb::CreateProxyTokenRequest {
                description: "replica tests".into(),
                ..Default::default()
            },
            admin,
        ))
        .await
        .expect("create a proxy token")
        .into_inner()
        .token
}

/// How a proxy follows the change stream: required, with `proxy`.
fn follow_options(proxy: &str) -> FollowOptions {
    FollowOptions {
        mode: WatchMode::Required,
        credential: ProxyCredential::new(proxy),
    }
}

async fn revoke(client: &mut TokenServiceClient<Channel>, admin: &str, id: &str) {
    client
        .revoke_database_token(bearer(pb::RevokeTokenRequest { id: id.to_owned() }, admin))
        .await
        .expect("revoke");
}

/// Polls `check` until true; panics after `within`. Returns how long it took.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until every replica accepts `admin` (the replica that created it
/// has it at once, the others once they followed the log).
async fn wait_for_admin(replicas: &[&Replica], admin: &str) {
    for r in replicas {
        let client = r.tokens().await;
        eventually("every replica knows the management token", DEADLINE, || {
            let mut client = client.clone();
            let admin = admin.to_owned();
            async move {
                client
                    .list_management_tokens(bearer(pb::ListTokensRequest::default(), &admin))
                    .await
                    .is_ok()
            }
        })
        .await;
    }
}

/// Three replicas started on an empty database; returns them and the
/// bootstrap token (written by exactly one of them), known to all.
async fn three_replicas(
    cluster: &PgCluster,
    root: &Path,
    extra: &[&str],
) -> (Vec<Replica>, String) {
    let database = cluster.database().await;
    let mut replicas: Vec<Replica> = ["a", "b", "c"]
        .iter()
        .map(|n| Replica::spawn(cluster, &database, root, n, extra))
        .collect();
    for r in &mut replicas {
        r.wait();
    }
    let tokens: Vec<String> = replicas
        .iter()
        .filter_map(Replica::bootstrap_token)
        .collect();
    assert_eq!(
        tokens.len(),
        1,
        "exactly one replica wrote a bootstrap token"
    );
    let admin = tokens[0].clone();
    wait_for_admin(&replicas.iter().collect::<Vec<_>>(), &admin).await;
    (replicas, admin)
}

/// Every change of the replica's stream after `after`, until `count`
/// changes: (revision, token id, kind). Follows with the proxy token `proxy`.
async fn log_of(
    replica: &Replica,
    proxy: &str,
    after: u64,
    count: usize,
) -> Vec<(u64, String, i32)> {
    let mut client = replica.tokens().await;
    // The proxy token may have been created on another replica a moment ago.
    let deadline = Instant::now() + DEADLINE;
    let mut stream = loop {
        match client
            .watch_token_changes(bearer(
                pb::WatchTokenChangesRequest {
                    after_revision: Some(after),
                },
                proxy,
            ))
            .await
        {
            Ok(s) => break s.into_inner(),
            Err(s) if s.code() == Code::Unauthenticated && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(s) => panic!("cannot follow the change stream: {s:?}"),
        }
    };
    let first = stream.message().await.unwrap().unwrap();
    let Some(Event::Sync(sync)) = first.event else {
        panic!("sync first")
    };
    assert!(sync.resumed, "the log holds everything after {after}");
    let mut changes = Vec::new();
    while changes.len() < count {
        let m = tokio::time::timeout(DEADLINE, stream.message())
            .await
            .expect("changes in time")
            .unwrap()
            .unwrap();
        if let Some(Event::Change(c)) = m.event {
            changes.push((m.revision, c.token_id, c.kind));
        }
    }
    changes
}

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
        std::process::Command::new(common::binary::binary())
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
    let failed = std::process::Command::new(common::binary::binary())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_to_postgres_verifies_a_private_ca() {
    let ca = certs::Ca::new("fluxgate test PostgreSQL CA");
    let leaf = ca.server("postgres");
    let cluster = PgCluster::start_with(Some(common::postgres::ServerTls {
        cert_pem: leaf.cert_pem.clone(),
        key_pem: leaf.key_pem.clone(),
    }));
    let database = cluster.database().await;
    let root = tempfile::tempdir().unwrap();
    let ca_file = root.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let url = format!(
        "postgres://{}@localhost:{}/{database}?sslmode=verify-full&sslrootcert={}",
        common::postgres::USER,
        cluster.port,
        ca_file.display()
    );
    let dir = root.path().join("ok");
    std::fs::create_dir_all(&dir).unwrap();
    let password = cluster.password_file(&dir);
    let (port, admin) = (free_port(), free_port());
    let mut ok = Process::start(
        &[
            "authz",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
            "--data-dir",
            dir.to_str().unwrap(),
            "--store",
            &url,
            "--store-password-file",
            password.to_str().unwrap(),
        ],
        &[],
        &dir.join("authz.log"),
    );
    ok.wait_for_port(port);
    assert!(dir.join(BOOTSTRAP_FILE).exists());
    let encrypted = cluster
        .query(
            &database,
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
              WHERE a.application_name = 'fluxgate' AND s.ssl",
        )
        .await;
    assert_ne!(encrypted, vec!["0"], "fluxgate's connections use TLS");
    assert!(
        !ok.log_text().contains(&cluster.password),
        "the password never reaches the log"
    );

    // Another CA: the server is not trusted, the replica does not start.
    let other = certs::Ca::new("someone else");
    let other_file = root.path().join("other.pem");
    std::fs::write(&other_file, &other.pem).unwrap();
    let bad_dir = root.path().join("bad");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let output = std::process::Command::new(common::binary::binary())
        .args([
            "authz",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--admin-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
            bad_dir.to_str().unwrap(),
            "--store",
            &url.replace(ca_file.to_str().unwrap(), other_file.to_str().unwrap()),
            "--store-password-file",
            password.to_str().unwrap(),
        ])
        .env_remove("FLUXGATE_STORE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot open the token store (PostgreSQL localhost:"),
        "{stderr}"
    );
    assert!(!stderr.contains(&cluster.password));
}
