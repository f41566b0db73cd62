//! F3: what an unauthenticated client can hold through the public routes
//! (`/ping`, `/health`, `--allow-path`).
//!
//! Public requests are forwarded with the caller's body streamed upstream
//! as it comes: not bounded in size, not bounded in time (the body guard
//! every decided request gets, `Streamed` with `--body-read-timeout`, is not
//! applied). InfluxDB 1.x answers `/ping` only once the request body is
//! complete (checked against the Debian influxd 1.6.7: a `GET /ping` with
//! `Content-Length: 100000` and 3 bytes of body gets no answer), so every
//! such request holds one upstream connection until `--upstream-timeout`
//! (60 s) and then costs the proxy a 504, at no cost to the client: N
//! connections (or N HTTP/2 streams on one connection) are N upstream
//! connections.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::support::Env;

/// Sends `head` plus `body_start` and waits up to `wait` for the status line.
async fn status_within(
    addr: std::net::SocketAddr,
    head: &str,
    body_start: &[u8],
    wait: Duration,
) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body_start).await.unwrap();
    let mut buf = vec![0u8; 512];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        ),
        _ => None,
    }
}

#[tokio::test]
async fn a_stalled_body_on_a_public_route_does_not_hold_the_upstream() {
    let env = Env::start(None).await;
    let started = Instant::now();
    // The capturing upstream, like influxd, answers once it has the body;
    // the proxy's body timeout here is 2 s, its upstream timeout 60 s.
    let head = "GET /ping HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n";
    let answer = status_within(env.proxy.addr, head, b"abc", Duration::from_secs(10)).await;
    let waited = started.elapsed();
    assert!(
        answer.as_deref().is_some_and(|line| !line.contains(" 5")),
        "an unauthenticated GET /ping whose body never ends held the request (and its upstream \
         connection) for {waited:?} and got {answer:?}; a public route should not forward a body \
         it does not need, or should bound it like every other body"
    );
}

#[tokio::test]
async fn public_routes_do_not_forward_request_bodies() {
    // A body on /ping means nothing to any InfluxDB; forwarding it lets an
    // unauthenticated client stream arbitrary bytes to the database.
    let env = Env::start(None).await;
    let body = vec![b'a'; 4 << 20];
    let reply = crate::common::proxy::send(crate::common::proxy::request(
        "GET",
        &env.proxy.url("/ping"),
        &[],
        body,
    ))
    .await;
    let forwarded: usize = env.upstream.requests().iter().map(|r| r.body.len()).sum();
    assert_eq!(
        forwarded, 0,
        "an unauthenticated GET /ping streamed {forwarded} body bytes to the database (status {})",
        reply.status
    );
}

/// A proxy with a 1 s header timeout and the default 60 s idle timeout.
async fn serve_with_header_timeout(
    env: &Env,
) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
    serve_with_header_timeout_to(env, &env.upstream.url()).await
}

/// [`serve_with_header_timeout`], forwarding to `upstream`.
async fn serve_with_header_timeout_to(
    env: &Env,
    upstream: &str,
) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
    use fluxgate::proxy::Proxy;
    use fluxgate::proxy::forward::{Protocol, Upstream};
    use fluxgate::proxy::http::HttpService;
    use fluxgate::proxy::listener::{self, ListenerSettings};
    let gate = crate::common::proxy::gate(
        std::sync::Arc::new(fluxgate::authz::client::AuthzClient::for_uri(
            env.tokens.url().parse().unwrap(),
            Duration::from_secs(2),
        )),
        &crate::common::proxy::settings(),
    );
    let upstream = Upstream::new(upstream.parse().unwrap(), None, Protocol::Http1);
    let proxy = Proxy::new(HttpService::new(gate, upstream, Default::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let settings = ListenerSettings {
        header_read_timeout: Duration::from_secs(1),
        ..ListenerSettings::default()
    };
    let shutdown = stop.clone();
    tokio::spawn(async move {
        listener::serve(listener, proxy, settings, shutdown.cancelled_owned())
            .await
            .expect("the listener starts");
    });
    (addr, stop)
}

/// Waits up to 10 s for the proxy to close `stream`: how long that took,
/// or `Err` with what the read gave when it is still open.
async fn closed_within(stream: &mut tokio::net::TcpStream) -> Result<Duration, String> {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => Ok(started.elapsed()),
        other => Err(format!(
            "still open after {:?}: {other:?}",
            started.elapsed()
        )),
    }
}

/// Sends `start` of a head that never ends; the proxy (1 s header
/// timeout) must close the connection well before its idle timeout.
async fn closed_when_a_head_stalls(
    mut stream: tokio::net::TcpStream,
    stop: tokio_util::sync::CancellationToken,
    start: &[u8],
) {
    stream.write_all(start).await.unwrap();
    let closed = closed_within(&mut stream).await;
    stop.cancel();
    assert!(
        closed
            .as_ref()
            .is_ok_and(|took| *took < Duration::from_secs(4)),
        "a head begun ({:?}) and never finished, 1 s header timeout: {closed:?}",
        String::from_utf8_lossy(start)
    );
}

