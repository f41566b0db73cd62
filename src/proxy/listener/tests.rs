//! The listener threads: the connection limit across them, and the drain.
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::*;
use crate::audit::Audit;
use crate::authz::{Authorizer, AuthzError, Need, Verdict};
use crate::credentials::Token;
use crate::proxy::forward::{Protocol, Upstream};
use crate::proxy::gate::{Gate, GateSettings};
use crate::proxy::http::{AllowedPaths, HttpService};

/// Never asked: the tests use a public path only.
#[derive(Debug)]
struct Unused;

#[async_trait::async_trait]
impl Authorizer for Unused {
    async fn check(&self, _: &Token, _: &[Need]) -> Result<Verdict, AuthzError> {
        Err(AuthzError::Unavailable(
            "not asked in these tests".to_owned(),
        ))
    }

    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A proxy whose one route is the public `/ping`, forwarded to an
/// address nothing answers (so every request gets a 502 of its own).
async fn proxy() -> Proxy {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let gate = Gate::new(Arc::new(Unused), &GateSettings::default(), Audit::off());
    let allowed = AllowedPaths {
        public: vec!["/ping".to_owned()],
        ..AllowedPaths::default()
    };
    let upstream = Upstream::new(upstream.parse().unwrap(), None, Protocol::Http1);
    Proxy::new(HttpService::new(gate, upstream, allowed))
}

async fn start(
    threads: usize,
    max_connections: usize,
) -> (
    std::net::SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = ListenerSettings {
        threads,
        max_connections,
        ..ListenerSettings::default()
    };
    let stop = CancellationToken::new();
    let proxy = proxy().await;
    let task = tokio::spawn(serve(
        listener,
        proxy,
        settings,
        stop.clone().cancelled_owned(),
    ));
    (addr, stop, task)
}

/// Sends `GET /ping` and returns the status line, or `None` when no
/// answer comes within `wait`.
async fn ping(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nhost: proxy\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    match tokio::time::timeout(wait, stream.read_exact(&mut head)).await {
        Ok(Ok(_)) => Some(String::from_utf8_lossy(&head).into_owned()),
        _ => None,
    }
}

#[tokio::test]
async fn the_connection_limit_holds_across_listener_threads() {
    for threads in [0, 3] {
        let (addr, stop, task) = start(threads, 1).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        let answer = ping(&mut first, Duration::from_secs(10)).await;
        assert_eq!(answer.as_deref(), Some("HTTP/1.1 502"), "threads {threads}");
        // The one slot is taken: the second connection waits.
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut waiting = Box::pin(ping(&mut second, Duration::from_secs(10)));
        let early = tokio::time::timeout(Duration::from_millis(300), &mut waiting).await;
        assert!(early.is_err(), "threads {threads}: served past the limit");
        drop(first);
        assert_eq!(waiting.await.as_deref(), Some("HTTP/1.1 502"));
        drop(second);
        stop.cancel();
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn listener_threads_drain_and_stop_with_the_listener() {
    let (addr, stop, task) = start(2, 100).await;
    let mut connections = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let answer = ping(&mut stream, Duration::from_secs(10)).await;
        assert_eq!(answer.as_deref(), Some("HTTP/1.1 502"));
        connections.push(stream);
    }
    stop.cancel();
    // Idle keep-alive connections are closed, the threads end, and the
    // listening socket is closed before `serve` returns.
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the listener stops")
        .unwrap()
        .unwrap();
    for mut stream in connections {
        // The rest of the answer, then the end: the proxy closed it.
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest));
        assert!(closed.await.is_ok(), "an idle connection stayed open");
    }
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

#[test]
fn a_head_is_late_only_once_nothing_is_in_flight() {
    let timeout = Duration::from_millis(50);
    let head = HeadProgress::new();
    let activity = Activity::new(head.clone());
    activity.spoke.store(true, Ordering::Relaxed);
    head.arriving(true);
    // Pipelined behind a request still running: hyper reads it only once
    // that request ends, so it is not timed yet.
    activity.in_flight.store(1, Ordering::Relaxed);
    std::thread::sleep(timeout * 2);
    assert!(!activity.head_late(timeout));
    // The request ends: timed from then.
    activity.touch();
    activity.in_flight.store(0, Ordering::Relaxed);
    assert!(!activity.head_late(timeout));
    std::thread::sleep(timeout * 2);
    assert!(activity.head_late(timeout));
    // Between requests, no head arriving: idle, not late.
    head.arriving(false);
    assert!(!activity.head_late(timeout));
}
