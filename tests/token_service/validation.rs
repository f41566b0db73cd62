//! Input validation of the management API (INVALID_ARGUMENT with a message a
//! person understands), NOT_FOUND for unknown ids, revoked tokens.

use std::time::{Duration, SystemTime};

use fluxgate::proto::tokens as pb;
use tonic::{Code, Status};

use crate::common::{Backend, TokenServer};
use crate::{bearer, create_db_token, db_perm, expect_code, id_of, tokens_client};

fn invalid(status: &Status, needle: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().to_lowercase().contains(needle),
        "message {:?} should mention {needle:?}",
        status.message()
    );
}

async fn bad_input_is_invalid_argument_with_a_readable_message(backend: Backend) {
    let server = TokenServer::start_on(backend).await;
    let mut client = tokens_client(&server).await;
    let mgmt = server.management_token.clone();

    let create = |permissions: Vec<pb::DatabasePermission>, expires_at: Option<SystemTime>| {
        bearer(
            pb::CreateDatabaseTokenRequest {
                description: "bad".into(),
                permissions,
                expires_at: expires_at.map(Into::into),
            },
            &mgmt,
        )
    };
    let cases: Vec<(Vec<pb::DatabasePermission>, Option<SystemTime>, &str)> = vec![
        (vec![db_perm("", true, false)], None, "empty"),
        (
            vec![db_perm(&"x".repeat(257), true, false)],
            None,
            "longer than 256",
        ),
        (
            vec![db_perm(&"é".repeat(129), true, false)],
            None,
            "longer than 256",
        ),
        (
            vec![db_perm("a\nb", true, false)],
            None,
            "control character",
        ),
        (
            vec![db_perm("a\0b", false, true)],
            None,
            "control character",
        ),
        (
            vec![db_perm("a\u{7f}", false, true)],
            None,
            "control character",
        ),
        (
            vec![
                db_perm("ok", true, false),
                db_perm("\u{1b}[31m", true, false),
            ],
            None,
            "control character",
        ),
        (vec![], None, "at least one"),
        (vec![db_perm("db", false, false)], None, "at least one"),
        (
            vec![db_perm("a", false, false), db_perm("b", false, false)],
            None,
            "at least one",
        ),
        (
            vec![db_perm("db", true, true)],
            Some(SystemTime::now() - Duration::from_secs(60)),
            "future",
        ),
        (
            vec![db_perm("db", true, true)],
            Some(SystemTime::UNIX_EPOCH),
            "future",
        ),
    ];
    for (permissions, expires_at, needle) in cases {
        let s = expect_code(
            client
                .create_database_token(create(permissions.clone(), expires_at))
                .await,
            Code::InvalidArgument,
        );
        invalid(&s, needle);
        // The message does not carry raw control characters.
        assert!(
            !s.message().chars().any(|c| c.is_control()),
            "{:?}",
            s.message()
        );
    }

    // Exactly 256 bytes is accepted.
    let ok = create_db_token(
        &mut client,
        &mgmt,
        "max",
        vec![db_perm(&"x".repeat(256), true, false)],
        None,
    )
    .await;

    // Update validates the same way.
    for (permissions, needle) in [
        (vec![], "at least one"),
        (vec![db_perm("db", false, false)], "at least one"),
        (vec![db_perm("", true, false)], "empty"),
        (
            vec![db_perm(&"y".repeat(300), true, false)],
            "longer than 256",
        ),
        (vec![db_perm("t\tab", true, false)], "control character"),
    ] {
        let s = expect_code(
            client
                .update_database_token(bearer(
                    pb::UpdateDatabaseTokenRequest {
                        id: id_of(&ok),
                        permissions,
                        description: None,
                    },
                    &mgmt,
                ))
                .await,
            Code::InvalidArgument,
        );
        invalid(&s, needle);
    }

    // Management tokens: expiry in the past.
    let s = expect_code(
        client
            .create_management_token(bearer(
                pb::CreateManagementTokenRequest {
                    description: "old".into(),
                    expires_at: Some((SystemTime::now() - Duration::from_secs(1)).into()),
                },
                &mgmt,
            ))
            .await,
        Code::InvalidArgument,
    );
    invalid(&s, "future");

    // Nothing invalid was stored.
    let listed = client
        .list_database_tokens(bearer(
            pb::ListTokensRequest {
                include_revoked: true,
                ..Default::default()
            },
            &mgmt,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tokens.len(), 1);
    assert_eq!(listed.tokens[0].id, id_of(&ok));
}

async fn permissions_are_normalized(backend: Backend) {
    let server = TokenServer::start_on(backend).await;
    let mut client = tokens_client(&server).await;
    let mgmt = server.management_token.clone();
    let created = create_db_token(
        &mut client,
        &mgmt,
        "merge",
        vec![
            db_perm("b", true, false),
            db_perm("a", false, true),
            db_perm("b", false, true),
            db_perm("c", false, false),
        ],
        None,
    )
    .await;
    assert_eq!(
        created.info.unwrap().permissions,
        vec![db_perm("a", false, true), db_perm("b", true, true)]
    );
}

async fn unknown_ids_are_not_found_and_kinds_do_not_mix(backend: Backend) {
    let server = TokenServer::start_on(backend).await;
    let mut client = tokens_client(&server).await;
    let mgmt = server.management_token.clone();
    let (db_id, _) = server.database_token(&[("db", true, false)]).await;
    let mgmt_id = client
        .list_management_tokens(bearer(pb::ListTokensRequest::default(), &mgmt))
        .await
        .unwrap()
        .into_inner()
        .tokens[0]
        .id
        .clone();

    for id in ["nope".to_owned(), String::new(), mgmt_id.clone()] {
        expect_code(
            client
                .get_database_token(bearer(pb::GetTokenRequest { id: id.clone() }, &mgmt))
                .await,
            Code::NotFound,
        );
        expect_code(
            client
                .update_database_token(bearer(
                    pb::UpdateDatabaseTokenRequest {
                        id: id.clone(),
                        permissions: vec![db_perm("db", true, false)],
                        description: None,
                    },
                    &mgmt,
                ))
                .await,
            Code::NotFound,
        );
        let s = expect_code(
            client
                .revoke_database_token(bearer(pb::RevokeTokenRequest { id: id.clone() }, &mgmt))
                .await,
            Code::NotFound,
        );
        assert!(!s.message().is_empty());
    }
    // A database token's id is not a management token's.
    expect_code(
        client
            .revoke_management_token(bearer(pb::RevokeTokenRequest { id: db_id.clone() }, &mgmt))
            .await,
        Code::NotFound,
    );
    expect_code(
        client
            .revoke_management_token(bearer(pb::RevokeTokenRequest { id: "nope".into() }, &mgmt))
            .await,
        Code::NotFound,
    );
    // Neither token was touched by the mismatched calls.
    let db = client
        .get_database_token(bearer(pb::GetTokenRequest { id: db_id }, &mgmt))
        .await
        .unwrap()
        .into_inner();
    assert!(db.revoked_at.is_none());
    client
        .list_database_tokens(bearer(pb::ListTokensRequest::default(), &mgmt))
        .await
        .expect("management token still valid");
}

async fn updating_a_revoked_token_fails_and_revoking_twice_is_ok(backend: Backend) {
    let server = TokenServer::start_on(backend).await;
    let mut client = tokens_client(&server).await;
    let mgmt = server.management_token.clone();
    let created = create_db_token(
        &mut client,
        &mgmt,
        "twice",
        vec![db_perm("db", true, false)],
        None,
    )
    .await;
    let id = id_of(&created);

    let first = client
        .revoke_database_token(bearer(pb::RevokeTokenRequest { id: id.clone() }, &mgmt))
        .await
        .unwrap()
        .into_inner();
    let second = client
        .revoke_database_token(bearer(pb::RevokeTokenRequest { id: id.clone() }, &mgmt))
        .await
        .unwrap()
        .into_inner();
    assert!(first.revoked_at.is_some());
    assert_eq!(first.revoked_at, second.revoked_at, "one revoked_at");
    assert_eq!(first, second);

    let s = expect_code(
        client
            .update_database_token(bearer(
                pb::UpdateDatabaseTokenRequest {
                    id: id.clone(),
                    permissions: vec![db_perm("db", true, true)],
                    description: None,
                },
                &mgmt,
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert!(s.message().contains("revoked"), "{s:?}");
    let got = client
        .get_database_token(bearer(pb::GetTokenRequest { id }, &mgmt))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.permissions,
        vec![db_perm("db", true, false)],
        "unchanged"
    );
    assert_eq!(got.revoked_at, first.revoked_at);

    // Management tokens: revoking twice is OK too.
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
    let a = client
        .revoke_management_token(bearer(pb::RevokeTokenRequest { id: id_of(&m) }, &mgmt))
        .await
        .unwrap()
        .into_inner();
    let b = client
        .revoke_management_token(bearer(pb::RevokeTokenRequest { id: id_of(&m) }, &mgmt))
        .await
        .unwrap()
        .into_inner();
    assert!(a.revoked_at.is_some());
    assert_eq!(a, b);
}

async fn over_long_descriptions_are_refused(backend: Backend) {
    let server = TokenServer::start_on(backend).await;
    let mut client = tokens_client(&server).await;
    let mgmt = server.management_token.clone();
    let long = "d".repeat(10_000);
    let s = expect_code(
        client
            .create_database_token(bearer(
                pb::CreateDatabaseTokenRequest {
                    description: long.clone(),
                    permissions: vec![db_perm("db", true, false)],
                    expires_at: None,
                },
                &mgmt,
            ))
            .await,
        Code::InvalidArgument,
    );
    invalid(&s, "description");
    let s = expect_code(
        client
            .create_management_token(bearer(
                pb::CreateManagementTokenRequest {
                    description: long.clone(),
                    expires_at: None,
                },
                &mgmt,
            ))
            .await,
        Code::InvalidArgument,
    );
    invalid(&s, "description");
    let ok = create_db_token(
        &mut client,
        &mgmt,
        &"d".repeat(1024),
        vec![db_perm("db", true, false)],
        None,
    )
    .await;
    let s = expect_code(
        client
            .update_database_token(bearer(
                pb::UpdateDatabaseTokenRequest {
                    id: id_of(&ok),
                    permissions: vec![db_perm("db", true, false)],
                    description: Some("e".repeat(1025)),
                },
                &mgmt,
            ))
            .await,
        Code::InvalidArgument,
    );
    invalid(&s, "description");
}

crate::on_both_backends!(
    bad_input_is_invalid_argument_with_a_readable_message,
    permissions_are_normalized,
    unknown_ids_are_not_found_and_kinds_do_not_mix,
    updating_a_revoked_token_fails_and_revoking_twice_is_ok,
    over_long_descriptions_are_refused,
);
