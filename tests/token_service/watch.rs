//! `WatchTokenChanges`: the sync message, ordered changes with consecutive
//! revisions, resuming, expiry announcements; and revisions under
//! concurrent creates.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use fluxgate::proto::tokens as pb;
use fluxgate::proto::tokens::token_service_client::TokenServiceClient;
use fluxgate::proto::tokens::watch_token_changes_response::Event;
use prost::Message as _;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::common::TokenServer;
use crate::{EVENT_DEADLINE, bearer, contains, create_db_token, db_perm, id_of, tokens_client};

/// Opens a change stream with the proxy token `proxy`.
pub(crate) async fn watch(
    client: &mut TokenServiceClient<Channel>,
    proxy: &str,
    after_revision: Option<u64>,
) -> Streaming<pb::WatchTokenChangesResponse> {
    client
        .watch_token_changes(bearer(
            pb::WatchTokenChangesRequest { after_revision },
            proxy,
        ))
        .await
        .expect("a proxy token may watch")
        .into_inner()
}

/// The next message, within [`EVENT_DEADLINE`].
pub(crate) async fn next(
    stream: &mut Streaming<pb::WatchTokenChangesResponse>,
) -> pb::WatchTokenChangesResponse {
    tokio::time::timeout(EVENT_DEADLINE, stream.message())
        .await
        .expect("a change stream message within the deadline")
        .expect("stream not failed")
        .expect("stream not ended")
}

/// The first message, which must be a sync; returns (revision, sync).
pub(crate) async fn sync(stream: &mut Streaming<pb::WatchTokenChangesResponse>) -> (u64, pb::Sync) {
    let m = next(stream).await;
    match m.event {
        Some(Event::Sync(s)) => (m.revision, s),
        other => panic!("first message is not a sync: {other:?}"),
    }
}

/// The next message, which must be a change; returns (revision, change).
pub(crate) async fn change(
    stream: &mut Streaming<pb::WatchTokenChangesResponse>,
) -> (u64, pb::TokenChange) {
    let m = next(stream).await;
    match m.event {
        Some(Event::Change(c)) => (m.revision, c),
        other => panic!("expected a change: {other:?}"),
    }
}

fn kind(c: &pb::TokenChange) -> pb::ChangeKind {
    pb::ChangeKind::try_from(c.kind).expect("known change kind")
}

#[tokio::test]
async fn changes_stream_in_order_and_resume() {
    let server = TokenServer::start().await;
    let mgmt = server.management_token.clone();
    let proxy = server.proxy_token().await;
    let mut client = tokens_client(&server).await;
    let head = server.registry.head_revision();
    assert_eq!(
        head, 2,
        "the bootstrap token is revision 1, the proxy token 2"
    );

    let mut live = watch(&mut client, &proxy, None).await;
    let (revision, s) = sync(&mut live).await;
    assert!(!s.resumed, "no after_revision: not resumed");
    assert_eq!(s.head_revision, head);
    assert_eq!(revision, head);

    let created = create_db_token(
        &mut client,
        &mgmt,
        "watched",
        vec![db_perm("a", true, false)],
        None,
    )
    .await;
    let id = id_of(&created);
    client
        .update_database_token(bearer(
            pb::UpdateDatabaseTokenRequest {
                id: id.clone(),
                permissions: vec![db_perm("b", false, true)],
                description: None,
            },
            &mgmt,
        ))
        .await
        .unwrap();
    client
        .revoke_database_token(bearer(pb::RevokeTokenRequest { id: id.clone() }, &mgmt))
        .await
        .unwrap();

    let expected = [
        pb::ChangeKind::Created,
        pb::ChangeKind::PermissionsChanged,
        pb::ChangeKind::Revoked,
    ];
    let mut seen = Vec::new();
    for (i, want) in expected.iter().enumerate() {
        let m = next(&mut live).await;
        let encoded = m.encode_to_vec();
        assert!(
            !contains(&encoded, created.token.as_bytes())
                && !contains(format!("{m:?}").as_bytes(), created.token.as_bytes()),
            "the stream carries ids only"
        );
        let Some(Event::Change(c)) = m.event else {
            panic!("expected a change")
        };
        assert_eq!(m.revision, head + 1 + i as u64, "revision + 1 each");
        assert_eq!(kind(&c), *want);
        assert_eq!(c.token_id, id);
        assert_eq!(c.token_kind, pb::TokenKind::Database as i32);
        assert!(c.at.is_some());
        seen.push((m.revision, c));
    }

    // Resume from before the three changes: exactly those are replayed.
    let mut resumed = watch(&mut client, &proxy, Some(head)).await;
    let (revision, s) = sync(&mut resumed).await;
    assert!(s.resumed);
    assert_eq!(revision, head, "continues after the requested revision");
    assert_eq!(s.head_revision, head + 3);
    for (want_revision, want) in &seen {
        let (r, c) = change(&mut resumed).await;
        assert_eq!(r, *want_revision);
        assert_eq!(&c, want, "replayed as first sent");
    }

    // Resume right at the head: nothing replayed.
    let mut at_head = watch(&mut client, &proxy, Some(head + 3)).await;
    let (revision, s) = sync(&mut at_head).await;
    assert!(s.resumed);
    assert_eq!((revision, s.head_revision), (head + 3, head + 3));

    // From 0: the whole log, bootstrap included.
    let mut from_zero = watch(&mut client, &proxy, Some(0)).await;
    let (revision, s) = sync(&mut from_zero).await;
    assert!(s.resumed);
    assert_eq!(revision, 0);
    let (r, c) = change(&mut from_zero).await;
    assert_eq!(r, 1);
    assert_eq!(kind(&c), pb::ChangeKind::Created);
    assert_eq!(c.token_kind, pb::TokenKind::Management as i32);
    let (r, c) = change(&mut from_zero).await;
    assert_eq!(r, 2);
    assert_eq!(c.token_kind, pb::TokenKind::Proxy as i32);
    for (want_revision, want) in &seen {
        let (r, c) = change(&mut from_zero).await;
        assert_eq!((r, &c), (*want_revision, want));
    }

    // Beyond the head: not resumed.
    let mut beyond = watch(&mut client, &proxy, Some(head + 100)).await;
    let (revision, s) = sync(&mut beyond).await;
    assert!(!s.resumed, "an unknown future revision is not resumed");
    assert_eq!((revision, s.head_revision), (head + 3, head + 3));

    // Every stream continues live with the next change, nothing else first.
    let next_token = server.database_token(&[("c", true, true)]).await.0;
    for stream in [
        &mut live,
        &mut resumed,
        &mut at_head,
        &mut from_zero,
        &mut beyond,
    ] {
        let (r, c) = change(stream).await;
        assert_eq!(r, head + 4);
        assert_eq!(c.token_id, next_token);
        assert_eq!(kind(&c), pb::ChangeKind::Created);
    }
}

