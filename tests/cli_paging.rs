//! The three list commands over more than one page: the built `fluxgate`
//! binary against a real token service on 127.0.0.1:0 whose store holds
//! more tokens than one page, in table and JSON form (one valid array,
//! every id once, oldest first).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
// Shared with tests/cli.rs, which uses all of it.
#[allow(dead_code)]
#[path = "cli/support.rs"]
mod support;

use std::collections::HashSet;

use fluxgate::tokens::TokenRegistry;
use fluxgate::tokens::model::{DatabasePermission, TokenKind, TokenRecord};
use support::{Fixture, str_of};

use common::{Backend, TestStore, TokenServer};

/// A fixture over a store seeded with `n` tokens of `kind` (one
/// transaction), plus the management token the server makes.
async fn seeded(kind: TokenKind, n: usize) -> (Fixture, TestStore) {
    let store = TestStore::new(Backend::Sqlite).await;
    let records: Vec<TokenRecord> = (0..n)
        .map(|i| {
            let permissions = match kind {
                TokenKind::Database => vec![DatabasePermission {
                    database: format!("db{}", i % 7),
                    read: true,
                    write: i.is_multiple_of(2),
                }],
                _ => Vec::new(),
            };
            let (record, _) =
                TokenRegistry::new_token(kind, format!("seeded {i}"), permissions, None).unwrap();
            record
        })
        .collect();
    store.seed(records).await;
    let server = TokenServer::start_over(&store).await;
    (Fixture::over(server), store)
}

/// The ids the registry lists for `kind`, oldest first.
fn expected(f: &Fixture, kind: TokenKind) -> Vec<String> {
    f.server
        .registry
        .list(kind, false)
        .iter()
        .map(|t: &std::sync::Arc<TokenRecord>| t.id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn token_list_streams_many_pages_as_one_table_and_one_json_array() {
    let (f, _store) = seeded(TokenKind::Database, 700).await;
    let ids = expected(&f, TokenKind::Database);
    assert_eq!(ids.len(), 700);

    let json = f
        .cmd(&["token", "list", "--format", "json", "--page-size", "9"])
        .run()
        .await;
    let items = json.ok().clean(&[f.mgmt()]).json();
    let listed: Vec<&str> = items
        .as_array()
        .expect("one array")
        .iter()
        .map(|t| str_of(t, "id"))
        .collect();
    assert_eq!(listed, ids, "every id once, oldest first");

    // Paged JSON is the same document as one page of everything.
    let whole = f
        .cmd(&["token", "list", "--format", "json", "--page-size", "10000"])
        .run()
        .await;
    assert_eq!(whole.ok().stdout, json.stdout);

    let table = f.cmd(&["token", "list", "--page-size", "9"]).run().await;
    table.ok().clean(&[f.mgmt()]);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 701, "one header and a row per token");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("ID ")).count(),
        1,
        "one header"
    );
    assert!(lines.iter().all(|l| l.chars().count() <= 80));
    let rows: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(rows, ids);
    assert!(table.stdout.contains("read:db3"));
}

#[tokio::test(flavor = "multi_thread")]
async fn management_and_proxy_token_lists_page_too() {
    let (f, _store) = seeded(TokenKind::Proxy, 25).await;
    let proxies = expected(&f, TokenKind::Proxy);
    let json = f
        .cmd(&[
            "proxy-token",
            "list",
            "--format",
            "json",
            "--page-size",
            "4",
        ])
        .run()
        .await;
    let items = json.ok().json();
    let listed: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|t| str_of(t, "id"))
        .collect();
    assert_eq!(listed, proxies);
    let table = f
        .cmd(&["proxy-token", "list", "--page-size", "4"])
        .run()
        .await;
    let rows: HashSet<&str> = table
        .ok()
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(rows.len(), 25);

    // Two management tokens (the server's and one more) over pages of one.
    let out = f
        .cmd(&[
            "management",
            "create",
            "--format",
            "json",
            "--description",
            "second",
        ])
        .run()
        .await;
    out.ok();
    let json = f
        .cmd(&["management", "list", "--format", "json", "--page-size", "1"])
        .run()
        .await;
    let items = json.ok().json();
    assert_eq!(items.as_array().unwrap().len(), 2);
    let table = f
        .cmd(&["management", "list", "--page-size", "1"])
        .run()
        .await;
    assert_eq!(table.ok().stdout.lines().count(), 3);

    // Nothing to list: the usual words, and an empty array.
    let empty = f.cmd(&["token", "list", "--page-size", "1"]).run().await;
    assert_eq!(empty.ok().stdout, "No database tokens.\n");
    let empty = f
        .cmd(&["token", "list", "--format", "json", "--page-size", "1"])
        .run()
        .await;
    assert_eq!(empty.ok().stdout, "[]\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn page_sizes_outside_1_to_10000_are_usage_errors() {
    let f = Fixture::start().await;
    for size in ["0", "10001", "-1", "many"] {
        let flag = format!("--page-size={size}");
        let out = f.cmd(&["token", "list", &flag]).run().await;
        assert_ne!(out.code, 0, "--page-size {size}");
        assert!(out.stderr.contains("--page-size"), "{}", out.stderr);
        assert!(out.stdout.is_empty());
    }
}
