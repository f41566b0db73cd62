//! Authorize over gRPC: the lifecycle of a database token, the IOx
//! intersection semantics, wildcard, expiry and the expiry metadata.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fluxgate::proto::iox_authz::permission::PermissionOneOf;
use fluxgate::proto::iox_authz::resource_action_permission::{Action, ResourceType, Target};
use fluxgate::proto::iox_authz::{Permission, ResourceActionPermission, Subject};
use fluxgate::proto::tokens as pb;

use crate::common::TokenServer;
use crate::{
    EVENT_DEADLINE, EXPIRES_AT_MS, authorize, authorize_full, authz_client, bearer,
    create_db_token, db_perm, id_of, perm, tokens_client,
};

#[tokio::test]
async fn lifecycle_create_authorize_update_revoke() {
    let server = TokenServer::start().await;
    let mgmt = server.management_token.clone();
    let mut tokens = tokens_client(&server).await;
    let mut authz = authz_client(&server).await;

    let created = create_db_token(
        &mut tokens,
        &mgmt,
        "lifecycle",
        vec![db_perm("db1", true, false), db_perm("db2", false, true)],
        None,
    )
    .await;
    let id = id_of(&created);
    assert!(created.token.starts_with("fgdb_"), "database token prefix");
    let info = created.info.clone().unwrap();
    assert_eq!(info.kind, pb::TokenKind::Database as i32);
    assert_eq!(info.description, "lifecycle");
    assert!(info.created_at.is_some());
    assert!(info.expires_at.is_none() && info.revoked_at.is_none());

    let requested = vec![
        perm("db1", Action::Read),
        perm("db1", Action::Write),
        perm("db2", Action::Write),
        perm("db3", Action::Read),
    ];
    let r = authorize(&mut authz, created.token.as_bytes(), requested.clone()).await;
    assert!(r.valid);
    assert_eq!(r.subject, Some(Subject { id: id.clone() }));
    assert_eq!(
        r.permissions,
        vec![perm("db1", Action::Read), perm("db2", Action::Write)]
    );

    // Update: replaced by read on db3; the very next call sees it.
    let updated = tokens
        .update_database_token(bearer(
            pb::UpdateDatabaseTokenRequest {
                id: id.clone(),
                permissions: vec![db_perm("db3", true, false)],
                description: None,
            },
            &mgmt,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.permissions, vec![db_perm("db3", true, false)]);
    assert_eq!(
        updated.description, "lifecycle",
        "description kept when absent"
    );
    assert!(updated.updated_at.is_some());
    let r = authorize(&mut authz, created.token.as_bytes(), requested.clone()).await;
    assert!(r.valid);
    assert_eq!(r.subject, Some(Subject { id: id.clone() }));
    assert_eq!(r.permissions, vec![perm("db3", Action::Read)]);

    // Revoke: the very next call is refused.
    let revoked = tokens
        .revoke_database_token(bearer(pb::RevokeTokenRequest { id: id.clone() }, &mgmt))
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked_at.is_some());
    let r = authorize(&mut authz, created.token.as_bytes(), requested).await;
    assert!(!r.valid);
    assert_eq!(r.subject, None);
    assert!(r.permissions.is_empty());
}