#[tokio::test]
async fn management_token_changes_are_streamed() {
    let server = TokenServer::start().await;
    let mgmt = server.management_token.clone();
    let proxy = server.proxy_token().await;
    let mut client = tokens_client(&server).await;
    let mut stream = watch(&mut client, &proxy, None).await;
    let (head, _) = sync(&mut stream).await;
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
    client
        .revoke_management_token(bearer(pb::RevokeTokenRequest { id: id_of(&m) }, &mgmt))
        .await
        .unwrap();
    for (i, want) in [pb::ChangeKind::Created, pb::ChangeKind::Revoked]
        .iter()
        .enumerate()
    {
        let (r, c) = change(&mut stream).await;
        assert_eq!(r, head + 1 + i as u64);
        assert_eq!(kind(&c), *want);
        assert_eq!(c.token_id, id_of(&m));
        assert_eq!(c.token_kind, pb::TokenKind::Management as i32);
    }
    // A revoke of an already revoked token changes nothing: no event. The
    // next event is the next real change.
    client
        .revoke_management_token(bearer(pb::RevokeTokenRequest { id: id_of(&m) }, &mgmt))
        .await
        .unwrap();
    let (id, _) = server.database_token(&[("x", true, false)]).await;
    let (r, c) = change(&mut stream).await;
    assert_eq!(r, head + 3);
    assert_eq!(c.token_id, id);
}

#[tokio::test]
async fn expiry_is_announced() {
    let server = TokenServer::start().await;
    let mgmt = server.management_token.clone();
    let proxy = server.proxy_token().await;
    let mut client = tokens_client(&server).await;
    let mut stream = watch(&mut client, &proxy, None).await;
    let (head, _) = sync(&mut stream).await;

    let expires_at = SystemTime::now() + Duration::from_secs(1);
    let created = create_db_token(
        &mut client,
        &mgmt,
        "expiring",
        vec![db_perm("db", true, true)],
        Some(expires_at),
    )
    .await;
    let (r, c) = change(&mut stream).await;
    assert_eq!((r, kind(&c)), (head + 1, pb::ChangeKind::Created));
    let (r, c) = change(&mut stream).await;
    assert_eq!(r, head + 2);
    assert_eq!(kind(&c), pb::ChangeKind::Expired);
    assert_eq!(c.token_id, id_of(&created));
    assert_eq!(c.token_kind, pb::TokenKind::Database as i32);
    let at = SystemTime::try_from(c.at.unwrap()).unwrap();
    let stored = SystemTime::try_from(created.info.unwrap().expires_at.unwrap()).unwrap();
    assert!(at >= stored, "announced at or after the expiry");

    // The expiry is in the log: a resumed stream replays it.
    let mut replay = watch(&mut client, &proxy, Some(head + 1)).await;
    let (_, s) = sync(&mut replay).await;
    assert!(s.resumed);
    let (r, c) = change(&mut replay).await;
    assert_eq!((r, kind(&c)), (head + 2, pb::ChangeKind::Expired));
}

