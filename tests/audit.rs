//! The audit trail when things go wrong (issue 18, finding 5): a rotated
//! (renamed) or deleted file is replaced by a new one, a full disk
//! (`/dev/full`) loses no event silently, `--audit-required` refuses
//! requests (503) while events cannot be written, and an existing file
//! others can read is tightened to 0600.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxgate::audit::{Audit, AuditEvent, AuditOptions, Destination};
use fluxgate::authz::Authorizer;
use fluxgate::authz::client::AuthzClient;
use fluxgate::proxy::Proxy;
use fluxgate::proxy::forward::{Protocol, Upstream};
use fluxgate::proxy::gate::Gate;
use fluxgate::proxy::http::HttpService;

use common::TokenServer;
use common::capture::CaptureUpstream;
use common::proxy::{ProxyServer, request, send, settings};

const DEADLINE: Duration = Duration::from_secs(15);

fn event(n: u32) -> AuditEvent {
    AuditEvent {
        time: fluxgate::audit::now_rfc3339(),
        client: "127.0.0.1:1".into(),
        method: "POST".into(),
        path: format!("/event/{n}"),
        api: "v2",
        databases: vec!["db".into()],
        actions: vec!["write"],
        decision: "allow",
        status: 204,
        grpc_status: None,
        token_id: Some("t".into()),
        cache: "none",
        latency_ms: 0.1,
        reason: None,
    }
}

/// The `path` fields of the events in `file`.
fn paths(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            v["path"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn file_audit(path: &Path) -> Audit {
    Audit::start(&Destination::File(path.to_owned()))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_renamed_file_is_followed_by_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let rotated = dir.path().join("audit.jsonl.1");
    let audit = file_audit(&path).await;
    audit.record(&event(1));
    eventually("event 1 is written", || paths(&path) == ["/event/1"]).await;

    // logrotate without copytruncate: rename, then (with `create`) a new
    // file appears, here with a mode too open.
    std::fs::rename(&path, &rotated).unwrap();
    std::fs::write(&path, "").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    audit.record(&event(2));
    eventually("event 2 reaches the new file", || {
        paths(&path) == ["/event/2"]
    })
    .await;
    assert_eq!(
        paths(&rotated),
        ["/event/1"],
        "the rotated file is left alone"
    );
    assert_eq!(mode(&path), 0o600, "the new file is tightened");

    // Renamed and no new file: one is created, mode 0600.
    std::fs::rename(&path, dir.path().join("audit.jsonl.2")).unwrap();
    audit.record(&event(3));
    eventually("event 3 reaches a recreated file", || {
        paths(&path) == ["/event/3"]
    })
    .await;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(audit.dropped(), 0);
}

#[tokio::test]
async fn a_deleted_file_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let audit = file_audit(&path).await;
    audit.record(&event(1));
    eventually("event 1 is written", || paths(&path).len() == 1).await;
    std::fs::remove_file(&path).unwrap();
    audit.record(&event(2));
    eventually("event 2 reaches a new file", || {
        paths(&path) == ["/event/2"]
    })
    .await;
    // And without any event: the periodic check, or a reopen request
    // (what SIGHUP does), brings the file back.
    std::fs::remove_file(&path).unwrap();
    audit.reopen();
    eventually("the file is back", || path.exists()).await;
}

#[tokio::test]
async fn an_existing_file_open_to_others_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, "{\"old\":1}\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _audit = file_audit(&path).await;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"old\":1}\n",
        "appended to, never truncated"
    );
}

#[tokio::test]
async fn a_full_disk_counts_every_lost_event() {
    let metrics = fluxgate::telemetry::init_metrics();
    fluxgate::audit::describe_metrics();
    let full = PathBuf::from("/dev/full");
    let audit = Audit::start(&Destination::File(full)).await.unwrap();
    for n in 0..10 {
        audit.record(&event(n));
    }
    let a = audit.clone();
    eventually("all ten are counted as lost", || a.dropped() == 10).await;
    assert!(audit.is_failing());
    assert!(audit.accepting(), "without --audit-required requests go on");
    let text = metrics.render();
    let counted = text
        .lines()
        .find(|l| l.starts_with("fluxgate_audit_dropped_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the counter is exported");
    assert!(counted >= 10.0, "{counted}");
}

#[tokio::test]
async fn with_audit_required_requests_are_refused_while_events_cannot_be_written() {
    let tokens = TokenServer::start().await;
    let upstream = CaptureUpstream::start().await;
    let audit = Audit::start_with(
        &Destination::File(PathBuf::from("/dev/full")),
        AuditOptions { required: true },
    )
    .await
    .unwrap();
    let authorizer: Arc<dyn Authorizer> = Arc::new(AuthzClient::for_uri(
        tokens.url().parse().unwrap(),
        Duration::from_secs(2),
    ));
    let http = HttpService::new(
        Gate::new(authorizer, &settings(), audit.clone()),
        Upstream::new(upstream.url().parse().unwrap(), None, Protocol::Http1),
        Default::default(),
    );
    let proxy = ProxyServer::serve(Proxy::new(http)).await;
    let (_, token) = tokens.database_token(&[("db", false, true)]).await;
    let write = || {
        request(
            "POST",
            &proxy.url("/api/v2/write?bucket=db"),
            &[("authorization", &format!("Token {token}"))],
            "m v=1",
        )
    };
    // The first write is served: nothing has failed yet. Its event cannot
    // be written; from then on nothing is served unaudited.
    assert_eq!(send(write()).await.status, 204);
    let a = audit.clone();
    eventually("the writer fails", || a.is_failing()).await;
    assert!(!audit.accepting());
    for _ in 0..3 {
        let reply = send(write()).await;
        assert_eq!(reply.status, 503, "{:?}", reply.body);
        assert_eq!(reply.json()["code"], "unavailable");
    }
    assert_eq!(upstream.count(), 1, "nothing forwarded unaudited");
}
