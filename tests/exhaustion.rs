//! An unauthenticated client must not be able to hold the proxy's memory:
//! 300 connections at once, each sending a body just under `--max-body`
//! with a bogus token, against the real `fluxgate serve` binary, whose peak
//! resident memory is read from /proc. Every one gets 401 without its body
//! being buffered, so the peak stays near idle (300 buffered bodies would
//! be 300 MiB).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::binary::Serve;
use common::capture::CaptureUpstream;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const CONNECTIONS: usize = 300;
const BODY: usize = (1 << 20) - 1024;

/// A field of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Sends a whole request with `body_len` bytes of body (writing as fast as
/// the proxy reads, giving up when it stops reading) and returns the status.
async fn bogus(port: u16, body_len: usize) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let head = format!(
        "POST /query HTTP/1.1\r\nhost: x\r\nauthorization: Token bogus\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {body_len}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'a'; 64 << 10];
        let mut left = body_len;
        while left > 0 {
            let n = left.min(chunk.len());
            if write.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            left -= n;
        }
        // Keep the write side open: a half-closed HTTP/1.1 connection is
        // one the server may close before answering.
        std::future::pending::<()>().await;
    });
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(30), read.read(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    writer.abort();
    let line = String::from_utf8_lossy(&answer[..n]);
    line.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bogus_tokens_with_large_bodies_leave_memory_near_idle() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = CaptureUpstream::start().await;
    let serve = Serve::start(
        dir.path(),
        &upstream.url(),
        // Every bogus token reaches the token check (none is throttled).
        &[
            "--invalid-token-rate",
            "1000000",
            "--max-connections",
            "1000",
        ],
        &[],
    );
    let pid = serve.process.child.id();
    // Warm the process up (first connections, first Authorize) before the
    // baseline.
    let first = bogus(serve.port, 10).await;
    assert_eq!(first, 401, "{}", serve.process.log_text());
    let idle = status_kib(pid, "VmRSS:");
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(bogus(serve.port, BODY)))
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    let peak = status_kib(pid, "VmHWM:");
    let after = status_kib(pid, "VmRSS:");
    println!(
        "{CONNECTIONS} connections × {BODY} B with a bogus token: idle RSS {idle} KiB, peak {peak} KiB (+{} KiB), after {after} KiB, {elapsed:?}",
        peak.saturating_sub(idle)
    );
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(upstream.count(), 0);
    // 300 buffered bodies would be ~300 MiB; allow for allocator and
    // per-connection buffers.
    assert!(
        peak.saturating_sub(idle) < 64 << 10,
        "peak RSS grew by {} KiB",
        peak - idle
    );
}
