//! The management plane's limits (issue 18, finding 6 and 1): a token never
//! outlives the management token that created it; expiries end at year
//! 9999; at most 1000 permissions; one-line descriptions; database names
//! without invisible format characters, so a listing cannot lie.

use std::time::{Duration, SystemTime};

use fluxgate::proto::tokens as pb;
use prost_types::Timestamp;
use tonic::{Code, Status};

use crate::common::TokenServer;
use crate::{bearer, db_perm, expect_code, tokens_client};

fn invalid(status: &Status, needle: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(needle),
        "message {:?} should mention {needle:?}",
        status.message()
    );
}

fn db_request(
    description: &str,
    permissions: Vec<pb::DatabasePermission>,
    expires_at: Option<SystemTime>,
) -> pb::CreateDatabaseTokenRequest {
    pb::CreateDatabaseTokenRequest {
        description: description.to_owned(),
        permissions,
        expires_at: expires_at.map(Timestamp::from),
    }
}

#[tokio::test]
async fn a_token_never_outlives_the_management_token_that_creates_it() {
    let server = TokenServer::start().await;
    let mut client = tokens_client(&server).await;
    let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
    let short = client
        .create_management_token(bearer(
            pb::CreateManagementTokenRequest {
                description: "one hour".into(),
                expires_at: Some(in_an_hour.into()),
            },
            &server.management_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .token;

    // Never expiring, or expiring later: refused, for every kind.
    for expires_at in [None, Some(in_an_hour + Duration::from_secs(60))] {
        let s = expect_code(
            client
                .create_database_token(bearer(
                    db_request("d", vec![db_perm("db", true, false)], expires_at),
                    &short,
                ))
                .await,
            Code::InvalidArgument,
        );
        invalid(&s, "cannot create a database token that outlives it");
        let s = expect_code(
            client
                .create_management_token(bearer(
                    pb::CreateManagementTokenRequest {
                        description: "m".into(),
                        expires_at: expires_at.map(Into::into),
                    },
                    &short,
                ))
                .await,
            Code::InvalidArgument,
        );
        invalid(&s, "management token that outlives it");
        let s = expect_code(
            client
                .create_proxy_token(bearer(
                    pb::CreateProxyTokenRequest {
                        description: "p".into(),
                        expires_at: expires_at.map(Into::into),
                    },
                    &short,
                ))
                .await,
            Code::InvalidArgument,
        );
        invalid(&s, "proxy token that outlives it");
    }
    // Within its lifetime: fine.
    let ok = client
        .create_database_token(bearer(
            db_request(
                "d",
                vec![db_perm("db", true, false)],
                Some(in_an_hour - Duration::from_secs(60)),
            ),
            &short,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.info.unwrap().expires_at.is_some());
    // The bootstrap token never expires: it may create tokens that never do.
    client
        .create_database_token(bearer(
            db_request("d", vec![db_perm("db", true, false)], None),
            &server.management_token,
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn expiry_ends_at_year_9999() {
    let server = TokenServer::start().await;
    let mut client = tokens_client(&server).await;
    let mgmt = &server.management_token;
    let last = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    for late in [
        last + Duration::from_secs(1),
        SystemTime::UNIX_EPOCH + Duration::from_secs(9000 * 365 * 86_400 + 1_800_000_000),
    ] {
        let s = expect_code(
            client
                .create_database_token(bearer(
                    db_request("d", vec![db_perm("db", true, false)], Some(late)),
                    mgmt,
                ))
                .await,
            Code::InvalidArgument,
        );
        invalid(&s, "9999-12-31T23:59:59Z");
    }
    let ok = client
        .create_database_token(bearer(
            db_request("d", vec![db_perm("db", true, false)], Some(last)),
            mgmt,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ok.info.unwrap().expires_at.unwrap().seconds,
        253_402_300_799
    );
}

#[tokio::test]
async fn permissions_are_capped_at_1000() {
    let server = TokenServer::start().await;
    let mut client = tokens_client(&server).await;
    let mgmt = &server.management_token;
    let many = |n: usize| {
        (0..n)
            .map(|i| db_perm(&format!("db{i}"), true, true))
            .collect()
    };
    let s = expect_code(
        client
            .create_database_token(bearer(db_request("d", many(1001), None), mgmt))
            .await,
        Code::InvalidArgument,
    );
    invalid(&s, "at most 1000");
    let created = client
        .create_database_token(bearer(db_request("d", many(1000), None), mgmt))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.info.as_ref().unwrap().permissions.len(), 1000);
    let s = expect_code(
        client
            .update_database_token(bearer(
                pb::UpdateDatabaseTokenRequest {
                    id: created.info.unwrap().id,
                    permissions: many(5000),
                    description: None,
                },
                mgmt,
            ))
            .await,
        Code::InvalidArgument,
    );
    invalid(&s, "at most 1000");
}

#[tokio::test]
async fn descriptions_are_one_line_and_names_hold_no_invisible_characters() {
    let server = TokenServer::start().await;
    let mut client = tokens_client(&server).await;
    let mgmt = &server.management_token;
    for description in ["two\nlines", "\u{1b}[31mred", "tab\there", "cr\r"] {
        let s = expect_code(
            client
                .create_database_token(bearer(
                    db_request(description, vec![db_perm("db", true, false)], None),
                    mgmt,
                ))
                .await,
            Code::InvalidArgument,
        );
        invalid(&s, "control character");
        let s = expect_code(
            client
                .create_management_token(bearer(
                    pb::CreateManagementTokenRequest {
                        description: description.into(),
                        expires_at: None,
                    },
                    mgmt,
                ))
                .await,
            Code::InvalidArgument,
        );
        invalid(&s, "control character");
    }
    for name in [
        "x\u{200b}",
        "\u{feff}db",
        "a\u{202e}b",
        "db\u{2066}",
        "x\u{e0041}",
    ] {
        let s = expect_code(
            client
                .create_database_token(bearer(
                    db_request("d", vec![db_perm(name, true, false)], None),
                    mgmt,
                ))
                .await,
            Code::InvalidArgument,
        );
        invalid(&s, "invisible Unicode format character");
        assert!(
            !s.message().contains(name),
            "the name is shown escaped: {:?}",
            s.message()
        );
    }
    // Ordinary non-ASCII names are fine.
    client
        .create_database_token(bearer(
            db_request("d", vec![db_perm("données", true, false)], None),
            mgmt,
        ))
        .await
        .unwrap();
}
