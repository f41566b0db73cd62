//! A throwaway PostgreSQL cluster for the tests: `initdb` in a temporary
//! directory (as `nobody` when the tests run as root, as CI does: PostgreSQL
//! refuses to run as root), started on a free 127.0.0.1 port with TCP only,
//! password authentication (SCRAM) for the user `fluxgate`, and stopped by
//! PID.
//!
//! The postmaster runs under a small bash watchdog that stops it (SIGINT,
//! fast shutdown) and removes the directory as soon as the test process is
//! gone, so a cluster shared by a whole test binary (see
//! [`PgCluster::shared`]) never outlives it, even when it is killed.
//!
//! The binaries come from `FLUXGATE_PG_BIN`, else the newest
//! `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package, which
//! `.ci/run` installs).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// The cluster's superuser, used by fluxgate too.
pub const USER: &str = "fluxgate";

const WATCHDOG: &str = r#"
"$PG_BIN/postgres" -D "$PG_DATA" "$@" >>"$PG_LOG" 2>&1 &
pg=$!
while [ -d "/proc/$PG_PARENT" ] && kill -0 "$pg" 2>/dev/null; do sleep 0.2; done
kill -INT "$pg" 2>/dev/null
wait "$pg"
if [ ! -d "/proc/$PG_PARENT" ]; then rm -rf "$PG_DIR"; fi
"#;

/// TLS for the server: certificate chain and key, PEM.
#[derive(Clone)]
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A running (or stopped) cluster.
pub struct PgCluster {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    bin: PathBuf,
    pub port: u16,
    pub password: String,
    run_as: Option<(u32, u32)>,
    extra: Vec<String>,
    postmaster: Option<u32>,
}

/// Where the PostgreSQL binaries are.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLUXGATE_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, FLUXGATE_PG_BIN unset): \
             run .ci/run, or apt-get install postgresql"
        ),
    }
}

/// The uid and gid of `nobody` when running as root (PostgreSQL will not).
fn unprivileged() -> Option<(u32, u32)> {
    let status = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&status.stdout).trim() != "0" {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .expect("a `nobody` user to run PostgreSQL as");
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
}

