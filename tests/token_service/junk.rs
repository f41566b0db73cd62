//! Nothing panics on junk: huge and non-UTF-8 tokens, thousands of
//! permissions, extreme timestamps, over-long ids and metadata. Every call
//! answers with a proper status and the server keeps serving.

use std::time::SystemTime;

use fluxgate::proto::iox_authz::resource_action_permission::Action;
use fluxgate::proto::tokens as pb;
use prost_types::Timestamp;
use tonic::Code;

use crate::common::{Backend, TokenServer};
use crate::{
    authorize, authz_client, bearer, create_db_token, db_perm, expect_code, id_of, perm,
    tokens_client, with_auth,
};

async fn authorize_survives_junk(backend: Backend) {
    let server = TokenServer::start_on(backend).await;
    let (id, token) = server
        .database_token(&[("db0", true, false), ("db1", false, true)])
        .await;
    let mut authz = authz_client(&server).await;

    // A 1 MiB token.
    let huge = vec![b'x'; 1 << 20];
    let r = authorize(&mut authz, &huge, vec![perm("db0", Action::Read)]).await;
    assert!(!r.valid && r.subject.is_none() && r.permissions.is_empty());

    // Bytes that are not UTF-8, and the token followed by junk.
    for bytes in [
        vec![0xff, 0xfe, 0x00, 0xc3, 0x28],
        vec![0u8; 64],
        [token.as_bytes(), &[0xff]].concat(),
    ] {
        let r = authorize(&mut authz, &bytes, vec![perm("db0", Action::Read)]).await;
        assert!(!r.valid);
    }

    // 1000 permissions: the held ones come back in request order.
    let mut requested = Vec::new();
    let mut expected = Vec::new();
    for i in 0..1000 {
        let db = format!("db{}", i % 3);
        let action = if i % 2 == 0 {
            Action::Read
        } else {
            Action::Write
        };
        let p = perm(&db, action);
        if (db == "db0" && action == Action::Read) || (db == "db1" && action == Action::Write) {
            expected.push(p.clone());
        }
        requested.push(p);
    }
    let r = authorize(&mut authz, token.as_bytes(), requested).await;
    assert!(r.valid);
    assert_eq!(r.subject.unwrap().id, id);
    assert_eq!(r.permissions, expected);

    // Odd database names in requests: never held, never an error.
    let odd = ["", "\0", "a\nb", &"z".repeat(100_000), "*"];
    let r = authorize(
        &mut authz,
        token.as_bytes(),
        odd.iter().map(|d| perm(d, Action::Read)).collect(),
    )
    .await;
    assert!(
        r.valid && r.permissions.is_empty(),
        "{:?}",
        r.permissions.len()
    );

    // Still serving.
    let r = authorize(
        &mut authz,
        token.as_bytes(),
        vec![perm("db0", Action::Read)],
    )
    .await;
    assert_eq!(r.permissions, vec![perm("db0", Action::Read)]);
}

