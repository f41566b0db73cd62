//! The replicas under test (`fluxgate authz` processes over one PostgreSQL
//! database) and what the tests do with them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fluxgate::authz::client::ProxyCredential;
use fluxgate::authz::invalidation::FollowOptions;
use fluxgate::proto::iox_authz::iox_authorizer_service_client::IoxAuthorizerServiceClient;
use fluxgate::proto::iox_authz::permission::PermissionOneOf;
use fluxgate::proto::iox_authz::resource_action_permission::{Action, ResourceType, Target};
use fluxgate::proto::iox_authz::{AuthorizeRequest, Permission, ResourceActionPermission};
use fluxgate::proto::tokens as pb;
use fluxgate::proto::tokens::token_service_client::TokenServiceClient;
use fluxgate::proto::tokens::watch_token_changes_response::Event;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::common::binary::Process;
use crate::common::postgres::PgCluster;
use fluxgate::authz::invalidation::WatchMode;

/// Bound on waiting for anything that should happen by itself.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);
/// What a revocation must take to reach every replica.
pub(crate) const REVOCATION_BOUND: Duration = Duration::from_secs(1);
pub(crate) const BOOTSTRAP_FILE: &str = "bootstrap-management-token";

/// A `fluxgate authz` process over a PostgreSQL database.
pub(crate) struct Replica {
    pub(crate) process: Process,
    pub(crate) port: u16,
    pub(crate) admin: u16,
    pub(crate) dir: PathBuf,
    /// Where it reports the ports it bound.
    addresses: PathBuf,
}

impl Replica {
    /// Starts a replica (without waiting for it) with its own data
    /// directory under `root`.
    pub(crate) fn spawn(
        cluster: &PgCluster,
        database: &str,
        root: &Path,
        name: &str,
        extra: &[&str],
    ) -> Self {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let password = cluster.password_file(&dir);
        let url = cluster.url(database);
        let mut args = vec![
            "authz",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
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
        let (process, addresses) =
            Process::reporting(&args, &[("RUST_LOG", "info")], &dir.join("authz.log"));
        // The ports are known once it has bound them (`wait`).
        Self {
            process,
            port: 0,
            admin: 0,
            dir,
            addresses,
        }
    }

    pub(crate) fn wait(&mut self) {
        let bound = self.process.wait_for_addresses(&self.addresses);
        self.port = bound.token_service.expect("the token service's address");
        self.admin = bound.admin.expect("the admin address");
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(self.url()).unwrap()
    }

    pub(crate) async fn channel(&self) -> Channel {
        self.endpoint().connect().await.unwrap()
    }

    pub(crate) async fn authz(&self) -> IoxAuthorizerServiceClient<Channel> {
        IoxAuthorizerServiceClient::new(self.channel().await)
    }

    pub(crate) async fn tokens(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::new(self.channel().await)
    }

    /// The bootstrap token, when this replica wrote it.
    pub(crate) fn bootstrap_token(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(BOOTSTRAP_FILE))
            .ok()
            .map(|t| t.trim().to_owned())
    }

    /// `GET /readyz` on the admin listener: status and body.
    pub(crate) async fn readyz(&self) -> (u16, String) {
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

    pub(crate) async fn health(&self) -> ServingStatus {
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
    pub(crate) fn kill(&mut self) {
        self.process.child.kill().unwrap();
        self.process.child.wait().unwrap();
    }
}

pub(crate) fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

pub(crate) fn write_permission(database: &str) -> Permission {
    Permission {
        permission_one_of: Some(PermissionOneOf::ResourceAction(ResourceActionPermission {
            resource_type: ResourceType::Database as i32,
            target: Some(Target::ResourceName(database.to_owned())),
            action: Action::Write as i32,
        })),
    }
}

/// Whether `token` may write `db` according to the replica behind `client`.
pub(crate) async fn may_write(
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
pub(crate) async fn create(
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
pub(crate) async fn proxy_token(client: &mut TokenServiceClient<Channel>, admin: &str) -> String {
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
pub(crate) fn follow_options(proxy: &str) -> FollowOptions {
    FollowOptions {
        mode: WatchMode::Required,
        credential: ProxyCredential::new(proxy),
    }
}

pub(crate) async fn revoke(client: &mut TokenServiceClient<Channel>, admin: &str, id: &str) {
    client
        .revoke_database_token(bearer(pb::RevokeTokenRequest { id: id.to_owned() }, admin))
        .await
        .expect("revoke");
}

/// Polls `check` until true; panics after `within`. Returns how long it took.
pub(crate) async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F) -> Duration
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
pub(crate) async fn wait_for_admin(replicas: &[&Replica], admin: &str) {
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
pub(crate) async fn three_replicas(
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
pub(crate) async fn log_of(
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
