//! Test support: real servers on 127.0.0.1:0, started in-process and shut
//! down when dropped.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fluxgate::tokens::model::{DatabasePermission, TokenKind};
use fluxgate::tokens::store::TokenStore;
use fluxgate::tokens::throttle::InvalidTokenThrottle;
use fluxgate::tokens::{PgStore, SqliteStore, TokenRegistry, server};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Which token store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite file.
    Sqlite,
    /// A database of its own in the test binary's PostgreSQL cluster.
    Postgres,
}

/// A token store for one test: a data directory (the bootstrap file lives
/// there, and SQLite's file), plus on PostgreSQL a fresh database in the
/// test binary's shared cluster. Can be opened again (restarts).
pub struct TestStore {
    pub backend: Backend,
    pub dir: PathBuf,
    pub database: Option<String>,
    _tmp: Option<tempfile::TempDir>,
}

impl TestStore {
    /// A fresh, empty store.
    pub async fn new(backend: Backend) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut store = Self::in_dir(backend, tmp.path()).await;
        store._tmp = Some(tmp);
        store
    }

    /// A fresh store whose data directory is `dir` (kept after drop).
    pub async fn in_dir(backend: Backend, dir: &Path) -> Self {
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(postgres::PgCluster::shared().database().await),
        };
        Self {
            backend,
            dir: dir.to_path_buf(),
            database,
            _tmp: None,
        }
    }

    /// Opens the store (migrating it on first open).
    pub async fn open(&self) -> Arc<dyn TokenStore> {
        match &self.database {
            None => Arc::new(SqliteStore::open(&self.dir).await.expect("open store")),
            Some(db) => {
                let cluster = postgres::PgCluster::shared();
                Arc::new(
                    PgStore::connect(cluster.options(db), format!("PostgreSQL test {db}"))
                        .await
                        .unwrap_or_else(|e| panic!("open store: {e}\n{}", cluster.log())),
                )
            }
        }
    }

    /// Writes `records` into the store as they are, in one transaction,
    /// bypassing the registry (many tokens at once, or records stored by
    /// an older version).
    pub async fn seed(&self, records: Vec<fluxgate::tokens::model::TokenRecord>) {
        use fluxgate::tokens::store::Write;
        let store = self.open().await;
        let writes: Vec<Write> = records.into_iter().map(Write::Create).collect();
        store.write(&writes).await.expect("seed tokens");
        store.close().await;
    }

    /// The `fluxgate authz`/`serve` flags selecting this store.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--data-dir".to_owned(),
            self.dir.to_str().unwrap().to_owned(),
        ];
        if let Some(db) = &self.database {
            let cluster = postgres::PgCluster::shared();
            args.push("--store".into());
            args.push(cluster.url(db));
            args.push("--store-password-file".into());
            args.push(
                cluster
                    .password_file(&self.dir)
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        args
    }
}

/// How a [`TokenServer`] is set up beyond its data and address.
pub struct Setup {
    /// Authorize's invalid-token throttle.
    pub throttle: Arc<InvalidTokenThrottle>,
    /// The store id its change stream announces instead of the store's own
    /// (none: the store's).
    pub store_id: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            throttle: Arc::new(InvalidTokenThrottle::default()),
            store_id: None,
        }
    }
}

/// Puts a proxy token whose string is `token` into the (new or existing)
/// store in `dir`, as a restored backup holding it would: how a test's proxy
/// keeps its credential across a swap of token stores.
pub async fn seed_proxy_token(dir: &Path, token: &str) {
    use fluxgate::tokens::model::TokenRecord;
    use fluxgate::tokens::secret::TokenHash;
    let record = TokenRecord {
        id: format!("seeded-proxy-{}", uuid_like(token)),
        kind: TokenKind::Proxy,
        description: "seeded".into(),
        permissions: vec![],
        hash: TokenHash::of(token.as_bytes()),
        created_at: std::time::SystemTime::now(),
        expires_at: None,
        revoked_at: None,
        updated_at: None,
    };
    seed_record(dir, &record).await;
}

