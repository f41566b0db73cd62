//! Paged listings: page after page with tokens created and revoked in
//! between (no repeats, no gaps), page tokens that are junk or from another
//! listing, the default and the largest page size, and the byte bound that
//! keeps every response under the clients' 4 MiB message limit.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use fluxgate::proto::tokens as pb;
use fluxgate::tokens::TokenRegistry;
use fluxgate::tokens::model::{DatabasePermission, TokenKind, TokenRecord};
use fluxgate::tokens::paging::{DEFAULT_PAGE_SIZE, MAX_PAGE_BYTES};
use prost::Message as _;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{Backend, TestStore, TokenServer};
use crate::{bearer, create_db_token, db_perm, expect_code, id_of, tokens_client};

type Client = fluxgate::proto::tokens::token_service_client::TokenServiceClient<Channel>;

/// A database token record as the registry would create it.
fn db_record(description: &str, permissions: Vec<DatabasePermission>) -> TokenRecord {
    TokenRegistry::new_token(TokenKind::Database, description.into(), permissions, None)
        .expect("valid token")
        .0
}

fn read(database: &str) -> Vec<DatabasePermission> {
    vec![DatabasePermission {
        database: database.into(),
        read: true,
        write: false,
    }]
}

/// A server over a store seeded with `records` in one transaction.
async fn seeded(backend: Backend, records: Vec<TokenRecord>) -> (TokenServer, TestStore) {
    let store = TestStore::new(backend).await;
    store.seed(records).await;
    (TokenServer::start_over(&store).await, store)
}

async fn page(
    client: &mut Client,
    mgmt: &str,
    include_revoked: bool,
    page_size: u32,
    page_token: String,
) -> pb::ListTokensResponse {
    let request = pb::ListTokensRequest {
        include_revoked,
        page_size,
        page_token,
    };
    let response = client
        .list_database_tokens(bearer(request, mgmt))
        .await
        .expect("list page")
        .into_inner();
    assert!(
        response.encoded_len() <= MAX_PAGE_BYTES + 64,
        "a page of {} bytes",
        response.encoded_len()
    );
    response
}

/// The position a listing sorts a token by.
fn key(t: &pb::TokenInfo) -> (SystemTime, String) {
    (
        SystemTime::try_from(t.created_at.unwrap()).unwrap(),
        t.id.clone(),
    )
}

async fn revoke(client: &mut Client, mgmt: &str, id: &str) {
    client
        .revoke_database_token(bearer(pb::RevokeTokenRequest { id: id.into() }, mgmt))
        .await
        .expect("revoke");
}

async fn pages_neither_repeat_nor_skip_across_creates_and_revokes(backend: Backend) {
    let records: Vec<TokenRecord> = (0..40)
        .map(|i| db_record(&format!("t{i}"), read("db")))
        .collect();
    let (server, _store) = seeded(backend, records).await;
    let mut client = tokens_client(&server).await;
    let mgmt = server.management_token.clone();
    for include_revoked in [false, true] {
        let mut listed: Vec<pb::TokenInfo> = Vec::new();
        let mut created: Vec<String> = Vec::new();
        let mut revoked_ahead: Vec<String> = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let response = page(&mut client, &mgmt, include_revoked, 7, token).await;
            assert!(response.tokens.len() <= 7);
            pages += 1;
            listed.extend(response.tokens);
            if response.next_page_token.is_empty() {
                break;
            }
            token = response.next_page_token;
            // Between pages: a new token, one already listed revoked, and
            // one not yet listed revoked.
            let new = create_db_token(
                &mut client,
                &mgmt,
                "new",
                vec![db_perm("db", true, false)],
                None,
            )
            .await;
            created.push(id_of(&new));
            let behind = listed.last().unwrap().id.clone();
            revoke(&mut client, &mgmt, &behind).await;
            let all = server.registry.list(TokenKind::Database, false);
            let listed_ids: HashSet<&str> = listed.iter().map(|t| t.id.as_str()).collect();
            if let Some(ahead) = all
                .iter()
                .find(|t| !listed_ids.contains(t.id.as_str()) && !created.contains(&t.id))
            {
                revoke(&mut client, &mgmt, &ahead.id).await;
                revoked_ahead.push(ahead.id.clone());
            }
        }
        assert!(pages >= 6, "{pages} pages");
        let keys: Vec<_> = listed.iter().map(key).collect();
        assert!(keys.is_sorted(), "oldest first across pages");
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for t in &listed {
            *seen.entry(&t.id).or_default() += 1;
        }
        assert!(seen.values().all(|&n| n == 1), "no token listed twice");
        // Every token that existed when listing started is listed, except
        // (without --include-revoked) those revoked before their page.
        let everything = server.registry.list(TokenKind::Database, true);
        for t in &everything {
            let ahead = revoked_ahead.contains(&t.id);
            let expected = include_revoked || !ahead;
            assert_eq!(
                seen.contains_key(t.id.as_str()),
                expected,
                "token {} (revoked ahead of the listing: {ahead})",
                t.id
            );
        }
        // Tokens created between pages come after every older one: listed.
        for id in &created {
            assert!(
                seen.contains_key(id.as_str()),
                "created between pages: {id}"
            );
        }
    }
}