#[tokio::test]
async fn update_replaces_description_when_given() {
    let server = TokenServer::start().await;
    let mgmt = server.management_token.clone();
    let mut tokens = tokens_client(&server).await;
    let created = create_db_token(
        &mut tokens,
        &mgmt,
        "old",
        vec![db_perm("a", true, true)],
        None,
    )
    .await;
    let updated = tokens
        .update_database_token(bearer(
            pb::UpdateDatabaseTokenRequest {
                id: id_of(&created),
                permissions: vec![db_perm("b", false, true)],
                description: Some("new".into()),
            },
            &mgmt,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.description, "new");
    let got = tokens
        .get_database_token(bearer(
            pb::GetTokenRequest {
                id: id_of(&created),
            },
            &mgmt,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, updated);
}

#[tokio::test]
async fn unknown_and_empty_tokens_are_not_valid() {
    let server = TokenServer::start().await;
    let mut authz = authz_client(&server).await;

    let r = authorize(
        &mut authz,
        b"fgdb_no-such-token",
        vec![perm("db1", Action::Read)],
    )
    .await;
    assert!(!r.valid);
    assert_eq!(r.subject, None);
    assert!(r.permissions.is_empty());

    // Liveness probe: empty token, no permissions, OK status, not valid.
    let r = authorize(&mut authz, b"", vec![]).await;
    assert!(!r.valid);
    assert_eq!(r.subject, None);
    assert!(r.permissions.is_empty());

    // An empty token with permissions is not valid either.
    let r = authorize(&mut authz, b"", vec![perm("db1", Action::Read)]).await;
    assert!(!r.valid);
    assert!(r.permissions.is_empty());
}

#[tokio::test]
async fn wildcard_covers_every_database_for_the_granted_action_only() {
    let server = TokenServer::start().await;
    let (id, token) = server.database_token(&[("*", true, false)]).await;
    let mut authz = authz_client(&server).await;

    let r = authorize(
        &mut authz,
        token.as_bytes(),
        vec![
            perm("anything", Action::Read),
            perm("other", Action::Write),
            perm("x/y", Action::ReadSchema),
            perm("*", Action::Read),
        ],
    )
    .await;
    assert!(r.valid);
    assert_eq!(r.subject, Some(Subject { id }));
    assert_eq!(
        r.permissions,
        vec![
            perm("anything", Action::Read),
            perm("x/y", Action::ReadSchema),
            perm("*", Action::Read),
        ]
    );

    let (_, writer) = server.database_token(&[("*", false, true)]).await;
    let r = authorize(
        &mut authz,
        writer.as_bytes(),
        vec![perm("a", Action::Read), perm("b", Action::Write)],
    )
    .await;
    assert_eq!(r.permissions, vec![perm("b", Action::Write)]);
}

#[tokio::test]
async fn read_covers_read_schema_and_create_delete_are_never_held() {
    let server = TokenServer::start().await;
    let (_, rw) = server
        .database_token(&[("db", true, true), ("*", true, true)])
        .await;
    let (_, w) = server.database_token(&[("db", false, true)]).await;
    let mut authz = authz_client(&server).await;

    let all_actions = |db: &str| {
        vec![
            perm(db, Action::ReadSchema),
            perm(db, Action::Read),
            perm(db, Action::Write),
            perm(db, Action::Create),
            perm(db, Action::Delete),
            perm(db, Action::Unspecified),
        ]
    };
    let r = authorize(&mut authz, rw.as_bytes(), all_actions("db")).await;
    assert!(r.valid);
    assert_eq!(
        r.permissions,
        vec![
            perm("db", Action::ReadSchema),
            perm("db", Action::Read),
            perm("db", Action::Write)
        ]
    );

    // Write alone does not cover READ_SCHEMA.
    let r = authorize(&mut authz, w.as_bytes(), all_actions("db")).await;
    assert!(r.valid);
    assert_eq!(r.permissions, vec![perm("db", Action::Write)]);
}

#[tokio::test]
async fn resource_id_targets_and_unspecified_types_are_never_held() {
    let server = TokenServer::start().await;
    let (_, token) = server.database_token(&[("*", true, true)]).await;
    let mut authz = authz_client(&server).await;

    let raw = |resource_type: i32, target: Option<Target>, action: Action| Permission {
        permission_one_of: Some(PermissionOneOf::ResourceAction(ResourceActionPermission {
            resource_type,
            target,
            action: action as i32,
        })),
    };
    let database = ResourceType::Database as i32;
    let not_held = vec![
        raw(
            database,
            Some(Target::ResourceId("db".into())),
            Action::Read,
        ),
        raw(
            database,
            Some(Target::ResourceId("*".into())),
            Action::Write,
        ),
        raw(
            ResourceType::Unspecified as i32,
            Some(Target::ResourceName("db".into())),
            Action::Read,
        ),
        raw(42, Some(Target::ResourceName("db".into())), Action::Read),
        raw(database, None, Action::Read),
        Permission {
            permission_one_of: None,
        },
        Permission {
            permission_one_of: Some(PermissionOneOf::ResourceAction(ResourceActionPermission {
                resource_type: database,
                target: Some(Target::ResourceName("db".into())),
                action: 99,
            })),
        },
    ];
    let r = authorize(&mut authz, token.as_bytes(), not_held).await;
    assert!(r.valid, "the token is known: valid with nothing held");
    assert!(r.subject.is_some());
    assert!(r.permissions.is_empty(), "{:?}", r.permissions);
}

/// A management token administers databases (CREATE, DELETE, READ_SCHEMA
/// on any) and holds no data access; a proxy token holds nothing at all.
#[tokio::test]
async fn management_token_administers_and_holds_no_data_permission() {
    let server = TokenServer::start().await;
    let mut authz = authz_client(&server).await;
    let mut tokens = tokens_client(&server).await;
    let listed = tokens
        .list_management_tokens(bearer(
            pb::ListTokensRequest::default(),
            &server.management_token,
        ))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = listed.tokens.iter().map(|t| t.id.clone()).collect();

    let requested = vec![
        perm("db", Action::Read),
        perm("*", Action::Write),
        perm("db", Action::Create),
        perm("db", Action::Delete),
        perm("*", Action::ReadSchema),
    ];
    let r = authorize(
        &mut authz,
        server.management_token.as_bytes(),
        requested.clone(),
    )
    .await;
    assert!(r.valid);
    let subject = r.subject.expect("management token has a subject");
    assert!(
        ids.contains(&subject.id),
        "subject is the management token's id"
    );
    // Administration (CREATE, DELETE, READ_SCHEMA) on any database; no
    // data access.
    assert_eq!(
        r.permissions,
        vec![
            perm("db", Action::Create),
            perm("db", Action::Delete),
            perm("*", Action::ReadSchema),
        ]
    );

    let proxy = server.proxy_token().await;
    let r = authorize(&mut authz, proxy.as_bytes(), requested).await;
    assert!(r.valid && r.permissions.is_empty(), "{r:?}");
}

#[tokio::test]
async fn known_token_without_requested_permissions_is_valid_and_empty() {
    let server = TokenServer::start().await;
    let (id, token) = server.database_token(&[("db1", true, false)]).await;
    let mut authz = authz_client(&server).await;
    let r = authorize(
        &mut authz,
        token.as_bytes(),
        vec![perm("db1", Action::Write), perm("db2", Action::Read)],
    )
    .await;
    assert!(r.valid);
    assert_eq!(r.subject, Some(Subject { id: id.clone() }));
    assert!(r.permissions.is_empty());

    // No permissions requested at all: valid, nothing held.
    let r = authorize(&mut authz, token.as_bytes(), vec![]).await;
    assert!(r.valid);
    assert_eq!(r.subject, Some(Subject { id }));
    assert!(r.permissions.is_empty());
}

#[tokio::test]
async fn authorize_is_case_and_byte_exact() {
    let server = TokenServer::start().await;
    let (_, token) = server.database_token(&[("DB", true, false)]).await;
    let mut authz = authz_client(&server).await;
    // Database names are case-sensitive.
    let r = authorize(
        &mut authz,
        token.as_bytes(),
        vec![perm("db", Action::Read), perm("DB", Action::Read)],
    )
    .await;
    assert_eq!(r.permissions, vec![perm("DB", Action::Read)]);
    // A token with trailing bytes, or case-changed, is another token.
    for variant in [
        format!("{token}\n"),
        format!(" {token}"),
        token.to_uppercase(),
        token[..token.len() - 1].to_owned(),
    ] {
        let r = authorize(
            &mut authz,
            variant.as_bytes(),
            vec![perm("DB", Action::Read)],
        )
        .await;
        assert!(!r.valid, "variant of the token must not be valid");
    }
}

fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis()
}

#[tokio::test]
async fn expired_token_is_refused_and_expiry_metadata_is_sent() {
    let server = TokenServer::start().await;
    let mgmt = server.management_token.clone();
    let mut tokens = tokens_client(&server).await;
    let mut authz = authz_client(&server).await;

    let expires_at = SystemTime::now() + Duration::from_secs(2);
    let expiring = create_db_token(
        &mut tokens,
        &mgmt,
        "short-lived",
        vec![db_perm("db", true, true)],
        Some(expires_at),
    )
    .await;
    let stored_expiry = expiring
        .info
        .as_ref()
        .unwrap()
        .expires_at
        .expect("expires_at set");
    let expiry_ms = SystemTime::try_from(stored_expiry).unwrap();
    assert_eq!(
        unix_ms(expiry_ms),
        unix_ms(expires_at),
        "stored expiry is the requested one (ms precision)"
    );
    let forever = create_db_token(
        &mut tokens,
        &mgmt,
        "forever",
        vec![db_perm("db", true, true)],
        None,
    )
    .await;

    // Before expiry: valid, with the expiry as Unix ms metadata.
    let response = authorize_full(
        &mut authz,
        expiring.token.as_bytes(),
        vec![perm("db", Action::Read)],
    )
    .await;
    let metadata = response.metadata().get(EXPIRES_AT_MS).cloned();
    let r = response.into_inner();
    if SystemTime::now() < expiry_ms {
        assert!(r.valid, "token valid before its expiry");
        assert_eq!(r.permissions, vec![perm("db", Action::Read)]);
        let value = metadata.expect("expiry metadata present for a token with expiry");
        let value: u128 = value
            .to_str()
            .unwrap()
            .parse()
            .expect("metadata is Unix ms");
        assert_eq!(value, unix_ms(expiry_ms));
    }

    // A token without expiry: no metadata.
    let response = authorize_full(
        &mut authz,
        forever.token.as_bytes(),
        vec![perm("db", Action::Read)],
    )
    .await;
    assert!(response.metadata().get(EXPIRES_AT_MS).is_none());
    assert!(response.into_inner().valid);
    // An unknown token: no metadata.
    let response = authorize_full(&mut authz, b"fgdb_unknown", vec![]).await;
    assert!(response.metadata().get(EXPIRES_AT_MS).is_none());

    // Poll until refused, bounded.
    let deadline = Instant::now() + EVENT_DEADLINE;
    loop {
        let response = authorize_full(
            &mut authz,
            expiring.token.as_bytes(),
            vec![perm("db", Action::Read)],
        )
        .await;
        let answered_at = SystemTime::now();
        let has_metadata = response.metadata().get(EXPIRES_AT_MS).is_some();
        let r = response.into_inner();
        if !r.valid {
            assert!(r.subject.is_none() && r.permissions.is_empty());
            assert!(!has_metadata, "no expiry metadata once refused");
            assert!(answered_at >= expiry_ms, "refused only after expiry");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "token still valid {EVENT_DEADLINE:?} after its expiry"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The other token is unaffected; the expired one stays listed as not revoked.
    assert!(
        authorize(&mut authz, forever.token.as_bytes(), vec![])
            .await
            .valid
    );
    let got = tokens
        .get_database_token(bearer(
            pb::GetTokenRequest {
                id: id_of(&expiring),
            },
            &mgmt,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(got.revoked_at.is_none());
    assert_eq!(got.expires_at, Some(stored_expiry));
}

#[tokio::test]
async fn expired_management_token_is_unauthenticated() {
    let server = TokenServer::start().await;
    let mgmt = server.management_token.clone();
    let mut tokens = tokens_client(&server).await;
    let short = tokens
        .create_management_token(bearer(
            pb::CreateManagementTokenRequest {
                description: "short".into(),
                expires_at: Some((SystemTime::now() + Duration::from_secs(1)).into()),
            },
            &mgmt,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(short.token.starts_with("fgmt_"));
    let deadline = Instant::now() + EVENT_DEADLINE;
    loop {
        match tokens
            .list_database_tokens(bearer(pb::ListTokensRequest::default(), &short.token))
            .await
        {
            Ok(_) => {
                assert!(Instant::now() < deadline, "management token never expired");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
                break;
            }
        }
    }
}
