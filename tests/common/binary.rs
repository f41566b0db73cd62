//! The built `fluxgate` binary as a child process: listeners on port 0
//! whose addresses the process reports in `--addresses-file`, a log file,
//! and stop by PID.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nobody listens on right now: only for an address that
/// must stay unanswered, or that a restarted process must bind again.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fluxgate"))
}

/// A running fluxgate process, killed when dropped.
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
}

impl Process {
    /// Starts `fluxgate args…` with a clean FLUXGATE_* environment plus `env`.
    pub fn start(args: &[&str], env: &[(&str, &str)], log: &Path) -> Self {
        let out = std::fs::File::create(log).unwrap();
        let mut cmd = Command::new(binary());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, _) in std::env::vars() {
            if k.starts_with("FLUXGATE_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().unwrap(),
            log: log.to_path_buf(),
        }
    }

    /// Starts `fluxgate args… --addresses-file …` (its listeners on port 0)
    /// and waits for the addresses it bound.
    pub fn listening(args: &[&str], env: &[(&str, &str)], log: &Path) -> (Self, Addresses) {
        let (mut process, file) = Self::reporting(args, env, log);
        let addresses = process.wait_for_addresses(&file);
        (process, addresses)
    }

    /// Starts `fluxgate args… --addresses-file …` without waiting: the
    /// addresses will be in the file returned ([`Process::wait_for_addresses`]).
    pub fn reporting(args: &[&str], env: &[(&str, &str)], log: &Path) -> (Self, PathBuf) {
        let file = log.with_extension("addresses.json");
        let _ = std::fs::remove_file(&file);
        let flag = format!("--addresses-file={}", file.display());
        let mut args = args.to_vec();
        args.push(&flag);
        (Self::start(&args, env, log), file)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the process has written `file` (`--addresses-file`), and
    /// reads the ports it bound.
    pub fn wait_for_addresses(&mut self, file: &Path) -> Addresses {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("fluxgate exited early ({status}):\n{}", self.log_text());
            }
            // Written by rename: present means complete.
            if let Ok(text) = std::fs::read_to_string(file) {
                let map: std::collections::HashMap<String, SocketAddr> =
                    serde_json::from_str(&text).expect("the addresses file is JSON");
                let port = |name: &str| map.get(name).map(SocketAddr::port);
                return Addresses {
                    proxy: port("proxy"),
                    token_service: port("token_service"),
                    admin: port("admin"),
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "fluxgate did not write {} in time:\n{}",
            file.display(),
            self.log_text()
        );
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(&mut self) -> i32 {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("fluxgate did not exit after SIGTERM:\n{}", self.log_text());
    }
}

/// The ports a process reported in its `--addresses-file`.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub proxy: Option<u16>,
    pub token_service: Option<u16>,
    pub admin: Option<u16>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `fluxgate serve` on ports it picks (port 0) in front of `upstream`.
pub struct Serve {
    pub process: Process,
    pub port: u16,
    pub authz_port: u16,
    pub admin_port: u16,
    pub data_dir: PathBuf,
}

impl Serve {
    pub fn start(dir: &Path, upstream: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let data_dir = dir.join("data");
        let data = data_dir.to_str().unwrap().to_owned();
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--authz-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
            &data,
            "--upstream",
            upstream,
        ];
        args.extend_from_slice(extra);
        let (process, bound) = Process::listening(&args, env, &dir.join("fluxgate.log"));
        Self {
            process,
            port: bound.proxy.expect("the proxy's address"),
            authz_port: bound.token_service.expect("the token service's address"),
            admin_port: bound.admin.expect("the admin address"),
            data_dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn management_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("bootstrap-management-token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Creates a database token over the management API.
    pub async fn create_token(&self, read: &[&str], write: &[&str]) -> (String, String) {
        use fluxgate::proto::tokens::{
            CreateDatabaseTokenRequest, DatabasePermission,
            token_service_client::TokenServiceClient,
        };
        let mut client =
            TokenServiceClient::connect(format!("http://127.0.0.1:{}", self.authz_port))
                .await
                .unwrap();
        let mut perms: Vec<DatabasePermission> = Vec::new();
        for db in read {
            perms.push(DatabasePermission {
                database: (*db).into(),
                read: true,
                write: false,
            });
        }
        for db in write {
            perms.push(DatabasePermission {
                database: (*db).into(),
                read: false,
                write: true,
            });
        }
        let mut request = tonic::Request::new(CreateDatabaseTokenRequest {
            description: "ops test".into(),
            permissions: perms,
            expires_at: None,
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.management_token())
                .parse()
                .unwrap(),
        );
        let created = client
            .create_database_token(request)
            .await
            .unwrap()
            .into_inner();
        (created.info.unwrap().id, created.token)
    }
}