async fn junk_page_tokens_are_invalid_argument(backend: Backend) {
    let server = TokenServer::start_on(backend).await;
    let mut client = tokens_client(&server).await;
    let mgmt = server.management_token.clone();
    for _ in 0..3 {
        create_db_token(
            &mut client,
            &mgmt,
            "t",
            vec![db_perm("db", true, false)],
            None,
        )
        .await;
    }
    let management_page = client
        .list_management_tokens(bearer(
            pb::ListTokensRequest {
                page_size: 1,
                ..Default::default()
            },
            &mgmt,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(management_page.tokens.len(), 1);
    assert!(
        management_page.next_page_token.is_empty(),
        "one management token"
    );
    let first = page(&mut client, &mgmt, false, 1, String::new()).await;
    assert!(!first.next_page_token.is_empty());
    let junk = [
        "definitely not a page token".to_owned(),
        "AAAA".to_owned(),
        format!("{}x", first.next_page_token),
        "x".repeat(100_000),
        "\u{202e}".to_owned(),
    ];
    for token in junk {
        let status = expect_code(
            client
                .list_database_tokens(bearer(
                    pb::ListTokensRequest {
                        page_token: token,
                        ..Default::default()
                    },
                    &mgmt,
                ))
                .await,
            Code::InvalidArgument,
        );
        assert!(
            status.message().contains("page_token"),
            "{}",
            status.message()
        );
    }
    // A database listing's token does not continue a proxy listing.
    let status = expect_code(
        client
            .list_proxy_tokens(bearer(
                pb::ListTokensRequest {
                    page_token: first.next_page_token.clone(),
                    ..Default::default()
                },
                &mgmt,
            ))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().contains("database tokens"),
        "{}",
        status.message()
    );
    // The same token continues the listing it came from, any number of times.
    let again = page(&mut client, &mgmt, false, 1, first.next_page_token.clone()).await;
    let twice = page(&mut client, &mgmt, false, 1, first.next_page_token).await;
    assert_eq!(again, twice);
}

async fn page_size_zero_is_the_default_and_a_huge_one_is_accepted(backend: Backend) {
    let n = DEFAULT_PAGE_SIZE + 50;
    let records: Vec<TokenRecord> = (0..n)
        .map(|i| db_record(&format!("t{i}"), read("db")))
        .collect();
    let (server, _store) = seeded(backend, records).await;
    let mut client = tokens_client(&server).await;
    let mgmt = server.management_token.clone();
    // What a client that predates paging sends.
    let old = client
        .list_database_tokens(bearer(pb::ListTokensRequest::default(), &mgmt))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.tokens.len(), DEFAULT_PAGE_SIZE);
    assert!(!old.next_page_token.is_empty());
    let rest = page(&mut client, &mgmt, false, 0, old.next_page_token).await;
    assert_eq!(rest.tokens.len(), 50);
    assert!(rest.next_page_token.is_empty());
    // Above the maximum: taken as the maximum (10,000), not refused.
    let all = page(&mut client, &mgmt, false, u32::MAX, String::new()).await;
    assert_eq!(all.tokens.len(), n);
    assert!(all.next_page_token.is_empty());
    // An exact fit ends without an empty extra page.
    let exact = page(&mut client, &mgmt, true, n as u32, String::new()).await;
    assert_eq!(exact.tokens.len(), n);
    assert!(exact.next_page_token.is_empty());
}

async fn large_tokens_split_pages_under_the_byte_bound(backend: Backend) {
    // About 260 KB each: ten do not fit in one response.
    let records: Vec<TokenRecord> = (0..10)
        .map(|i| {
            let permissions = (0..1000)
                .map(|d| DatabasePermission {
                    database: format!("{i}-{d:04}-{}", "x".repeat(240)),
                    read: true,
                    write: true,
                })
                .collect();
            db_record(&"d".repeat(1024), permissions)
        })
        .collect();
    let (server, _store) = seeded(backend, records).await;
    let mut client = tokens_client(&server).await;
    let mgmt = server.management_token.clone();
    let mut ids = HashSet::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        // page() checks each response's size.
        let response = page(&mut client, &mgmt, false, 100, token).await;
        assert!(!response.tokens.is_empty());
        pages += 1;
        for t in &response.tokens {
            assert!(ids.insert(t.id.clone()), "listed twice");
        }
        if response.next_page_token.is_empty() {
            break;
        }
        token = response.next_page_token;
    }
    assert_eq!(ids.len(), 10);
    assert!(pages >= 2, "{pages} pages");
}

crate::on_both_backends!(
    pages_neither_repeat_nor_skip_across_creates_and_revokes,
    junk_page_tokens_are_invalid_argument,
    page_size_zero_is_the_default_and_a_huge_one_is_accepted,
    large_tokens_split_pages_under_the_byte_bound,
);
