//! The management CLI, driven as a user would: the built `fluxgate` binary
//! against a real token service on 127.0.0.1:0 started in this process.
//!
//! Every command runs in `spawn_blocking`, so the in-process server keeps
//! serving while the test waits for the child. Every command also clears
//! the `FLUXGATE_*` variables it does not set on purpose, so the developer's
//! environment cannot leak in. assert_cmd gives the child no terminal, which
//! is exactly the "script" case `revoke` must refuse without `--force`.

// Shared fixtures, written for brevity with unwrap on fixed inputs.
#[allow(clippy::unwrap_used)]
mod common;
#[path = "cli/support.rs"]
mod support;

use std::time::{Duration, SystemTime};

use fluxgate::cli::keyring_store;
use support::{
    Cmd, Fixture, KeyringEntry, closed_port, keyring_usable, p, path_str, perms, rfc3339, str_of,
    words,
};

#[tokio::test(flavor = "multi_thread")]
async fn token_create_prints_the_token_once_and_list_get_never_do() {
    let f = Fixture::start().await;

    let table = f
        .cmd(&words(
            "token create --read-database db1 --write-database db2",
        ))
        .arg("telegraf east")
        .run()
        .await;
    table.ok();
    let lines: Vec<&str> = table.stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("Token (shown only this once)"))
        .expect("token heading");
    let secret_a = lines[at + 1].to_owned();
    assert!(secret_a.starts_with("fgdb_"), "{secret_a}");
    assert!(lines[at + 2].contains("secret store"), "{}", lines[at + 2]);
    assert_eq!(table.stdout.matches(&secret_a).count(), 1);
    assert!(lines.iter().all(|l| l.chars().count() <= 80));

    let created = f
        .create(&words("--read-database db3 --write-database db3 metrics"))
        .await;
    for key in [
        "id",
        "kind",
        "token",
        "description",
        "permissions",
        "created_at",
        "expires_at",
        "revoked_at",
        "updated_at",
    ] {
        assert!(created.get(key).is_some(), "{key} missing in {created}");
    }
    let (id_b, secret_b) = (str_of(&created, "id"), str_of(&created, "token"));
    assert_eq!(id_b.len(), 36);
    assert_eq!(str_of(&created, "kind"), "database");
    assert_eq!(str_of(&created, "description"), "metrics");
    assert_eq!(perms(&created), vec![p("db3", true, true)]);
    assert!(created["expires_at"].is_null() && created["revoked_at"].is_null());
    rfc3339(&created, "created_at");
    let secrets = [secret_a.as_str(), secret_b, f.mgmt()];

    let list = f.cmd(&["token", "list"]).run().await;
    list.ok().clean(&secrets);
    assert!(list.stdout.contains(id_b) && list.stdout.contains("read:db1 write:db2"));
    assert!(list.stdout.lines().all(|l| l.chars().count() <= 80));

    let list = f.cmd(&["token", "list", "--format", "json"]).run().await;
    let items = list.ok().clean(&secrets).json();
    let items = items.as_array().expect("array");
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|t| t.get("token").is_none()));
    assert_eq!(str_of(&items[1], "id"), id_b);

    let get = f.cmd(&["token", "get", id_b]).run().await;
    get.ok().clean(&secrets);
    assert!(get.stdout.contains(id_b) && get.stdout.contains("metrics"));
    let get = f
        .cmd(&["token", "get", id_b, "--format", "json"])
        .run()
        .await;
    let one = get.ok().clean(&secrets).json();
    assert!(one.is_object() && one.get("token").is_none());
    assert_eq!(str_of(&one, "id"), id_b);
    assert_eq!(perms(&one), vec![p("db3", true, true)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn wildcard_and_expiry_flags() {
    let f = Fixture::start().await;
    let before = SystemTime::now();
    let t = f
        .create(&["--read-database", "*", "--expires-in", "90d", "all readers"])
        .await;
    assert_eq!(perms(&t), vec![p("*", true, false)]);
    let expires = rfc3339(&t, "expires_at");
    let ninety = Duration::from_secs(90 * 86_400);
    assert!(expires >= before + ninety - Duration::from_secs(2));
    assert!(expires <= SystemTime::now() + ninety);

    let t = f
        .create(&words(
            "--write-database w --expires-at 2099-01-01T02:00:00+02:00 x",
        ))
        .await;
    assert_eq!(str_of(&t, "expires_at"), "2099-01-01T00:00:00.000Z");
    let table = f.cmd(&["token", "get", str_of(&t, "id")]).run().await;
    assert!(table.ok().stdout.contains("2099-01-01T00:00:00Z"));

    for (bad, needle) in [
        (vec!["--expires-in", "soon"], "--expires-in"),
        (
            vec!["--expires-at", "2020-01-01T00:00:00Z"],
            "not in the future",
        ),
        (vec!["--expires-at", "2099-01-01"], "--expires-at"),
    ] {
        let mut args = vec!["token", "create", "--read-database", "db"];
        args.extend(bad);
        args.push("x");
        f.cmd(&args).run().await.code(2).one_error_line(needle);
    }
    let both = f
        .cmd(&words("token create --read-database db --expires-in 1d"))
        .arg("--expires-at")
        .arg("2099-01-01T00:00:00Z")
        .arg("x")
        .run()
        .await;
    both.code(2);
}

#[tokio::test(flavor = "multi_thread")]
async fn update_replaces_permissions_and_description() {
    let f = Fixture::start().await;
    let t = f
        .create(&words("--read-database db1 --write-database db2 old"))
        .await;
    let id = str_of(&t, "id");
    let updated = f
        .cmd(&[
            "token",
            "update",
            id,
            "--write-database",
            "db3",
            "--description",
            "new",
        ])
        .arg("--format")
        .arg("json")
        .run()
        .await;
    let u = updated.ok().json();
    assert_eq!(perms(&u), vec![p("db3", false, true)]);
    assert!(u.get("token").is_none());
    let got = f.cmd(&["token", "get", id, "--format", "json"]).run().await;
    let g = got.ok().json();
    assert_eq!(perms(&g), vec![p("db3", false, true)]);
    assert_eq!(str_of(&g, "description"), "new");
    rfc3339(&g, "updated_at");

    let table = f
        .cmd(&["token", "update", id, "--read-database", "*"])
        .run()
        .await;
    assert!(table.ok().stdout.contains("read:*"));
    let g = f
        .cmd(&["token", "get", id, "--format", "json"])
        .run()
        .await
        .json();
    assert_eq!(perms(&g), vec![p("*", true, false)]);
    assert_eq!(str_of(&g, "description"), "new");

    f.cmd(&["token", "update", id, "--description", "only"])
        .run()
        .await
        .code(2)
        .one_error_line("--read-database");
    let missing = "00000000-0000-0000-0000-000000000000";
    f.cmd(&["token", "update", missing, "--read-database", "db"])
        .run()
        .await
        .code(4)
        .one_error_line(missing);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_needs_force_without_a_terminal_and_reports_each_id() {
    let f = Fixture::start().await;
    let a = f.create(&["--read-database", "db", "a"]).await;
    let b = f.create(&["--read-database", "db", "b"]).await;
    let (id_a, id_b) = (str_of(&a, "id"), str_of(&b, "id"));

    f.cmd(&["token", "revoke", id_a])
        .run()
        .await
        .code(2)
        .one_error_line("--force");
    let still = f
        .cmd(&["token", "get", id_a, "--format", "json"])
        .run()
        .await;
    assert!(still.ok().json()["revoked_at"].is_null());

    let out = f.cmd(&["token", "revoke", "--force", id_a]).run().await;
    assert!(
        out.ok()
            .stdout
            .contains(&format!("Revoked database token {id_a}"))
    );
    let list = f
        .cmd(&["token", "list", "--format", "json"])
        .run()
        .await
        .json();
    let ids: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|t| str_of(t, "id"))
        .collect();
    assert_eq!(ids, vec![id_b]);
    let all = f
        .cmd(&words("token list --include-revoked --format json"))
        .run()
        .await
        .json();
    let revoked = all
        .as_array()
        .expect("array")
        .iter()
        .find(|t| str_of(t, "id") == id_a)
        .expect("revoked token listed");
    rfc3339(revoked, "revoked_at");
    let table = f.cmd(&["token", "list", "--include-revoked"]).run().await;
    let row = table
        .ok()
        .stdout
        .lines()
        .find(|l| l.starts_with(id_a))
        .expect("row")
        .to_owned();
    assert!(row.contains("revoked"), "{row}");

    let missing = "11111111-1111-1111-1111-111111111111";
    let out = f
        .cmd(&["token", "revoke", "--force", missing, id_b])
        .run()
        .await;
    out.code(4).one_error_line(missing);
    assert!(
        out.stdout
            .contains(&format!("Revoked database token {id_b}"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn management_tokens_create_list_and_revoke() {
    let f = Fixture::start().await;
    let table = f
        .cmd(&["management", "create", "--description", "ci"])
        .run()
        .await;
    assert!(table.ok().stdout.contains("fgmt_"));
    let created = f
        .cmd(&words(
            "management create --description robot --expires-in 12h",
        ))
        .arg("--format")
        .arg("json")
        .run()
        .await
        .json();
    let (id, secret) = (str_of(&created, "id"), str_of(&created, "token"));
    assert_eq!(str_of(&created, "kind"), "management");
    rfc3339(&created, "expires_at");
    assert!(perms(&created).is_empty());

    // The new token manages tokens.
    let out = f
        .bare(&["management", "list", "--format", "json"])
        .env("FLUXGATE_TOKEN", secret)
        .run()
        .await;
    let list = out.ok().clean(&[secret, f.mgmt()]).json();
    assert_eq!(list.as_array().expect("array").len(), 3);
    let table = f.cmd(&["management", "list"]).run().await;
    table.ok().clean(&[secret, f.mgmt()]);
    assert!(table.stdout.contains(id) && table.stdout.contains("EXPIRES"));

    f.cmd(&["management", "revoke", id]).run().await.code(2);
    f.cmd(&["management", "revoke", "--force", id])
        .run()
        .await
        .ok();
    f.bare(&["management", "list"])
        .env("FLUXGATE_TOKEN", secret)
        .run()
        .await
        .code(3)
        .clean(&[secret]);
    let list = f
        .cmd(&["management", "list", "--format", "json"])
        .run()
        .await;
    assert_eq!(list.ok().json().as_array().expect("array").len(), 2);
    let all = f
        .cmd(&words("management list --include-revoked --format json"))
        .run()
        .await;
    assert_eq!(all.ok().json().as_array().expect("array").len(), 3);
    // A database token id is not a management token.
    let db = f.create(&["--read-database", "db", "d"]).await;
    f.cmd(&["management", "revoke", "--force", str_of(&db, "id")])
        .run()
        .await
        .code(4);
}

#[tokio::test(flavor = "multi_thread")]
async fn error_paths_have_their_exit_codes_and_never_show_tokens() {
    let f = Fixture::start().await;
    let (db_id, db_secret) = f.server.database_token(&[("db", true, true)]).await;
    let mgmt = f.mgmt().to_owned();
    let secrets = [mgmt.as_str(), db_secret.as_str()];

    // No token anywhere (nothing in the keyring for this fresh URL).
    f.bare(&["token", "list"])
        .run()
        .await
        .code(3)
        .one_error_line("--token-file")
        .one_error_line("FLUXGATE_TOKEN")
        .one_error_line("fluxgate login");
    // Unknown token; a database token used as a management token.
    f.bare(&["token", "list"])
        .env("FLUXGATE_TOKEN", "fgmt_unknownunknownunknown")
        .run()
        .await
        .code(3)
        .one_error_line("refused")
        .clean(&["fgmt_unknownunknownunknown"]);
    f.bare(&["token", "list"])
        .env("FLUXGATE_TOKEN", db_secret.clone())
        .run()
        .await
        .code(3)
        .one_error_line("management token")
        .clean(&secrets);
    // Unknown id.
    f.cmd(&["token", "get", "nope"])
        .run()
        .await
        .code(4)
        .one_error_line("nope")
        .clean(&secrets);
    f.cmd(&["token", "revoke", "--force", "nope"])
        .run()
        .await
        .code(4)
        .clean(&secrets);
    f.cmd(&["token", "get", &db_id])
        .run()
        .await
        .ok()
        .clean(&secrets);
    // The service is down.
    let down = format!("http://127.0.0.1:{}", closed_port());
    Cmd::new(&["token", "list", "--authz", &down])
        .env("FLUXGATE_TOKEN", mgmt.clone())
        .run()
        .await
        .code(5)
        .one_error_line("cannot reach the token service")
        .clean(&secrets);
    // No permission; bad URLs.
    f.cmd(&["token", "create", "nothing"])
        .run()
        .await
        .code(2)
        .one_error_line("--read-database")
        .clean(&secrets);
    for bad in [
        "127.0.0.1:8090",
        "ftp://127.0.0.1:1",
        "http://a b",
        "http://h:1/x",
    ] {
        Cmd::new(&["token", "list", "--authz", bad])
            .env("FLUXGATE_TOKEN", mgmt.clone())
            .run()
            .await
            .code(2)
            .one_error_line("invalid --authz URL")
            .clean(&secrets);
    }
    let with_secret = format!("http://user:{mgmt}@127.0.0.1:1");
    Cmd::new(&["token", "list", "--authz", &with_secret])
        .env("FLUXGATE_TOKEN", "x")
        .run()
        .await
        .code(2)
        .clean(&secrets);
    // A token file that does not exist or is empty.
    f.bare(&[
        "token",
        "list",
        "--token-file",
        "/nonexistent/fluxgate-token",
    ])
    .run()
    .await
    .code(3)
    .one_error_line("/nonexistent/fluxgate-token");
    let empty = f.write_file("empty", "\n");
    f.bare(&["token", "list"])
        .arg("--token-file")
        .arg(empty.display().to_string())
        .run()
        .await
        .code(3)
        .one_error_line("empty");
    // An invalid request the service refuses is a usage error.
    let long = "x".repeat(2000);
    f.cmd(&["token", "create", "--read-database", "db", &long])
        .run()
        .await
        .code(2)
        .clean(&secrets);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_file_beats_environment() {
    let f = Fixture::start().await;
    let bogus = "fgmt_bogusbogusbogusbogus";
    let bad_file = f.write_file("bad", &format!("{bogus}\n"));
    // A valid file and an invalid variable: the file wins.
    f.cmd(&["token", "list"])
        .env("FLUXGATE_TOKEN", bogus)
        .run()
        .await
        .ok();
    // An invalid file and a valid variable: the file still wins.
    f.bare(&["token", "list"])
        .arg("--token-file")
        .arg(bad_file.display().to_string())
        .env("FLUXGATE_TOKEN", f.mgmt())
        .run()
        .await
        .code(3)
        .clean(&[bogus, f.mgmt()]);
    // FLUXGATE_TOKEN_FILE is the same option as --token-file.
    f.bare(&["token", "list"])
        .env("FLUXGATE_TOKEN_FILE", f.token_file.display().to_string())
        .env("FLUXGATE_TOKEN", bogus)
        .run()
        .await
        .ok();
    // FLUXGATE_AUTHZ names the service.
    Cmd::new(&["token", "list"])
        .env("FLUXGATE_AUTHZ", f.server.url())
        .env("FLUXGATE_TOKEN", f.mgmt())
        .run()
        .await
        .ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn config_file_keys_apply_to_the_cli() {
    let f = Fixture::start().await;
    // A flat file holds the CLI's keys only: a server's key is named.
    let flat = f.write_file(
        "flat.toml",
        &format!(
            "authz = \"{}\"\ntoken-file = \"{}\"\nlisten = \"127.0.0.1:1\"\n",
            f.server.url(),
            f.token_file.display()
        ),
    );
    let out = Cmd::new(&["token", "list", "--config", &flat.display().to_string()])
        .run()
        .await;
    out.code(2);
    assert!(
        out.stderr
            .contains("`listen` is not an option of `fluxgate token`"),
        "{}",
        out.stderr
    );
    // One sectioned file for the CLI and a server: [cli] is read here.
    let config = f.write_file(
        "fluxgate.toml",
        &format!(
            "[cli]\nauthz = \"{}\"\ntoken-file = \"{}\"\nformat = \"json\"\n\n[serve]\nlisten = \"127.0.0.1:1\"\n",
            f.server.url(),
            f.token_file.display()
        ),
    );
    let config = config.display().to_string();
    let listed = Cmd::new(&["token", "list", "--config", &config])
        .run()
        .await;
    assert!(listed.ok().json().is_array(), "format = json from [cli]");
    Cmd::new(&["management", "list"])
        .env("FLUXGATE_CONFIG", config.clone())
        .run()
        .await
        .ok();
    // A flag beats the file.
    let down = format!("http://127.0.0.1:{}", closed_port());
    Cmd::new(&["token", "list", "--config", &config, "--authz", &down])
        .run()
        .await
        .code(5);
}

#[tokio::test(flavor = "multi_thread")]
async fn help_documents_exit_codes() {
    for cmd in [
        vec!["token", "create", "--help"],
        vec!["token", "revoke", "--help"],
        vec!["management", "list", "--help"],
        vec!["login", "--help"],
    ] {
        let out = Cmd::new(&cmd).run().await;
        assert!(out.ok().stdout.contains("Exit codes:"), "{cmd:?}");
        assert!(out.stdout.contains("4  not found"), "{cmd:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn login_stores_a_verified_token_in_the_keyring() {
    if !keyring_usable("login_stores_a_verified_token_in_the_keyring") {
        return;
    }
    let f = Fixture::start().await;
    let _cleanup = KeyringEntry(f.server.url());
    let (_, db_secret) = f.server.database_token(&[("db", true, false)]).await;

    // A database token is refused and nothing is stored.
    f.bare(&["login"])
        .stdin(format!("{db_secret}\n"))
        .run()
        .await
        .code(3)
        .clean(&[&db_secret]);
    f.bare(&["token", "list"]).run().await.code(3);
    f.bare(&["login"]).stdin("\n").run().await.code(2);

    let out = f
        .bare(&["login"])
        .stdin(format!("{}\n", f.mgmt()))
        .run()
        .await;
    out.ok().clean(&[f.mgmt()]);
    assert!(out.stdout.contains("OS keyring"));
    f.bare(&["token", "list"]).run().await.ok();

    // Precedence: FLUXGATE_TOKEN beats the keyring, the file beats both.
    let bogus = "fgmt_bogusbogusbogusbogus";
    f.bare(&["token", "list"])
        .env("FLUXGATE_TOKEN", bogus)
        .run()
        .await
        .code(3);
    let bad_file = f.write_file("bad", bogus);
    f.bare(&["token", "list", "--token-file", &path_str(&bad_file)])
        .run()
        .await
        .code(3);
    // And a valid FLUXGATE_TOKEN beats a keyring entry that is no longer valid.
    keyring_store::set(&f.server.url(), bogus).expect("overwrite the entry");
    f.bare(&["token", "list"]).run().await.code(3);
    f.bare(&["token", "list"])
        .env("FLUXGATE_TOKEN", f.mgmt())
        .run()
        .await
        .ok();

    // login --token-file, then --remove.
    f.cmd(&["login"]).run().await.ok();
    f.bare(&["token", "list"]).run().await.ok();
    let removed = f.bare(&["login", "--remove"]).run().await;
    assert!(removed.ok().stdout.contains("Removed"));
    f.bare(&["token", "list"]).run().await.code(3);
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_fit_80_columns_with_long_content() {
    let f = Fixture::start().await;
    let long = "a description much longer than any eighty column terminal could show on one line";
    f.create(&[
        "--read-database",
        "alpha",
        "--read-database",
        "beta",
        "--write-database",
        "gamma",
        "--write-database",
        "delta",
        long,
    ])
    .await;
    let list = f.cmd(&["token", "list"]).run().await;
    for line in list.ok().stdout.lines() {
        assert!(line.chars().count() <= 80, "{line:?}");
    }
    assert!(list.stdout.contains('…'));
    let id_len = list
        .stdout
        .lines()
        .nth(1)
        .expect("row")
        .split(' ')
        .next()
        .map(str::len);
    assert_eq!(id_len, Some(36));
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_tokens_create_list_and_revoke() {
    let f = Fixture::start().await;
    let table = f
        .cmd(&["proxy-token", "create", "sidecars of pool A"])
        .run()
        .await;
    assert!(table.ok().stdout.contains("fgpx_"), "{}", table.stdout);
    assert!(table.stdout.contains("proxy"));
    let created = f
        .cmd(&words(
            "proxy-token create --expires-in 30d --format json pool-b",
        ))
        .run()
        .await
        .json();
    let (id, secret) = (str_of(&created, "id"), str_of(&created, "token"));
    assert_eq!(str_of(&created, "kind"), "proxy");
    rfc3339(&created, "expires_at");
    let list = f
        .cmd(&["proxy-token", "list", "--format", "json"])
        .run()
        .await;
    let list = list.ok().clean(&[secret, f.mgmt()]).json();
    assert_eq!(list.as_array().expect("array").len(), 2);
    // Not a management token: it cannot manage tokens.
    f.bare(&["token", "list"])
        .env("FLUXGATE_TOKEN", secret)
        .run()
        .await
        .code(3)
        .clean(&[secret]);
    f.cmd(&["proxy-token", "revoke", "--force", id])
        .run()
        .await
        .ok();
    let table = f.cmd(&["proxy-token", "list"]).run().await;
    assert!(!table.ok().stdout.contains(id));
    // A management token id is not a proxy token.
    let mgmt = f
        .cmd(&["management", "list", "--format", "json"])
        .run()
        .await
        .json();
    let mgmt_id = mgmt[0]["id"].as_str().expect("id").to_owned();
    f.cmd(&["proxy-token", "revoke", "--force", &mgmt_id])
        .run()
        .await
        .code(4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_far_expiry_is_refused_before_anything_is_created() {
    // Issue 18: `--expires-in 9000years` created a token, then the CLI
    // panicked (exit 101) before printing it.
    let f = Fixture::start().await;
    let out = f
        .cmd(&words(
            "token create --read-database x --expires-in 9000years d",
        ))
        .run()
        .await;
    out.code(2);
    assert!(
        out.stderr.contains("9999-12-31T23:59:59Z"),
        "{}",
        out.stderr
    );
    let list = f.cmd(&["token", "list", "--format", "json"]).run().await;
    assert_eq!(list.ok().json().as_array().expect("array").len(), 0);
    // Descriptions the service would refuse are refused here first.
    let out = f
        .cmd(&["token", "create", "--read-database", "x", "two\nlines"])
        .run()
        .await;
    out.code(2);
    assert!(out.stderr.contains("control character"), "{}", out.stderr);
    // The last accepted instant works and prints.
    let created = f
        .create(&[
            "--read-database",
            "x",
            "--expires-at",
            "9999-12-31T23:59:59Z",
            "far",
        ])
        .await;
    assert_eq!(str_of(&created, "expires_at"), "9999-12-31T23:59:59.000Z");
}

#[tokio::test(flavor = "multi_thread")]
async fn odd_stored_records_are_listed_escaped_and_never_crash_the_cli() {
    use fluxgate::tokens::model::{DatabasePermission, TokenKind, TokenRecord};
    use fluxgate::tokens::secret::TokenHash;
    // Records as an older version (before the limits) may have stored them.
    let dir = tempfile::tempdir().expect("tempdir");
    let far = SystemTime::UNIX_EPOCH + Duration::from_secs(9000 * 366 * 86_400);
    let record = TokenRecord {
        id: "odd-1".into(),
        kind: TokenKind::Database,
        description: "line\n\u{1b}[2J\u{202e}evil".into(),
        permissions: vec![DatabasePermission {
            database: "x\u{200b}".into(),
            read: true,
            write: false,
        }],
        hash: TokenHash::of(b"fgdb_odd"),
        created_at: SystemTime::now(),
        expires_at: Some(far),
        revoked_at: None,
        updated_at: None,
    };
    common::seed_record(dir.path(), &record).await;
    let f = Fixture::over(common::TokenServer::start_in(dir.path()).await);
    for args in [
        vec!["token", "list"],
        vec!["token", "get", "odd-1"],
        vec!["token", "list", "--format", "json"],
        vec!["token", "get", "odd-1", "--format", "json"],
    ] {
        let out = f.cmd(&args).run().await;
        out.ok();
        assert!(
            !out.stdout
                .chars()
                .any(|c| (c.is_control() && c != '\n') || fluxgate::tokens::unicode::is_format(c)),
            "{args:?} prints raw control or format characters: {:?}",
            out.stdout
        );
        if args.contains(&"json") {
            let v = out.json();
            let item = if v.is_array() { v[0].clone() } else { v };
            assert_eq!(
                item["description"], "line\n\u{1b}[2J\u{202e}evil",
                "the same string once parsed"
            );
            assert_eq!(item["expires_at"], "after 9999-12-31T23:59:59Z");
        } else {
            assert!(out.stdout.contains("\\u{1b}"), "{}", out.stdout);
            assert!(out.stdout.contains("x\\u{200b}"), "{}", out.stdout);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_file_others_can_read_is_used_with_a_warning() {
    use std::os::unix::fs::PermissionsExt as _;
    let f = Fixture::start().await;
    std::fs::set_permissions(&f.token_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = f.cmd(&["token", "list"]).run().await;
    out.ok();
    assert!(
        out.stderr
            .contains("is readable by group or others (mode 644)")
            && out.stderr.contains("chmod 600"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(f.mgmt()));
}
