//! `fluxgate proxy` following `fluxgate authz`'s change stream with a proxy
//! token (issue 13 item 4), all as processes: the token made with `fluxgate
//! proxy-token create`, given with `--authz-token-file`. Ready with it; not
//! ready (and saying why) without one or with a management token; a
//! revoked proxy token ends the stream. The upstream token file readable by
//! others gets a warning.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::binary::{Process, binary};
use common::capture::CaptureUpstream;
use common::proxy::{request, send};

/// `fluxgate authz` on ports it picks; its bootstrap management token file.
fn start_authz(dir: &Path) -> (Process, String, PathBuf) {
    let data = dir.join("authz-data");
    let args = [
        "authz".to_owned(),
        "--listen=127.0.0.1:0".to_owned(),
        "--admin-listen=127.0.0.1:0".to_owned(),
        format!("--data-dir={}", data.display()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (process, bound) = Process::listening(&args, &[], &dir.join("authz.log"));
    (
        process,
        format!("http://127.0.0.1:{}", bound.token_service.unwrap()),
        data.join("bootstrap-management-token"),
    )
}

/// Runs the CLI; returns stdout, asserting success.
fn cli(args: &[&str]) -> String {
    let mut cmd = assert_cmd::Command::new(binary());
    cmd.args(args).timeout(Duration::from_secs(30));
    for (k, _) in std::env::vars() {
        if k.starts_with("FLUXGATE_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn secret_file(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A proxy in front of `upstream` using the token service at `authz`.
fn start_proxy(
    dir: &Path,
    name: &str,
    upstream: &str,
    authz: &str,
    extra: &[String],
) -> (Process, u16) {
    let mut args = vec![
        "proxy".to_owned(),
        "--listen=127.0.0.1:0".to_owned(),
        "--admin-listen=127.0.0.1:0".to_owned(),
        format!("--upstream={upstream}"),
        format!("--authz={authz}"),
    ];
    args.extend_from_slice(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (process, bound) = Process::listening(&args, &[], &dir.join(format!("{name}.log")));
    (process, bound.admin.unwrap())
}

/// Polls `/readyz` until it answers `status`; returns the body.
async fn readyz(admin: u16, status: u16, process: &Process) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = send(request(
            "GET",
            &format!("http://127.0.0.1:{admin}/readyz"),
            &[],
            "",
        ))
        .await;
        if reply.status == status {
            return String::from_utf8_lossy(&reply.body).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {} ({:?}):\n{}",
            reply.status,
            reply.body,
            process.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the process log until it contains `needle`.
async fn logged(process: &Process, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !process.log_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} never logged:\n{}",
            process.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_follows_the_change_stream_with_a_proxy_token_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut authz, url, mgmt_file) = start_authz(d);
    let mgmt_file_arg = format!("--token-file={}", mgmt_file.display());
    let created = cli(&[
        "proxy-token",
        "create",
        &format!("--authz={url}"),
        &mgmt_file_arg,
        "--format=json",
        "sidecar",
    ]);
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let proxy_token = created["token"].as_str().unwrap().to_owned();
    let proxy_id = created["id"].as_str().unwrap().to_owned();
    let upstream = CaptureUpstream::start().await;

    // With the proxy token: ready.
    let token_file = secret_file(d, "proxy-token", &proxy_token);
    let (mut good, admin) = start_proxy(
        d,
        "good",
        &upstream.url(),
        &url,
        &[format!("--authz-token-file={}", token_file.display())],
    );
    readyz(admin, 200, &good).await;

    // Without a credential, or with a management token: not ready, and the
    // log says what to do.
    let (mut none, none_admin) = start_proxy(d, "none", &upstream.url(), &url, &[]);
    logged(&none, "give --authz-token-file a proxy token").await;
    let why = readyz(none_admin, 503, &none).await;
    assert!(why.contains("change stream"), "{why}");
    let (mut admin_token, admin_admin) = start_proxy(
        d,
        "mgmt",
        &upstream.url(),
        &url,
        &[format!("--authz-token-file={}", mgmt_file.display())],
    );
    logged(&admin_token, "PermissionDenied").await;
    readyz(admin_admin, 503, &admin_token).await;
    let mgmt = std::fs::read_to_string(&mgmt_file).unwrap();
    for p in [&good, &none, &admin_token] {
        assert!(
            !p.log_text().contains(mgmt.trim()),
            "a token reached the log"
        );
        assert!(
            !p.log_text().contains(&proxy_token),
            "a token reached the log"
        );
    }

    // Revoking the proxy token ends the stream: the proxy is no longer ready.
    cli(&[
        "proxy-token",
        "revoke",
        "--force",
        &format!("--authz={url}"),
        &mgmt_file_arg,
        &proxy_id,
    ]);
    readyz(admin, 503, &good).await;
    for p in [&mut good, &mut none, &mut admin_token] {
        assert_eq!(p.terminate(), 0);
    }
    assert_eq!(authz.terminate(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_files_others_can_read_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let upstream = CaptureUpstream::start().await;
    let file = d.join("upstream-token");
    std::fs::write(&file, "influx-secret\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (mut proxy, admin) = start_proxy(
        d,
        "warn",
        &upstream.url(),
        "http://127.0.0.1:1",
        &[
            format!("--upstream-token-file={}", file.display()),
            "--authz-watch=off".to_owned(),
        ],
    );
    let _ = admin;
    logged(
        &proxy,
        "is readable by group or others (mode 644); restrict it: chmod 600",
    )
    .await;
    assert!(!proxy.log_text().contains("influx-secret"));
    assert_eq!(proxy.terminate(), 0);
}
