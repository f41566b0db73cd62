//! Listing tokens: revoked ones hidden unless asked for, the two kinds kept
//! apart, oldest first, and never a token string.

use std::collections::HashSet;
use std::time::SystemTime;

use fluxgate::proto::tokens as pb;
use prost::Message as _;

use crate::common::{Backend, TokenServer};
use crate::{bearer, contains, create_db_token, db_perm, id_of, tokens_client};

/// Lists are oldest first (at the stored millisecond precision: tokens
/// created in the same millisecond may come in any order).
#[track_caller]
fn assert_oldest_first(tokens: &[pb::TokenInfo]) {
    let created: Vec<SystemTime> = tokens
        .iter()
        .map(|t| SystemTime::try_from(t.created_at.unwrap()).unwrap())
        .collect();
    assert!(created.is_sorted(), "oldest first: {created:?}");
}

async fn lists_hide_revoked_keep_kinds_apart_and_never_show_token_strings(backend: Backend) {
    let server = TokenServer::start_on(backend).await;
    let mut client = tokens_client(&server).await;
    let mgmt = server.management_token.clone();

    let a = create_db_token(
        &mut client,
        &mgmt,
        "a",
        vec![db_perm("a", true, false)],
        None,
    )
    .await;
    let b = create_db_token(
        &mut client,
        &mgmt,
        "b",
        vec![db_perm("b", false, true)],
        None,
    )
    .await;
    let c = create_db_token(
        &mut client,
        &mgmt,
        "c",
        vec![db_perm("*", true, true)],
        None,
    )
    .await;
    let m = client
        .create_management_token(bearer(
            pb::CreateManagementTokenRequest {
                description: "m".into(),
                expires_at: None,
            },
            &mgmt,
        ))
        .await
        .unwrap()
        .into_inner();
    let m2 = client
        .create_management_token(bearer(
            pb::CreateManagementTokenRequest {
                description: "m2".into(),
                expires_at: None,
            },
            &mgmt,
        ))
        .await
        .unwrap()
        .into_inner();
    client
        .revoke_database_token(bearer(pb::RevokeTokenRequest { id: id_of(&b) }, &mgmt))
        .await
        .unwrap();
    client
        .revoke_management_token(bearer(pb::RevokeTokenRequest { id: id_of(&m2) }, &mgmt))
        .await
        .unwrap();

    let list_db = |include_revoked: bool| {
        bearer(
            pb::ListTokensRequest {
                include_revoked,
                ..Default::default()
            },
            &mgmt,
        )
    };
    let active = client
        .list_database_tokens(list_db(false))
        .await
        .unwrap()
        .into_inner();
    assert_oldest_first(&active.tokens);
    let ids: HashSet<_> = active.tokens.iter().map(|t| t.id.clone()).collect();
    assert_eq!(ids, HashSet::from([id_of(&a), id_of(&c)]), "revoked hidden");
    let all = client
        .list_database_tokens(list_db(true))
        .await
        .unwrap()
        .into_inner();
    assert_oldest_first(&all.tokens);
    let ids: HashSet<_> = all.tokens.iter().map(|t| t.id.clone()).collect();
    assert_eq!(ids, HashSet::from([id_of(&a), id_of(&b), id_of(&c)]));
    assert!(
        all.tokens
            .iter()
            .all(|t| t.kind == pb::TokenKind::Database as i32)
    );
    for t in &all.tokens {
        assert_eq!(
            t.revoked_at.is_some(),
            t.id == id_of(&b),
            "only b is revoked"
        );
    }
    let listed_a = all.tokens.iter().find(|t| t.id == id_of(&a)).unwrap();
    assert_eq!(listed_a, a.info.as_ref().unwrap(), "listed as created");

    let mgmt_active = client
        .list_management_tokens(bearer(
            pb::ListTokensRequest {
                include_revoked: false,
                ..Default::default()
            },
            &mgmt,
        ))
        .await
        .unwrap()
        .into_inner();
    let mgmt_all = client
        .list_management_tokens(bearer(
            pb::ListTokensRequest {
                include_revoked: true,
                ..Default::default()
            },
            &mgmt,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mgmt_active.tokens.len(), 2, "bootstrap + m");
    assert_oldest_first(&mgmt_active.tokens);
    assert_oldest_first(&mgmt_all.tokens);
    assert_eq!(mgmt_all.tokens.len(), 3, "bootstrap + m + m2");
    assert!(
        mgmt_all
            .tokens
            .iter()
            .all(|t| t.kind == pb::TokenKind::Management as i32)
    );
    assert!(mgmt_all.tokens.iter().all(|t| t.permissions.is_empty()));
    let mgmt_ids: Vec<_> = mgmt_all.tokens.iter().map(|t| t.id.clone()).collect();
    assert!(mgmt_ids.contains(&id_of(&m)) && mgmt_ids.contains(&id_of(&m2)));
    for t in &all.tokens {
        assert!(!mgmt_ids.contains(&t.id), "kinds do not mix");
    }

    // No listed or fetched message carries any token string, in Debug form
    // or encoded.
    let mut texts: Vec<String> = vec![
        format!("{active:?}"),
        format!("{all:?}"),
        format!("{mgmt_active:?}"),
        format!("{mgmt_all:?}"),
    ];
    let mut bytes: Vec<Vec<u8>> = vec![
        active.encode_to_vec(),
        all.encode_to_vec(),
        mgmt_active.encode_to_vec(),
        mgmt_all.encode_to_vec(),
    ];
    for created in [&a, &b, &c] {
        let got = client
            .get_database_token(bearer(pb::GetTokenRequest { id: id_of(created) }, &mgmt))
            .await
            .unwrap()
            .into_inner();
        texts.push(format!("{got:?}"));
        bytes.push(got.encode_to_vec());
    }
    let secrets = [&a.token, &b.token, &c.token, &m.token, &m2.token, &mgmt];
    for secret in secrets {
        let suffix = secret.split_once('_').unwrap().1;
        for text in &texts {
            assert!(
                !text.contains(suffix),
                "a listed message contains a token string"
            );
        }
        for encoded in &bytes {
            assert!(
                !contains(encoded, suffix.as_bytes()),
                "an encoded message contains a token string"
            );
        }
    }
}

crate::on_both_backends!(lists_hide_revoked_keep_kinds_apart_and_never_show_token_strings,);
