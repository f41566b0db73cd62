//! The configuration file read as users write it: sections, precedence,
//! keys that belong to another command, and values out of range.

use super::*;
use crate::config::Command;

fn file(contents: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, contents.as_bytes()).unwrap();
    f
}

fn proxy(args: &[&str]) -> Result<crate::config::ProxyArgs, ConfigError> {
    let mut argv = vec!["fluxgate", "proxy"];
    argv.extend_from_slice(args);
    match parse_args(argv)?.command {
        Command::Proxy(p) => Ok(p),
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn file_values_apply_under_flags() {
    let f = file(
        "upstream = \"http://db:8087\"\nlisten = \"127.0.0.1:9999\"\nauthz_timeout = \"5s\"\nallow-path = [\"/a\", \"/b\"]\n",
    );
    let path = f.path().to_str().unwrap();
    let p = proxy(&["--config", path]).unwrap();
    assert_eq!(p.proxy.upstream.to_string(), "http://db:8087/");
    assert_eq!(p.proxy.listen.port(), 9999);
    assert_eq!(p.proxy.authz_timeout.0, std::time::Duration::from_secs(5));
    assert_eq!(p.proxy.allow_paths, vec!["/a", "/b"]);
    // A flag beats the file; defaults fill the rest.
    let p = proxy(&[
        "--config",
        path,
        "--listen",
        "127.0.0.1:1234",
        "--allow-path",
        "/c",
    ])
    .unwrap();
    assert_eq!(p.proxy.listen.port(), 1234);
    assert_eq!(p.proxy.allow_paths, vec!["/c"]);
    assert_eq!(p.proxy.max_body.0, 1 << 20);
}

#[test]
fn bad_keys_and_values_are_named() {
    let f = file("upstream = \"http://db:8087\"\nlisten_adress = \"x\"\n");
    match proxy(&["--config", f.path().to_str().unwrap()]) {
        Err(ConfigError::UnknownKey { key, .. }) => assert_eq!(key, "listen-adress"),
        other => panic!("{other:?}"),
    }
    let f = file("upstream = \"http://db:8087\"\nauthz-timeout = \"soon\"\n");
    match proxy(&["--config", f.path().to_str().unwrap()]) {
        Err(ConfigError::BadValue { key, .. }) => assert_eq!(key, "authz-timeout"),
        other => panic!("{other:?}"),
    }
    let f = file("upstream = \"http://db:8087\"\nmax-connections = [1, 2]\n");
    assert!(matches!(
        proxy(&["--config", f.path().to_str().unwrap()]),
        Err(ConfigError::BadValue { .. })
    ));
    let f = file("this is = not toml");
    assert!(matches!(
        proxy(&["--config", f.path().to_str().unwrap()]),
        Err(ConfigError::Syntax { .. })
    ));
    // A key of another command is an error naming it and the command.
    let f = file("upstream = \"http://db:8087\"\ndata-dir = \"/var/lib/fluxgate\"\n");
    match proxy(&["--config", f.path().to_str().unwrap()]) {
        Err(e @ ConfigError::NotForCommand { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("`data-dir` is not an option of `fluxgate proxy`"),
                "{text}"
            );
            assert!(
                text.contains("`fluxgate serve`") && text.contains("`fluxgate authz`"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
}

fn parse(args: &[&str]) -> Result<Command, ConfigError> {
    let mut argv = vec!["fluxgate"];
    argv.extend_from_slice(args);
    parse_args(argv).map(|c| c.command)
}

#[test]
fn a_serve_file_is_refused_by_authz_and_client_ca_is_named() {
    let f = file(
        "listen = \"127.0.0.1:8086\"\nupstream = \"http://db:8087\"\nauthz-listen = \"127.0.0.1:8090\"\n",
    );
    let path = f.path().to_str().unwrap();
    let e = parse(&["authz", "--config", path]).unwrap_err().to_string();
    assert!(e.contains("not an option of `fluxgate authz`"), "{e}");
    let f = file("upstream = \"http://db:8087\"\nclient-ca = \"/etc/ca.pem\"\n");
    let e = parse(&["serve", "--config", f.path().to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`client-ca` is not an option of `fluxgate serve`"),
        "{e}"
    );
    assert!(e.contains("calls it `authz-client-ca`"), "{e}");
}

#[test]
fn sectioned_files_serve_several_commands() {
    let f = file(
        "[serve]\nupstream = \"http://db:8087\"\nauthz-client-ca = \"/ca.pem\"\nauthz-tls-cert = \"/c.pem\"\nauthz-tls-key = \"/k.pem\"\n\n[authz]\nlisten = \"127.0.0.1:7090\"\n\n[cli]\nauthz = \"http://127.0.0.1:7090\"\nformat = \"json\"\n",
    );
    let path = f.path().to_str().unwrap();
    match parse(&["authz", "--config", path]).unwrap() {
        Command::Authz(a) => assert_eq!(a.listen.port(), 7090),
        other => panic!("{other:?}"),
    }
    match parse(&["serve", "--config", path]).unwrap() {
        Command::Serve(a) => assert!(a.authz_tls.authz_client_ca.is_some()),
        other => panic!("{other:?}"),
    }
    // [cli] serves every management command; `format` is ignored by
    // those without one.
    assert!(parse(&["token", "list", "--config", path]).is_ok());
    assert!(parse(&["token", "revoke", "--force", "x", "--config", path]).is_ok());
    let e = parse(&["proxy", "--config", path]).unwrap_err().to_string();
    assert!(e.contains("no [proxy] section"), "{e}");
    let f = file("listen = \"127.0.0.1:1\"\n[authz]\nlisten = \"127.0.0.1:2\"\n");
    let e = parse(&["authz", "--config", f.path().to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`listen` is outside any section"), "{e}");
    let f = file("[cli]\nupstream = \"http://db\"\n");
    let e = parse(&["token", "list", "--config", f.path().to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`upstream` is not an option of `fluxgate token`"),
        "{e}"
    );
}

#[test]
fn authz_bootstrap_reads_the_token_service_file() {
    // Its store settings apply; the server's own keys are skipped.
    let f = file(
        "listen = \"0.0.0.0:8090\"\ntls-cert = \"/c.pem\"\ntls-key = \"/k.pem\"\ndata-dir = \"/var/lib/x\"\nstore = \"postgres://u@db/fluxgate\"\n",
    );
    let path = f.path().to_str().unwrap();
    match parse(&["authz", "bootstrap", "--config", path]).unwrap() {
        Command::Authz(a) => match a.action {
            Some(crate::config::AuthzAction::Bootstrap(b)) => {
                assert_eq!(b.service.data_dir, std::path::Path::new("/var/lib/x"));
                assert_eq!(b.service.store.as_deref(), Some("postgres://u@db/fluxgate"));
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    // Not a key of anything: still refused.
    let f = file("data-dir = \"/x\"\nlisten-adress = \"x\"\n");
    assert!(parse(&["authz", "bootstrap", "--config", f.path().to_str().unwrap()]).is_err());
    // A proxy's key is not the token service's.
    let f = file("data-dir = \"/x\"\nupstream = \"http://db\"\n");
    assert!(parse(&["authz", "bootstrap", "--config", f.path().to_str().unwrap()]).is_err());
}
