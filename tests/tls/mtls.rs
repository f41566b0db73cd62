//! Mutual TLS between the proxy or the CLI and the token service, against
//! the real `fluxgate authz --tls-cert --tls-key --client-ca`: accepted with
//! a client certificate from the trusted CA, refused without one or with one
//! from another CA, and refused when the client does not trust the server.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fluxgate::authz::Authorizer as _;
use fluxgate::authz::client::AuthzClient;
use fluxgate::tls::PemFile;
use fluxgate::tls::client::{ClientFiles, grpc_endpoint};

use super::certs::Ca;
use super::common::binary::{Process, binary};
use super::common::capture::CaptureUpstream;
use super::common::proxy::{request, send};

/// `fluxgate authz` over TLS, requiring client certificates from `ca`.
struct Authz {
    process: Process,
    port: u16,
    ca_file: PathBuf,
    token_file: PathBuf,
}

impl Authz {
    fn start(dir: &Path, ca: &Ca) -> Self {
        let (cert, key) = ca.server("token service").write(dir, "authz");
        let ca_file = ca.write(dir, "ca.pem");
        let data = dir.join("data");
        let args = [
            "authz".to_owned(),
            "--listen=127.0.0.1:0".to_owned(),
            "--admin-listen=127.0.0.1:0".to_owned(),
            format!("--data-dir={}", data.display()),
            format!("--tls-cert={}", cert.display()),
            format!("--tls-key={}", key.display()),
            format!("--client-ca={}", ca_file.display()),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (process, bound) = Process::listening(&args, &[], &dir.join("authz.log"));
        Self {
            process,
            port: bound.token_service.unwrap(),
            ca_file,
            token_file: data.join("bootstrap-management-token"),
        }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }
}

/// Client files: trust `ca_file`, present `identity` (cert, key) if given.
fn files(ca_file: &Path, identity: Option<&(PathBuf, PathBuf)>) -> ClientFiles {
    ClientFiles {
        ca: Some(PemFile::new("--authz-ca", ca_file)),
        cert: identity.map(|(c, _)| PemFile::new("--authz-client-cert", c)),
        key: identity.map(|(_, k)| PemFile::new("--authz-client-key", k)),
    }
}

async fn ready(url: &str, files: &ClientFiles) -> Result<(), String> {
    let endpoint = grpc_endpoint("--authz", &url.parse().unwrap(), files).unwrap();
    AuthzClient::new(endpoint, Duration::from_secs(5))
        .ready()
        .await
}

/// Runs the CLI with a clean environment; returns (exit code, stdout, stderr).
fn cli(args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(binary());
    command.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("FLUXGATE_") {
            command.env_remove(k);
        }
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_service_accepts_only_client_certificates_from_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("fluxgate internal CA");
    let authz = Authz::start(dir.path(), &ca);
    let good = ca.client("proxy-1").write(dir.path(), "proxy-1");
    let stranger = Ca::new("another CA")
        .client("proxy-x")
        .write(dir.path(), "stranger");

    ready(&authz.url(), &files(&authz.ca_file, Some(&good)))
        .await
        .expect("the right client certificate is accepted");
    let refused = ready(&authz.url(), &files(&authz.ca_file, None)).await;
    assert!(refused.is_err(), "no client certificate: {refused:?}");
    let refused = ready(&authz.url(), &files(&authz.ca_file, Some(&stranger))).await;
    assert!(
        refused.is_err(),
        "a certificate from another CA: {refused:?}"
    );

    // A client that does not trust the server's CA refuses it in turn.
    let other_ca = Ca::new("not the server's CA").write(dir.path(), "other-ca.pem");
    let refused = ready(&authz.url(), &files(&other_ca, Some(&good))).await;
    assert!(refused.is_err(), "an untrusted server: {refused:?}");
    let mut authz = authz;
    assert!(authz.process.log_text().contains("TLS enabled"));
    assert_eq!(authz.process.terminate(), 0, "{}", authz.process.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_the_same_client_options() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("fluxgate internal CA");
    let authz = Authz::start(dir.path(), &ca);
    let (cert, key) = ca.client("admin").write(dir.path(), "admin");
    let (other_cert, other_key) = Ca::new("another CA").client("x").write(dir.path(), "x");
    let url = authz.url();
    let ca_arg = format!("--authz-ca={}", authz.ca_file.display());
    let token_file = format!("--token-file={}", authz.token_file.display());
    let list = |extra: &[String]| {
        let mut args = vec![
            "token".to_owned(),
            "list".to_owned(),
            format!("--authz={url}"),
            ca_arg.clone(),
            token_file.clone(),
            "--format=json".to_owned(),
        ];
        args.extend_from_slice(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&args)
    };
    let identity = |c: &Path, k: &Path| {
        vec![
            format!("--authz-client-cert={}", c.display()),
            format!("--authz-client-key={}", k.display()),
        ]
    };

    let (code, stdout, stderr) = list(&identity(&cert, &key));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.trim_start().starts_with('['), "{stdout}");

    for (what, extra) in [
        ("no client certificate", vec![]),
        (
            "another CA's certificate",
            identity(&other_cert, &other_key),
        ),
    ] {
        let (code, _, stderr) = list(&extra);
        assert_eq!(code, 5, "{what}: {stderr}");
        assert!(
            stderr.contains("cannot reach the token service"),
            "{what}: {stderr}"
        );
        assert!(stderr.contains("--authz-client-cert"), "{what}: {stderr}");
    }

    // TLS files with a plain http URL are a usage error, not silently unused.
    let (code, _, stderr) = cli(&[
        "token",
        "list",
        "--authz=http://127.0.0.1:1",
        &ca_arg,
        &token_file,
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("only apply to an https:// --authz URL"),
        "{stderr}"
    );

    // A missing file is named.
    let (code, _, stderr) = cli(&[
        "token",
        "list",
        &format!("--authz={url}"),
        "--authz-ca=/nonexistent/ca.pem",
        &token_file,
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--authz-ca /nonexistent/ca.pem: no such file"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_decides_through_a_mutual_tls_token_service() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("fluxgate internal CA");
    let authz = Authz::start(dir.path(), &ca);
    let (cert, key) = ca.client("proxy-1").write(dir.path(), "proxy-1");
    let (code, stdout, stderr) = cli(&[
        "token",
        "create",
        &format!("--authz={}", authz.url()),
        &format!("--authz-ca={}", authz.ca_file.display()),
        &format!("--authz-client-cert={}", cert.display()),
        &format!("--authz-client-key={}", key.display()),
        &format!("--token-file={}", authz.token_file.display()),
        "--write-database=mydb",
        "--format=json",
        "telegraf",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let created: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let token = created["token"].as_str().unwrap().to_owned();

    let upstream = CaptureUpstream::start().await;
    let args = [
        "proxy".to_owned(),
        "--listen=127.0.0.1:0".to_owned(),
        "--admin-listen=127.0.0.1:0".to_owned(),
        format!("--upstream={}", upstream.url()),
        format!("--authz={}", authz.url()),
        format!("--authz-ca={}", authz.ca_file.display()),
        format!("--authz-client-cert={}", cert.display()),
        format!("--authz-client-key={}", key.display()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut proxy, bound) = Process::listening(&args, &[], &dir.path().join("proxy.log"));
    let (port, admin) = (bound.proxy.unwrap(), bound.admin.unwrap());
    // Ready means following the change stream: its client certificate,
    // verified by the token service, is credential enough (no proxy token).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ready = send(request(
            "GET",
            &format!("http://127.0.0.1:{admin}/readyz"),
            &[],
            "",
        ))
        .await;
        if ready.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready: {:?}\n{}",
            ready.body,
            proxy.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let reply = send(request(
        "POST",
        &format!("http://127.0.0.1:{port}/write?db=mydb"),
        &[("authorization", &format!("Token {token}"))],
        "cpu value=1",
    ))
    .await;
    assert_eq!(reply.status, 204, "{:?}\n{}", reply.body, proxy.log_text());
    assert_eq!(upstream.last().body, "cpu value=1");
    let reply = send(request(
        "POST",
        &format!("http://127.0.0.1:{port}/write?db=other"),
        &[("authorization", &format!("Token {token}"))],
        "cpu value=1",
    ))
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(proxy.terminate(), 0);
}