fn uuid_like(token: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha512::digest(token.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `record` into the store in `dir` as it is, bypassing the
/// registry's checks: a record stored by an older version, or a damaged one.
pub async fn seed_record(dir: &Path, record: &fluxgate::tokens::model::TokenRecord) {
    use fluxgate::tokens::store::Write;
    let store = SqliteStore::open(dir).await.expect("open store");
    store
        .write(&[Write::Create(record.clone())])
        .await
        .expect("seed token");
    store.close().await;
}

/// A token service on 127.0.0.1:0 with its own data directory.
pub struct TokenServer {
    pub addr: SocketAddr,
    pub registry: Arc<TokenRegistry>,
    pub data_dir: PathBuf,
    pub management_token: String,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
    _store: Option<TestStore>,
}

impl TokenServer {
    /// Starts a token service in a fresh temporary directory.
    pub async fn start() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_in(&dir).await;
        s._tmp = Some(tmp);
        s
    }

    /// Starts a token service on a fresh store of `backend`.
    pub async fn start_on(backend: Backend) -> Self {
        let store = TestStore::new(backend).await;
        let mut s = Self::start_over(&store).await;
        s._store = Some(store);
        s
    }

    /// Starts a token service over `store` (which outlives it: restarts,
    /// several servers over one store).
    pub async fn start_over(store: &TestStore) -> Self {
        Self::start_store(
            store.open().await,
            &store.dir,
            "127.0.0.1:0".parse().unwrap(),
            Setup::default(),
        )
        .await
    }

    /// Starts a token service over the store in `dir` (kept after drop).
    pub async fn start_in(dir: &Path) -> Self {
        Self::start_at(dir, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts on a given address (to restart on the same port).
    pub async fn start_at(dir: &Path, addr: SocketAddr) -> Self {
        Self::start_with(dir, addr, Setup::default()).await
    }

    /// Starts in a fresh temporary directory with Authorize's invalid-token
    /// answers throttled by `throttle`.
    pub async fn start_throttled(throttle: Arc<InvalidTokenThrottle>) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let setup = Setup {
            throttle,
            ..Setup::default()
        };
        let mut s = Self::start_with(tmp.path(), "127.0.0.1:0".parse().unwrap(), setup).await;
        s._tmp = Some(tmp);
        s
    }

    /// [`TokenServer::start_at`] with `setup`.
    pub async fn start_with(dir: &Path, addr: SocketAddr, setup: Setup) -> Self {
        let store = SqliteStore::open(dir).await.expect("open store");
        Self::start_store(Arc::new(store), dir, addr, setup).await
    }

    async fn start_store(
        store: Arc<dyn TokenStore>,
        dir: &Path,
        addr: SocketAddr,
        setup: Setup,
    ) -> Self {
        let Setup { throttle, store_id } = setup;
        let registry = TokenRegistry::open(store).await.expect("open registry");
        if let Some(id) = store_id {
            registry.set_store_id(id);
        }
        let bootstrap = server::bootstrap(&registry, dir).await.expect("bootstrap");
        let management_token = match bootstrap {
            Some(path) => std::fs::read_to_string(path)
                .expect("read bootstrap")
                .trim()
                .to_owned(),
            None => {
                let (_, t) = registry
                    .create(TokenKind::Management, "test".into(), vec![], None)
                    .await
                    .expect("create management token");
                t.into_string()
            }
        };
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        let closing = Arc::clone(&registry);
        let serving = Arc::clone(&registry);
        let task = tokio::spawn(async move {
            let signal = async move {
                signal.cancelled().await;
                closing.close();
            };
            server::serve_with(listener, serving, None, throttle, signal)
                .await
                .expect("serve");
        });
        Self {
            addr,
            registry,
            data_dir: dir.to_path_buf(),
            management_token,
            shutdown,
            task: Some(task),
            _tmp: None,
            _store: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a database token directly in the registry; returns (id, token).
    pub async fn database_token(&self, perms: &[(&str, bool, bool)]) -> (String, String) {
        let perms = perms
            .iter()
            .map(|(d, r, w)| DatabasePermission {
                database: (*d).to_owned(),
                read: *r,
                write: *w,
            })
            .collect();
        let (record, token) = self
            .registry
            .create(TokenKind::Database, "test token".into(), perms, None)
            .await
            .expect("create database token");
        (record.id.clone(), token.into_string())
    }

    /// Creates a proxy token (what a proxy presents to follow the change
    /// stream) directly in the registry; returns its string.
    pub async fn proxy_token(&self) -> String {
        let (_, token) = self
            .registry
            .create(TokenKind::Proxy, "test proxy".into(), vec![], None)
            .await
            .expect("create proxy token");
        token.into_string()
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits (up to 10 s) until the JSON-lines file at `path` holds at least
/// `n` lines, and returns them parsed.
pub async fn wait_for_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n {
            return text
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} holds {} lines, expected {n}:\n{text}",
            path.display(),
            text.lines().count()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

pub mod binary;
pub mod capture;
pub mod flight;
pub mod flight_client;
pub mod oracle;
pub mod postgres;
pub mod proxy;
