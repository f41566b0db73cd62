//! Test support: real servers on 127.0.0.1:0, started in-process and shut
//! down when dropped.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fluxgate::tokens::model::{DatabasePermission, TokenKind};
use fluxgate::tokens::throttle::InvalidTokenThrottle;
use fluxgate::tokens::{SqliteStore, TokenRegistry, server};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How a [`TokenServer`] is set up beyond its data and address.
pub struct Setup {
    /// Authorize's invalid-token throttle.
    pub throttle: Arc<InvalidTokenThrottle>,
    /// The store id its change stream announces (none: empty, unknown).
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
    use fluxgate::tokens::store::{Change, ChangeKind, TokenStore as _};
    let store = SqliteStore::open(dir).await.expect("open store");
    let head = store.load().await.expect("load").head_revision;
    let change = Change {
        revision: head + 1,
        token_id: record.id.clone(),
        kind: ChangeKind::Created,
        token_kind: record.kind,
        at: record.created_at,
    };
    store.create(record, &change).await.expect("seed token");
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
        let Setup { throttle, store_id } = setup;
        let store = SqliteStore::open(dir).await.expect("open store");
        let registry = TokenRegistry::open(Arc::new(store))
            .await
            .expect("open registry");
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
pub mod proxy;