/// A connection to a proxy with a 1 s header timeout, one `/ping`
/// answered on it.
async fn after_one_ping(env: &Env) -> (tokio::net::TcpStream, tokio_util::sync::CancellationToken) {
    let (addr, stop) = serve_with_header_timeout(env).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let first = ping_on(&mut stream).await;
    assert!(
        first.as_deref().is_some_and(|s| s.contains(" 204")),
        "{first:?}"
    );
    (stream, stop)
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_by_the_header_timeout() {
    // `--header-read-timeout` is documented as the slowloris bound, but a
    // connection that never sends its first byte is only closed by the idle
    // timeout (60 s): 10 000 silent connections refreshed once a minute hold
    // every `--max-connections` slot, and every other client waits in the
    // kernel's backlog.
    let env = Env::start(None).await;
    let (addr, stop) = serve_with_header_timeout(&env).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let closed = closed_within(&mut stream).await;
    stop.cancel();
    assert!(
        closed.is_ok(),
        "a silent connection with a 1 s header timeout: {closed:?}"
    );
}

/// Sends one `GET /ping` on `stream` and reads its whole answer (`/ping`
/// answers 204, no body); `None` when the connection was closed first.
async fn ping_on(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let sent = stream
        .write_all(b"GET /ping HTTP/1.1\r\nhost: fluxgate\r\n\r\n")
        .await;
    if sent.is_err() {
        return None;
    }
    let head = read_head(stream).await?;
    let head = String::from_utf8_lossy(&head).into_owned();
    Some(head.lines().next().unwrap_or_default().to_owned())
}

/// Reads from `stream` until a head's blank line (CRLF CRLF) has arrived:
/// what was read; `None` when the connection closed first.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

#[tokio::test]
async fn a_kept_alive_connection_outlives_the_header_timeout_while_idle() {
    // `--header-read-timeout` bounds how long a request head takes to
    // arrive; `--idle-timeout` (60 s here) how long a connection with
    // nothing in flight stays open. A client between two requests (Telegraf
    // waits its flush interval, 10 s by default) is idle, not slow: closing
    // it at the header timeout makes the client's next request race the
    // close.
    let env = Env::start(None).await;
    let (mut stream, stop) = after_one_ping(&env).await;
    // Idle for 2.5 header timeouts, well inside the idle timeout.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let second = ping_on(&mut stream).await;
    stop.cancel();
    assert!(
        second.as_deref().is_some_and(|s| s.contains(" 204")),
        "the connection was closed while idle between requests, after the header timeout \
         (1 s) and long before the idle timeout (60 s): {second:?}"
    );
}

#[tokio::test]
async fn a_slow_second_request_head_is_closed_by_the_header_timeout() {
    // The header timeout is the slowloris bound for every request head on a
    // connection, not only the first.
    let env = Env::start(None).await;
    let (stream, stop) = after_one_ping(&env).await;
    // The next head begins and never ends.
    closed_when_a_head_stalls(stream, stop, b"GET /ping HTTP/1.1\r\nhost: fl").await;
}

#[tokio::test]
async fn a_slow_head_after_a_bare_lf_request_is_closed_by_the_header_timeout() {
    // hyper reads heads whose lines end in a bare `\n`; a watch that ended
    // heads only at CRLF CRLF read this request's body as the rest of its
    // head, then skipped the next head's first bytes as body, and never saw
    // that head arriving.
    let env = Env::start(None).await;
    let (addr, stop) = serve_with_header_timeout(&env).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /ping HTTP/1.1\nhost: fluxgate\ncontent-length: 8\n\nxxxx\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.contains(" 204"), "{answer}");
    closed_when_a_head_stalls(stream, stop, b"GET /pi").await;
}

/// An upstream that answers every request with a chunked body of twelve
/// `ok` chunks, one every 250 ms (3 s in all).
async fn slowly_streaming_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut stream).await.is_none() {
                    return;
                }
                let start = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                if stream.write_all(start).await.is_err() {
                    return;
                }
                for _ in 0..12 {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if stream.write_all(b"2\r\nok\r\n").await.is_err() {
                        return;
                    }
                }
                let _ = stream.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_head_pipelined_behind_a_streaming_response_does_not_cut_it_off() {
    // hyper reads once from the caller while it writes a response, so the
    // watch sees the start of a pipelined head; hyper reads the rest only
    // once the response is written. Timing that head from when the
    // response began cut a 3 s response off at twice the 1 s header
    // timeout.
    let env = Env::start(None).await;
    let upstream = slowly_streaming_upstream().await;
    let (addr, stop) = serve_with_header_timeout_to(&env, &upstream).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nhost: fluxgate\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let mut pipelined = false;
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            // Once the response has begun, the next head, in part.
            if !pipelined {
                pipelined = true;
                stream
                    .write_all(b"GET /ping HTTP/1.1\r\nhost: a")
                    .await
                    .unwrap();
            }
            if answer.windows(5).any(|w| w == b"0\r\n\r\n") {
                break;
            }
        }
    };
    let finished = tokio::time::timeout(Duration::from_secs(10), read_all).await;
    stop.cancel();
    let answer = String::from_utf8_lossy(&answer);
    assert!(finished.is_ok(), "{answer}");
    assert_eq!(
        answer.matches("ok").count(),
        12,
        "the streamed response was cut off: {answer}"
    );
}
