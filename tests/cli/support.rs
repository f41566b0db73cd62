//! Support for `tests/cli.rs`: running the built binary with a clean
//! environment, a token service fixture with a token file, JSON helpers,
//! and the probe that tells whether the OS keyring works on this machine.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use assert_cmd::Command;
use fluxgate::cli::keyring_store;
use serde_json::Value;

use crate::common::TokenServer;

/// One run's outcome.
#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Out {
    pub(crate) fn code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code, expected,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub(crate) fn ok(&self) -> &Self {
        self.code(0)
    }

    /// A failure is exactly one `fluxgate: …` line on stderr.
    pub(crate) fn one_error_line(&self, needle: &str) -> &Self {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "stderr: {}", self.stderr);
        assert!(lines[0].starts_with("fluxgate: "), "{}", lines[0]);
        assert!(
            lines[0].contains(needle),
            "{:?} not in {}",
            needle,
            lines[0]
        );
        self
    }

    /// Neither stream holds any of `secrets`.
    pub(crate) fn clean(&self, secrets: &[&str]) -> &Self {
        for s in secrets {
            assert!(!self.stdout.contains(s), "token in stdout: {}", self.stdout);
            assert!(!self.stderr.contains(s), "token in stderr: {}", self.stderr);
        }
        self
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).expect("stdout is JSON")
    }
}

/// A command line to run, built up step by step.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cmd {
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    stdin: Option<String>,
}

impl Cmd {
    pub(crate) fn new(args: &[&str]) -> Self {
        Self {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..Self::default()
        }
    }

    pub(crate) fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub(crate) fn env(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.env.push((key, value.into()));
        self
    }

    pub(crate) fn stdin(mut self, text: impl Into<String>) -> Self {
        self.stdin = Some(text.into());
        self
    }

    pub(crate) async fn run(self) -> Out {
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::cargo_bin("fluxgate").expect("fluxgate binary");
            for var in [
                "FLUXGATE_TOKEN",
                "FLUXGATE_TOKEN_FILE",
                "FLUXGATE_AUTHZ",
                "FLUXGATE_CONFIG",
            ] {
                cmd.env_remove(var);
            }
            cmd.args(&self.args).timeout(Duration::from_secs(60));
            for (k, v) in &self.env {
                cmd.env(k, v);
            }
            cmd.write_stdin(self.stdin.clone().unwrap_or_default());
            let output = cmd.output().expect("run fluxgate");
            Out {
                code: output.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }
        })
        .await
        .expect("join")
    }
}

/// Mode 0600.
pub(crate) fn private(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// A token service plus a token file holding its management token.
pub(crate) struct Fixture {
    pub(crate) server: TokenServer,
    pub(crate) token_file: PathBuf,
    dir: tempfile::TempDir,
}

impl Fixture {
    pub(crate) async fn start() -> Self {
        Self::over(TokenServer::start().await)
    }

    /// A fixture around `server`.
    pub(crate) fn over(server: TokenServer) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let token_file = dir.path().join("management-token");
        // A trailing newline, as a file mounted from a secret has; private,
        // as a secret file should be (else the CLI warns).
        std::fs::write(&token_file, format!("{}\n", server.management_token)).expect("write");
        private(&token_file);
        Self {
            server,
            token_file,
            dir,
        }
    }

    /// `args` with `--authz` and `--token-file` of this fixture.
    pub(crate) fn cmd(&self, args: &[&str]) -> Cmd {
        Cmd::new(args)
            .arg("--authz")
            .arg(self.server.url())
            .arg("--token-file")
            .arg(self.token_file.display().to_string())
    }

    /// `args` with `--authz` only: credentials come from elsewhere.
    pub(crate) fn bare(&self, args: &[&str]) -> Cmd {
        Cmd::new(args).arg("--authz").arg(self.server.url())
    }

    pub(crate) fn mgmt(&self) -> &str {
        &self.server.management_token
    }

    /// Writes a file readable by its owner only.
    pub(crate) fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        private(&path);
        path
    }

    /// Creates a database token through the CLI; returns its JSON.
    pub(crate) async fn create(&self, args: &[&str]) -> Value {
        let mut all = vec!["token", "create", "--format", "json"];
        all.extend_from_slice(args);
        let out = self.cmd(&all).run().await;
        out.ok().json()
    }
}

pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} in {v}"))
}

pub(crate) fn perms(v: &Value) -> Vec<(String, bool, bool)> {
    v["permissions"]
        .as_array()
        .expect("permissions array")
        .iter()
        .map(|p| {
            (
                str_of(p, "database").to_owned(),
                p["read"].as_bool().expect("read"),
                p["write"].as_bool().expect("write"),
            )
        })
        .collect()
}

pub(crate) fn p(db: &str, read: bool, write: bool) -> (String, bool, bool) {
    (db.to_owned(), read, write)
}

pub(crate) fn rfc3339(v: &Value, key: &str) -> SystemTime {
    humantime::parse_rfc3339(str_of(v, key)).expect("RFC 3339")
}

/// `"token list --format json"` as separate arguments (none with spaces).
pub(crate) fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// A port nothing listens on.
pub(crate) fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Removes a keyring entry when dropped, so a failed test leaves none.
pub(crate) struct KeyringEntry(pub(crate) String);

impl Drop for KeyringEntry {
    fn drop(&mut self) {
        let _ = keyring_store::delete(&self.0);
    }
}

/// Whether the OS keyring works here; prints why a test is skipped if not.
pub(crate) fn keyring_usable(test: &str) -> bool {
    let user = format!(
        "fluxgate-test-probe-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let _cleanup = KeyringEntry(user.clone());
    let result = keyring_store::set(&user, "probe").and_then(|()| keyring_store::get(&user));
    match result {
        Ok(Some(v)) if v == "probe" => true,
        Ok(other) => {
            eprintln!("SKIPPED {test}: the OS keyring did not keep a value ({other:?})");
            false
        }
        Err(e) => {
            eprintln!(
                "SKIPPED {test}: the OS keyring is unavailable here: {}",
                keyring_store::describe(&e)
            );
            false
        }
    }
}

pub(crate) fn path_str(p: &Path) -> String {
    p.display().to_string()
}
