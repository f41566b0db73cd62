//! Configuration that would silently weaken fluxgate is refused (issue 18,
//! finding 3), by `check-config` and at start alike, naming the key and the
//! allowed range: zero timeouts and limits, absurd durations, keys of
//! another command (a `serve` file given to `authz`, `client-ca` in a
//! `serve` file), `--audit-required` without an audit destination.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::binary::binary;

/// Runs `fluxgate args…` with a clean environment; (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let mut cmd = assert_cmd::Command::new(binary());
    cmd.args(args).timeout(Duration::from_secs(20));
    for (k, _) in std::env::vars() {
        if k.starts_with("FLUXGATE_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config file for `command` holding `body` plus the keys the command
/// needs to start on loopback ports it picks.
fn config(dir: &Path, name: &str, command: &str, body: &str) -> String {
    let data = dir.join(format!("{name}-data"));
    let base = match command {
        "serve" => format!(
            "upstream = \"http://127.0.0.1:1\"\nlisten = \"127.0.0.1:0\"\nauthz-listen = \"127.0.0.1:0\"\nadmin-listen = \"127.0.0.1:0\"\ndata-dir = \"{}\"\n",
            data.display()
        ),
        "proxy" => "upstream = \"http://127.0.0.1:1\"\nlisten = \"127.0.0.1:0\"\nadmin-listen = \"127.0.0.1:0\"\nauthz = \"http://127.0.0.1:1\"\n".to_owned(),
        "authz" => format!(
            "listen = \"127.0.0.1:0\"\nadmin-listen = \"127.0.0.1:0\"\ndata-dir = \"{}\"\n",
            data.display()
        ),
        other => panic!("{other}"),
    };
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, format!("{base}{body}")).unwrap();
    path.display().to_string()
}

/// Asserts that `check-config --for command` and `fluxgate command` both
/// refuse `body`, with every one of `needles` in the message.
#[track_caller]
fn refused(dir: &Path, name: &str, command: &str, body: &str, needles: &[&str]) {
    let file = config(dir, name, command, body);
    let (code, stdout, stderr) = run(&["check-config", "--config", &file, "--for", command]);
    assert_eq!(code, 2, "check-config accepted {name}: {stdout}{stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "check-config on {name}: {needle:?} not in {stderr}"
        );
    }
    let (code, _, stderr) = run(&[command, "--config", &file]);
    assert_ne!(code, 0, "fluxgate {command} started with {name}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "start with {name}: {needle:?} not in {stderr}"
        );
    }
}

#[test]
fn values_that_disable_a_protection_are_refused_with_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let off = "would turn this protection off";
    for (command, key, value, range) in [
        ("proxy", "authz-timeout", "\"0s\"", "10ms to 5m"),
        ("proxy", "header-read-timeout", "\"0s\"", "100ms to 10m"),
        ("serve", "idle-timeout", "\"0s\"", "100ms to 1day"),
        ("authz", "shutdown-grace", "\"0s\"", "100ms to 1h"),
        ("proxy", "max-connections", "0", "1 to 1000000"),
        ("serve", "max-body", "\"0\"", "1KiB to 1GiB"),
        ("proxy", "max-header-bytes", "\"0\"", "8KiB to 1MiB"),
        ("proxy", "cache-max-entries", "0", "1 to 100000000"),
        ("authz", "authorize-invalid-rate", "0", "1 to 1000000"),
    ] {
        refused(
            d,
            &format!("{command}-{key}"),
            command,
            &format!("{key} = {value}\n"),
            &[&format!("`{key}`"), off, range],
        );
    }
}

#[test]
fn absurd_durations_and_ttls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (key, value, range) in [
        ("stale-grace", "100years", "1s to 1h"),
        ("cache-allow-ttl", "2h", "100ms to 1h"),
        ("cache-deny-ttl", "0s", "100ms to 1h"),
        ("cache-disconnected-allow-ttl", "1day", "100ms to 10m"),
    ] {
        refused(
            d,
            key,
            "proxy",
            &format!("{key} = \"{value}\"\n"),
            &[&format!("`{key}`"), range],
        );
    }
}