async fn management_survives_junk(backend: Backend) {
    let server = TokenServer::start_on(backend).await;
    let mgmt = server.management_token.clone();
    let mut client = tokens_client(&server).await;

    // Huge and binary authorization values.
    for value in [
        format!("Bearer {}", "y".repeat(8 * 1024)),
        format!("Token {}", "\u{7f}".repeat(0)),
        "Basic ////".to_owned(),
        format!("Basic {}", "QQ==".repeat(1000)),
    ] {
        expect_code(
            client
                .list_database_tokens(with_auth(pb::ListTokensRequest::default(), &value))
                .await,
            Code::Unauthenticated,
        );
    }
    let mut binary = tonic::Request::new(pb::ListTokensRequest::default());
    binary.metadata_mut().insert_bin(
        "authorization-bin",
        tonic::metadata::MetadataValue::from_bytes(&[0xff, 0x00, 0xfe]),
    );
    expect_code(
        client.list_database_tokens(binary).await,
        Code::Unauthenticated,
    );

    // Ids of every shape: NOT_FOUND, never a panic.
    for id in [
        "\0".to_owned(),
        "x".repeat(1000),
        "'; DROP TABLE tokens; --".to_owned(),
        "é\u{202e}".to_owned(),
    ] {
        expect_code(
            client
                .get_database_token(bearer(pb::GetTokenRequest { id: id.clone() }, &mgmt))
                .await,
            Code::NotFound,
        );
        expect_code(
            client
                .revoke_database_token(bearer(pb::RevokeTokenRequest { id: id.clone() }, &mgmt))
                .await,
            Code::NotFound,
        );
        expect_code(
            client
                .revoke_management_token(bearer(pb::RevokeTokenRequest { id }, &mgmt))
                .await,
            Code::NotFound,
        );
    }

    // 10,000-character descriptions.
    let long = "w".repeat(10_000);
    expect_code(
        client
            .create_database_token(bearer(
                pb::CreateDatabaseTokenRequest {
                    description: long.clone(),
                    permissions: vec![db_perm("db", true, true)],
                    expires_at: None,
                },
                &mgmt,
            ))
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        client
            .create_management_token(bearer(
                pb::CreateManagementTokenRequest {
                    description: long,
                    expires_at: None,
                },
                &mgmt,
            ))
            .await,
        Code::InvalidArgument,
    );

    // 1000 permissions with one huge name.
    let mut many: Vec<_> = (0..1000)
        .map(|i| db_perm(&format!("db{i}"), true, i % 2 == 0))
        .collect();
    many.push(db_perm(&"n".repeat(100_000), true, true));
    expect_code(
        client
            .create_database_token(bearer(
                pb::CreateDatabaseTokenRequest {
                    description: "many".into(),
                    permissions: many.clone(),
                    expires_at: None,
                },
                &mgmt,
            ))
            .await,
        Code::InvalidArgument,
    );
    many.pop();
    let created = create_db_token(&mut client, &mgmt, "many", many, None).await;
    assert_eq!(created.info.as_ref().unwrap().permissions.len(), 1000);

    // Extreme and malformed timestamps: refused or accepted, never a panic.
    let extremes = [
        Timestamp {
            seconds: i64::MIN,
            nanos: 0,
        },
        Timestamp {
            seconds: -1,
            nanos: -1,
        },
        Timestamp {
            seconds: 0,
            nanos: -999_999_999,
        },
        Timestamp {
            seconds: 1,
            nanos: i32::MIN,
        },
        Timestamp {
            seconds: i64::MIN,
            nanos: i32::MIN,
        },
    ];
    for ts in extremes {
        let s = expect_code(
            client
                .create_database_token(bearer(
                    pb::CreateDatabaseTokenRequest {
                        description: "ts".into(),
                        permissions: vec![db_perm("db", true, true)],
                        expires_at: Some(ts),
                    },
                    &mgmt,
                ))
                .await,
            Code::InvalidArgument,
        );
        assert!(!s.message().is_empty());
    }
    let far_future = [
        Timestamp {
            seconds: i64::MAX,
            nanos: 999_999_999,
        },
        Timestamp {
            seconds: i64::MAX,
            nanos: i32::MAX,
        },
        Timestamp {
            seconds: 253_402_300_799,
            nanos: 0,
        },
        Timestamp {
            seconds: 4_000_000_000,
            nanos: 2_000_000_000,
        },
    ];
    for ts in far_future {
        let r = client
            .create_database_token(bearer(
                pb::CreateDatabaseTokenRequest {
                    description: "far".into(),
                    permissions: vec![db_perm("db", true, true)],
                    expires_at: Some(ts),
                },
                &mgmt,
            ))
            .await;
        match r {
            Ok(created) => {
                let created = created.into_inner();
                let expires = created.info.as_ref().unwrap().expires_at.unwrap();
                assert!(
                    SystemTime::try_from(expires).unwrap() > SystemTime::now(),
                    "a far-future expiry stays in the future"
                );
                let mut authz = authz_client(&server).await;
                let r = authorize(
                    &mut authz,
                    created.token.as_bytes(),
                    vec![perm("db", Action::Read)],
                )
                .await;
                assert!(r.valid, "far-future expiry {ts:?} must be usable");
            }
            Err(s) => assert_eq!(s.code(), Code::InvalidArgument, "{ts:?}: {s:?}"),
        }
    }

    // Updates with junk too.
    let s = expect_code(
        client
            .update_database_token(bearer(
                pb::UpdateDatabaseTokenRequest {
                    id: id_of(&created),
                    permissions: vec![db_perm("db", true, true)],
                    description: Some("u".repeat(10_000)),
                },
                &mgmt,
            ))
            .await,
        Code::InvalidArgument,
    );
    assert!(s.message().contains("description"));

    // Still serving management and Authorize.
    client
        .list_database_tokens(bearer(
            pb::ListTokensRequest {
                include_revoked: true,
                ..Default::default()
            },
            &mgmt,
        ))
        .await
        .unwrap();
    let mut authz = authz_client(&server).await;
    assert!(
        authorize(&mut authz, created.token.as_bytes(), vec![])
            .await
            .valid
    );
}

/// An unknown id is NOT_FOUND whatever its length. The status message must
/// stay small enough for the client to read it: gRPC clients cap the size of
/// response headers and trailers (grpc-go 16 KiB, hyper's h2 a little more),
/// and a status they cannot read kills the whole connection (GOAWAY
/// `header_list_way_too_large`), not only the call.
async fn huge_unknown_ids_are_not_found(backend: Backend) {
    let server = TokenServer::start_on(backend).await;
    let mgmt = server.management_token.clone();
    let mut client = tokens_client(&server).await;
    let id = "x".repeat(100_000);
    let s = expect_code(
        client
            .get_database_token(bearer(pb::GetTokenRequest { id: id.clone() }, &mgmt))
            .await,
        Code::NotFound,
    );
    assert!(
        s.message().len() <= 16 * 1024,
        "status message of {} bytes",
        s.message().len()
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
    expect_code(
        client
            .revoke_database_token(bearer(pb::RevokeTokenRequest { id: id.clone() }, &mgmt))
            .await,
        Code::NotFound,
    );
    expect_code(
        client
            .revoke_management_token(bearer(pb::RevokeTokenRequest { id }, &mgmt))
            .await,
        Code::NotFound,
    );
}

crate::on_both_backends!(
    authorize_survives_junk,
    management_survives_junk,
    huge_unknown_ids_are_not_found,
);