fn chown_tree(path: &Path, owner: Option<(u32, u32)>) {
    let Some((uid, gid)) = owner else { return };
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), owner);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgCluster {
    /// A new cluster of its own, started (blocking: a few seconds).
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// [`PgCluster::start`], serving TLS with `tls` when given.
    pub fn start_with(tls: Option<ServerTls>) -> Self {
        let bin = bin_dir();
        let run_as = unprivileged();
        let dir = tempfile::Builder::new()
            .prefix("fluxgate-pg-")
            .tempdir()
            .unwrap();
        let root = dir.path().to_path_buf();
        let password = format!("pw{:x}", rand::random::<u64>());
        std::fs::write(root.join("pwfile"), format!("{password}\n")).unwrap();
        chown_tree(&root, run_as);
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args(["-D", "data", "-U", USER, "--pwfile=pwfile"])
            .args([
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-instructions",
            ])
            .arg("--locale=C")
            .current_dir(&root)
            .env("LC_ALL", "C")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = run_as {
            use std::os::unix::process::CommandExt as _;
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut extra: Vec<String> = [
            "listen_addresses=127.0.0.1",
            "unix_socket_directories=",
            "max_connections=500",
            "shared_buffers=32MB",
            "log_min_messages=warning",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(tls) = tls {
            let data = root.join("data");
            std::fs::write(data.join("server.crt"), tls.cert_pem).unwrap();
            std::fs::write(data.join("server.key"), tls.key_pem).unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            chown_tree(&data, run_as);
            extra.extend(["ssl=on".into(), "ssl_cert_file=server.crt".into()]);
            extra.push("ssl_key_file=server.key".into());
        }
        let mut cluster = Self {
            dir: Some(dir),
            root,
            bin,
            port: free_port(),
            password,
            run_as,
            extra,
            postmaster: None,
        };
        cluster.run();
        cluster
    }

    /// One cluster for the whole test binary (each test takes a database
    /// of its own with [`PgCluster::database`]).
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let mut cluster = PgCluster::start();
            // Removed by the watchdog when the test process exits.
            if let Some(dir) = cluster.dir.take() {
                let _ = dir.keep();
            }
            cluster
        })
    }

    fn run(&mut self) {
        let mut args: Vec<String> = vec!["-c".into(), format!("port={}", self.port)];
        for setting in &self.extra {
            args.push("-c".into());
            args.push(setting.clone());
        }
        let mut watchdog = Command::new("bash");
        watchdog
            .arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .args(&args)
            .env("PG_BIN", &self.bin)
            .env("PG_DATA", self.root.join("data"))
            .env("PG_LOG", self.root.join("postgres.log"))
            .env("PG_DIR", &self.root)
            .env("PG_PARENT", std::process::id().to_string())
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt as _;
            watchdog.uid(uid).gid(gid);
        }
        // Not waited for: it ends with the postmaster and is reaped by init
        // once this process is gone.
        let child = watchdog.spawn().expect("start postgres");
        drop(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let pid_file = self.root.join("data").join("postmaster.pid");
        loop {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start on port {}:\n{}",
                self.port,
                self.log()
            );
            if let Ok(text) = std::fs::read_to_string(&pid_file)
                && let Some(pid) = text.lines().next().and_then(|l| l.trim().parse().ok())
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && self.accepts_queries()
            {
                self.postmaster = Some(pid);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn accepts_queries(&self) -> bool {
        let options = self.options("postgres");
        let check = async move {
            let mut conn = PgConnection::connect_with(&options).await?;
            sqlx::query("SELECT 1").execute(&mut conn).await?;
            conn.close().await
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(check)
                    .is_ok()
            })
            .join()
            .unwrap()
        })
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("postgres.log")).unwrap_or_default()
    }

    /// Connection options for `database` (password included).
    pub fn options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(self.port)
            .username(USER)
            .password(&self.password)
            .database(database)
    }

    /// The URL of `database`, without the password (see
    /// [`PgCluster::password_file`]).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// A file holding the password, for `--store-password-file`.
    pub fn password_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("pg-password");
        std::fs::write(&path, format!("{}\n", self.password)).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// Creates an empty database with a fresh name and returns the name.
    pub async fn database(&self) -> String {
        let name = format!("t{:x}", rand::random::<u64>());
        let mut conn = PgConnection::connect_with(&self.options("postgres"))
            .await
            .unwrap_or_else(|e| panic!("connect to the test cluster: {e}\n{}", self.log()));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        name
    }

    /// Runs `sql` in `database` and returns the first column of every row
    /// as text.
    pub async fn query(&self, database: &str, sql: &str) -> Vec<String> {
        use sqlx::Row as _;
        let mut conn = PgConnection::connect_with(&self.options(database))
            .await
            .unwrap();
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        rows.iter()
            .map(|r| {
                r.try_get::<String, _>(0)
                    .or_else(|_| r.try_get::<i64, _>(0).map(|v| v.to_string()))
                    .or_else(|_| r.try_get::<i32, _>(0).map(|v| v.to_string()))
                    .or_else(|_| r.try_get::<bool, _>(0).map(|v| v.to_string()))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Stops the server (fast shutdown) and waits until it is gone. The
    /// data stay; [`PgCluster::restart`] brings it back on the same port.
    pub fn stop(&mut self) {
        let Some(pid) = self.postmaster.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        let pid_file = self.root.join("data").join("postmaster.pid");
        while Path::new(&format!("/proc/{pid}")).exists() || pid_file.exists() {
            if Instant::now() > deadline {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the stopped server again, same data and port.
    pub fn restart(&mut self) {
        assert!(self.postmaster.is_none(), "the cluster is running");
        self.run();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