#[test]
fn keys_of_another_command_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A serve file given to the token service: it would have come up on the
    // proxy's port with the proxy's certificate and no client CA.
    refused(
        d,
        "serve-file-for-authz",
        "authz",
        "upstream = \"http://127.0.0.1:8087\"\n",
        &["`upstream` is not an option of `fluxgate authz`"],
    );
    refused(
        d,
        "client-ca-in-serve",
        "serve",
        "client-ca = \"/etc/fluxgate/ca.pem\"\n",
        &[
            "`client-ca` is not an option of `fluxgate serve`",
            "calls it `authz-client-ca`",
        ],
    );
    refused(
        d,
        "audit-required-without-a-log",
        "proxy",
        "audit-required = true\n",
        &["--audit-required needs an --audit-log destination"],
    );
}

#[test]
fn check_config_shows_every_setting_and_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), "good", "proxy", "stale-grace = \"30s\"\n");
    let mut cmd = assert_cmd::Command::new(binary());
    cmd.args(["check-config", "--config", &file, "--for", "proxy"])
        .env("FLUXGATE_AUTHZ_TIMEOUT", "3s");
    for (k, _) in std::env::vars() {
        if k.starts_with("FLUXGATE_") && k != "FLUXGATE_AUTHZ_TIMEOUT" {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "stale-grace = \"30s\"  # file",
        "authz-timeout = \"3s\"  # environment FLUXGATE_AUTHZ_TIMEOUT",
        "cache-allow-ttl = \"60s\"  # default",
        "authz-token-file = (unset)",
        "configuration OK for `fluxgate proxy`",
    ] {
        assert!(stdout.contains(line), "{line:?} not in:\n{stdout}");
    }
    // A sectioned file: each command takes its own section.
    let sectioned = dir.path().join("all.toml");
    std::fs::write(
        &sectioned,
        "[proxy]\nupstream = \"http://127.0.0.1:1\"\n\n[authz]\nlisten = \"127.0.0.1:7090\"\n",
    )
    .unwrap();
    let path = sectioned.display().to_string();
    for target in ["proxy", "authz"] {
        let (code, stdout, stderr) = run(&["check-config", "--config", &path, "--for", target]);
        assert_eq!(code, 0, "{stdout}{stderr}");
    }
    let (code, _, stderr) = run(&["check-config", "--config", &path, "--for", "serve"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no [serve] section"), "{stderr}");
}

#[test]
fn unreadable_start_files_fail_check_config_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    refused(
        d,
        "missing-token-file",
        "proxy",
        "authz-token-file = \"/nonexistent/proxy-token\"\n",
        &["--authz-token-file /nonexistent/proxy-token"],
    );
    refused(
        d,
        "missing-tls-key",
        "serve",
        "tls-cert = \"/nonexistent/c.pem\"\ntls-key = \"/nonexistent/k.pem\"\n",
        &["--tls-cert /nonexistent/c.pem"],
    );
    refused(
        d,
        "audit-dir-missing",
        "serve",
        "audit-log = \"/nonexistent/dir/audit.jsonl\"\n",
        &["/nonexistent/dir"],
    );
    // --offline: a configuration checked away from its host (CI), values only.
    let file = config(
        d,
        "elsewhere",
        "serve",
        "tls-cert = \"/nonexistent/c.pem\"\ntls-key = \"/nonexistent/k.pem\"\naudit-log = \"/nonexistent/dir/audit.jsonl\"\n",
    );
    let (code, stdout, stderr) = run(&[
        "check-config",
        "--offline",
        "--config",
        &file,
        "--for",
        "serve",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let file = config(d, "elsewhere-bad", "serve", "max-body = \"0\"\n");
    let (code, _, stderr) = run(&[
        "check-config",
        "--offline",
        "--config",
        &file,
        "--for",
        "serve",
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("`max-body`"), "{stderr}");
}
