//! Startup errors of the real binary: a missing, unreadable, empty,
//! truncated or mismatched certificate or key stops fluxgate before it
//! listens, with a non-zero exit and a message naming the option and file.

use std::path::Path;
use std::process::{Command, Stdio};

use super::certs::Ca;
use super::common::binary::binary;

/// Runs `fluxgate <command> …` with free ports and `extra`; returns the exit
/// code and everything it wrote.
fn run(dir: &Path, command: &str, extra: &[String]) -> (i32, String) {
    let mut args = vec![
        command.to_owned(),
        "--listen=127.0.0.1:0".to_owned(),
        "--admin-listen=127.0.0.1:0".to_owned(),
        format!("--data-dir={}", dir.join("data").display()),
    ];
    match command {
        "serve" => args.extend([
            "--authz-listen=127.0.0.1:0".to_owned(),
            "--upstream=http://127.0.0.1:9".to_owned(),
        ]),
        "proxy" => {
            args.retain(|a| !a.starts_with("--data-dir"));
        }
        _ => {}
    }
    args.extend_from_slice(extra);
    let mut cmd = Command::new(binary());
    cmd.args(&args).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("FLUXGATE_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Asserts a failure before listening whose output contains `needle`.
fn fails_with(dir: &Path, command: &str, extra: &[String], needle: &str) {
    let (code, output) = run(dir, command, extra);
    assert_ne!(code, 0, "{command} {extra:?} should fail:\n{output}");
    assert!(output.contains(needle), "{needle:?} not in:\n{output}");
    assert!(
        !output.contains(" listening"),
        "it listened before failing:\n{output}"
    );
}

fn pair(cert: &Path, key: &Path) -> Vec<String> {
    vec![
        format!("--tls-cert={}", cert.display()),
        format!("--tls-key={}", key.display()),
    ]
}

#[test]
fn bad_listener_files_are_named_and_nothing_listens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("fluxgate test CA");
    let (cert, key) = ca.server("proxy").write(d, "proxy");
    let (_, other_key) = ca.server("other").write(d, "other");
    let missing = d.join("missing.pem");
    let truncated = d.join("truncated.pem");
    let text = std::fs::read_to_string(&cert).unwrap();
    std::fs::write(&truncated, &text[..text.len() - 40]).unwrap();
    let encrypted = d.join("encrypted.key");
    std::fs::write(
        &encrypted,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let garbage = d.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();

    let name = |p: &Path| p.display().to_string();
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            pair(&missing, &key),
            format!("--tls-cert {}: no such file", name(&missing)),
        ),
        (
            pair(&cert, &missing),
            format!("--tls-key {}: no such file", name(&missing)),
        ),
        // A directory stands for an unreadable file: the tests run as root,
        // whom file modes do not stop.
        (
            pair(d, &key),
            format!("--tls-cert {}: cannot read it", name(d)),
        ),
        (
            pair(&key, &key),
            format!("--tls-cert {}: no certificate in it", name(&key)),
        ),
        (
            pair(&garbage, &key),
            format!("--tls-cert {}: no certificate in it", name(&garbage)),
        ),
        (
            pair(&cert, &cert),
            format!("--tls-key {}: no private key in it", name(&cert)),
        ),
        (
            pair(&cert, &encrypted),
            format!(
                "--tls-key {}: the private key is encrypted",
                name(&encrypted)
            ),
        ),
        (
            pair(&truncated, &key),
            format!("--tls-cert {}: malformed PEM", name(&truncated)),
        ),
        (
            pair(&cert, &other_key),
            format!(
                "--tls-key {}: the private key does not match the certificate in --tls-cert {}",
                name(&other_key),
                name(&cert)
            ),
        ),
    ];
    for (extra, needle) in &cases {
        fails_with(
            d,
            "proxy",
            &[extra.clone(), vec!["--upstream=http://127.0.0.1:9".into()]].concat(),
            needle,
        );
    }
    // The same checks guard `serve`.
    fails_with(d, "serve", &cases[0].0, &cases[0].1);
    fails_with(d, "serve", &cases[8].0, &cases[8].1);
}

#[test]
fn bad_token_service_and_client_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("fluxgate test CA");
    let (cert, key) = ca.server("authz").write(d, "authz");
    let missing = d.join("missing.pem");
    let m = missing.display();

    // `fluxgate authz`: --tls-cert, --tls-key, --client-ca.
    let mut extra = pair(&cert, &key);
    extra.push(format!("--client-ca={m}"));
    fails_with(
        d,
        "authz",
        &extra,
        &format!("--client-ca {m}: no such file"),
    );
    fails_with(
        d,
        "authz",
        &pair(&missing, &key),
        &format!("--tls-cert {m}: no such file"),
    );

    // `fluxgate serve` names the token service's files --authz-*.
    let serve_extra = vec![
        format!("--authz-tls-cert={}", cert.display()),
        format!("--authz-tls-key={m}"),
    ];
    fails_with(
        d,
        "serve",
        &serve_extra,
        &format!("--authz-tls-key {m}: no such file"),
    );
    let serve_extra = vec![
        format!("--authz-tls-cert={}", cert.display()),
        format!("--authz-tls-key={}", key.display()),
        format!("--authz-client-ca={}", key.display()),
    ];
    fails_with(
        d,
        "serve",
        &serve_extra,
        &format!("--authz-client-ca {}: no certificate in it", key.display()),
    );

    // `fluxgate proxy`: the upstream and token-service client files.
    let https_upstream = "--upstream=https://127.0.0.1:9".to_owned();
    fails_with(
        d,
        "proxy",
        &[https_upstream.clone(), format!("--upstream-ca={m}")],
        &format!("--upstream-ca {m}: no such file"),
    );
    fails_with(
        d,
        "proxy",
        &[
            "--upstream=http://127.0.0.1:9".to_owned(),
            format!("--upstream-ca={}", cert.display()),
        ],
        "only applies to an https:// --upstream",
    );
    fails_with(
        d,
        "proxy",
        &[
            https_upstream.clone(),
            "--authz=https://127.0.0.1:9".to_owned(),
            format!("--authz-ca={m}"),
        ],
        &format!("--authz-ca {m}: no such file"),
    );
    fails_with(
        d,
        "proxy",
        &[
            https_upstream,
            "--authz=http://127.0.0.1:9".to_owned(),
            format!("--authz-ca={}", cert.display()),
        ],
        "only apply to an https:// --authz URL",
    );

    // Half a pair is a usage error (exit 2) before any file is read.
    let (code, output) = run(
        d,
        "proxy",
        &[
            "--upstream=http://127.0.0.1:9".to_owned(),
            format!("--tls-cert={}", cert.display()),
        ],
    );
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("--tls-key"), "{output}");
}