#[tokio::test]
async fn a_revoked_expiring_token_is_not_announced_as_expired() {
    let server = TokenServer::start().await;
    let mgmt = server.management_token.clone();
    let proxy = server.proxy_token().await;
    let mut client = tokens_client(&server).await;
    let mut stream = watch(&mut client, &proxy, None).await;
    let (head, _) = sync(&mut stream).await;
    let soon = SystemTime::now() + Duration::from_secs(1);
    let revoked = create_db_token(
        &mut client,
        &mgmt,
        "r",
        vec![db_perm("db", true, true)],
        Some(soon),
    )
    .await;
    client
        .revoke_database_token(bearer(
            pb::RevokeTokenRequest {
                id: id_of(&revoked),
            },
            &mgmt,
        ))
        .await
        .unwrap();
    // A second token expiring a bit later marks the point where the first
    // one's expiry would have been announced.
    let marker = create_db_token(
        &mut client,
        &mgmt,
        "m",
        vec![db_perm("db", true, true)],
        Some(soon + Duration::from_millis(500)),
    )
    .await;
    let kinds = [
        pb::ChangeKind::Created,
        pb::ChangeKind::Revoked,
        pb::ChangeKind::Created,
        pb::ChangeKind::Expired,
    ];
    let mut last = None;
    for (i, want) in kinds.iter().enumerate() {
        let (r, c) = change(&mut stream).await;
        assert_eq!((r, kind(&c)), (head + 1 + i as u64, *want), "{c:?}");
        last = Some(c);
    }
    assert_eq!(
        last.unwrap().token_id,
        id_of(&marker),
        "only the unrevoked token expires"
    );
}

#[tokio::test]
async fn concurrent_creates_get_distinct_tokens_and_gapless_revisions() {
    const N: usize = 50;
    let server = TokenServer::start().await;
    let mgmt = server.management_token.clone();
    let proxy = server.proxy_token().await;
    let mut client = tokens_client(&server).await;
    let mut live = watch(&mut client, &proxy, None).await;
    let (head, _) = sync(&mut live).await;
    assert_eq!(head, 2, "only the bootstrap and the proxy token so far");

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let mut client = client.clone();
        let mgmt = mgmt.clone();
        tasks.spawn(async move {
            create_db_token(
                &mut client,
                &mgmt,
                &format!("c{i}"),
                vec![db_perm(&format!("db{i}"), true, true)],
                None,
            )
            .await
        });
    }
    let created: Vec<pb::CreatedToken> = tasks.join_all().await;
    let strings: HashSet<_> = created.iter().map(|c| c.token.clone()).collect();
    let ids: HashSet<_> = created.iter().map(id_of).collect();
    assert_eq!(strings.len(), N, "distinct token strings");
    assert_eq!(ids.len(), N, "distinct ids");
    assert_eq!(server.registry.head_revision(), head + N as u64);

    // Live: N changes, revisions head+1..=head+N in order.
    let mut live_ids = HashSet::new();
    for i in 0..N {
        let (r, c) = change(&mut live).await;
        assert_eq!(r, head + 1 + i as u64, "no gap, no reordering");
        assert_eq!(kind(&c), pb::ChangeKind::Created);
        live_ids.insert(c.token_id);
    }
    assert_eq!(live_ids, ids);

    // Replayed from 0: 1..=N+2 without gaps, the bootstrap first.
    let mut replay = watch(&mut client, &proxy, Some(0)).await;
    let (_, s) = sync(&mut replay).await;
    assert!(s.resumed);
    assert_eq!(s.head_revision, head + N as u64);
    let mut revisions = Vec::new();
    let mut replay_ids = HashSet::new();
    for _ in 0..N + 2 {
        let (r, c) = change(&mut replay).await;
        revisions.push(r);
        if c.token_kind == pb::TokenKind::Database as i32 {
            replay_ids.insert(c.token_id);
        }
    }
    assert_eq!(revisions, (1..=(N as u64 + 2)).collect::<Vec<_>>());
    assert_eq!(replay_ids, ids);

    // All of them authorize.
    let mut authz = crate::authz_client(&server).await;
    for c in &created {
        let r = crate::authorize(&mut authz, c.token.as_bytes(), vec![]).await;
        assert!(r.valid);
        assert_eq!(r.subject.unwrap().id, id_of(c));
    }
}

#[tokio::test]
async fn streams_end_when_the_server_stops() {
    let server = TokenServer::start().await;
    let proxy = server.proxy_token().await;
    let mut client = tokens_client(&server).await;
    let mut stream = watch(&mut client, &proxy, None).await;
    let _ = sync(&mut stream).await;
    // A stream must not hold the server open.
    tokio::time::timeout(EVENT_DEADLINE, server.stop())
        .await
        .expect("the server stops with a change stream open");
    let end = tokio::time::timeout(EVENT_DEADLINE, stream.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}
