//! The proxy's listener: accepts TCP connections up to a limit, serves
//! HTTP/1.1 and HTTP/2 (prior knowledge, so gRPC shares the port) on each,
//! closes connections that stay idle, and on shutdown stops accepting and
//! lets every open connection finish its in-flight requests.
//!
//! Idleness and slow heads are watched by one sweeper task per listener,
//! not a timer per connection or per request: each connection's
//! [`Activity`] is registered with it, and the sweeper raises a
//! connection's signal (and wakes it) when a request head (the first or any
//! later one, as the framing watch sees them begin) took longer than the
//! header timeout, the connection stayed idle past the idle timeout, or the
//! listener shuts down. A connection's task polls its connection and, on
//! the way, one atomic. hyper's own HTTP/1 header timer is off: it also ran
//! while a kept-alive connection waited for its next request, closing idle
//! connections at the header timeout.
//!
//! Connections are served by listener threads ([`ListenerSettings::threads`],
//! one per core by default), each running a single-threaded runtime with its
//! own sweeper and its own upstream connections ([`Proxy::with_own_pools`]).
//! The one accept loop hands each new connection to the next thread in turn;
//! from then on its requests are read, decided and forwarded on that thread
//! and never wake another (on a work-stealing runtime every request woke a
//! parked worker to steal it, which cost more CPU than the stealing saved).
//! `threads: 0` serves on the caller's runtime instead.
//!
//! Connections come from the one accept loop ([`crate::accept`]). With TLS
//! ([`serve_tls`]) the handshake is bounded by the header read timeout and
//! offers ALPN `h2` and `http/1.1`: HTTPS and gRPC over TLS share the port
//! as HTTP and h2c do without it. Everything after the handshake, the
//! framing watch included, sees the decrypted stream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures_util::task::AtomicWaker;
use futures_util::{Stream, StreamExt as _};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Peer;
use super::Proxy;
use super::body::{BoxError, ProxyBody};
use super::framing::{FramingWatch, HeadProgress};
use crate::accept::{self, Accepted};
use crate::tls::ServerTls;

mod threads;

/// Connection-level limits.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// Most connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Longest time a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Largest request head (HTTP/1 buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// How long a connection with nothing in flight stays open.
    pub idle_timeout: Duration,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Listener threads, each with a single-threaded runtime; 0: connections
    /// are served on the runtime [`serve`] is called on.
    pub threads: usize,
}

/// One listener thread per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

impl Default for ListenerSettings {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 << 10,
            idle_timeout: Duration::from_secs(60),
            max_concurrent_streams: 128,
            threads: default_threads(),
        }
    }
}

fn builder(settings: &ListenerSettings) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    // No HTTP/1 header timer: the sweeper times heads (see the module).
    builder
        .http1()
        .header_read_timeout(None)
        .max_buf_size(settings.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(settings.max_concurrent_streams)
        .keep_alive_interval(Duration::from_secs(30))
        .adaptive_window(true);
    builder
}

/// What the sweeper tells a connection.
const RUN: u8 = 0;
/// Finish the requests in flight and close (idle, or shutting down).
const DRAIN: u8 = 1;
/// Close now (a request head not complete within the header timeout).
const CLOSE: u8 = 2;

/// Requests in flight on one connection and when the last one ended; and
/// the sweeper's signal to it.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
    /// A request head arrived: the connection is past its first head.
    spoke: AtomicBool,
    /// Heads as the framing watch sees them arrive, and when the
    /// connection began.
    head: HeadProgress,
    signal: AtomicU8,
    waker: AtomicWaker,
}

impl Activity {
    fn new(head: HeadProgress) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            spoke: AtomicBool::new(false),
            head,
            signal: AtomicU8::new(RUN),
            waker: AtomicWaker::new(),
        }
    }

    /// Raises `signal` (never lowers it) and wakes the connection.
    fn tell(&self, signal: u8) {
        if self.signal.fetch_max(signal, Ordering::AcqRel) < signal {
            self.waker.wake();
        }
    }

    /// How long ago the connection began.
    fn age(&self) -> Duration {
        self.head.origin().elapsed()
    }

    /// True while no request head has arrived for longer than `timeout`:
    /// a connection that sends nothing, part of a first head, or only the
    /// HTTP/2 preface.
    fn silent_for(&self, timeout: Duration) -> bool {
        !self.spoke.load(Ordering::Relaxed) && self.age() >= timeout
    }

    /// True when a later request head has been arriving for longer than
    /// `timeout` since the connection last had nothing in flight: a head
    /// pipelined behind a request is timed from when that request's
    /// response has been written, as hyper reads the rest of it only then.
    fn head_late(&self, timeout: Duration) -> bool {
        let Some(arriving) = self.head.arriving_for() else {
            return false;
        };
        self.idle_for()
            .is_some_and(|idle| arriving.min(idle) >= timeout)
    }

    fn touch(&self) {
        let ms = u64::try_from(self.age().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.age().saturating_sub(last))
    }
}

/// What a connection's requests are served with, shared by them: one
/// reference counted per request, not one per part.
struct Served {
    proxy: Proxy,
    peer: Peer,
    activity: Arc<Activity>,
}

/// A request counted in flight on its connection from when its head was
/// read until its response body is written, or dropped (the caller gone,
/// an HTTP/2 stream reset): a response still streaming is not idle time,
/// and a head pipelined behind it is not late until it ends.
struct InFlight(Arc<Served>);

impl InFlight {
    fn new(served: Arc<Served>) -> Self {
        served.activity.spoke.store(true, Ordering::Relaxed);
        served.activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(served)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0.activity;
        activity.touch();
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body holding its request's [`InFlight`] until hyper has
/// written it (hyper drops a body once it has sent its end).
struct Counted {
    body: ProxyBody,
    _in_flight: InFlight,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The connections a sweeper watches.
#[derive(Debug, Default)]
struct Sweeper {
    connections: Mutex<HashMap<u64, Arc<Activity>>>,
    next: AtomicU64,
    /// Shutting down: every connection drains, new ones too.
    closing: AtomicBool,
}

/// A connection's place with the sweeper; leaves it when dropped.
struct Watched {
    sweeper: Arc<Sweeper>,
    id: u64,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.sweeper.connections.lock().remove(&self.id);
    }
}

impl Sweeper {
    fn watch(self: &Arc<Self>, activity: &Arc<Activity>) -> Watched {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.connections.lock().insert(id, Arc::clone(activity));
        if self.closing.load(Ordering::Acquire) {
            activity.tell(DRAIN);
        }
        Watched {
            sweeper: Arc::clone(self),
            id,
        }
    }

    /// Looks at every connection once.
    fn sweep(&self, idle_timeout: Duration, header_timeout: Duration) {
        for activity in self.connections.lock().values() {
            if activity.silent_for(header_timeout) || activity.head_late(header_timeout * 2) {
                activity.tell(CLOSE);
                continue;
            }
            // A late head is drained first (hyper closes a connection
            // waiting for the rest of a head at once); closed at twice the
            // timeout should the drain not end it.
            if activity.head_late(header_timeout) {
                activity.tell(DRAIN);
                continue;
            }
            // A connection whose requests the watch no longer follows may
            // be sending a head slowly: held to the header timeout when idle.
            let limit = if activity.head.lost() {
                header_timeout.min(idle_timeout)
            } else {
                idle_timeout
            };
            if activity.idle_for().is_some_and(|idle| idle >= limit) {
                activity.tell(DRAIN);
            }
        }
    }

    /// Drains every connection, and every one registered from now on.
    fn close_all(&self) {
        self.closing.store(true, Ordering::Release);
        for activity in self.connections.lock().values() {
            activity.tell(DRAIN);
        }
    }

    /// Sweeps every `tick` until dropped with its task.
    async fn run(self: Arc<Self>, idle_timeout: Duration, header_timeout: Duration) {
        let tick = idle_timeout
            .min(header_timeout)
            .max(Duration::from_millis(100))
            / 4;
        let mut check = tokio::time::interval(tick);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            check.tick().await;
            self.sweep(idle_timeout, header_timeout);
        }
    }
}

/// Serves `proxy` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for open connections to finish their requests.
/// Fails when the listener threads cannot be started, or have all ended.
pub async fn serve(
    listener: TcpListener,
    proxy: Proxy,
    settings: ListenerSettings,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_tls(listener, proxy, settings, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is given: each connection is handshaken
/// with the configuration current when it was accepted, within the header
/// read timeout.
pub async fn serve_tls(
    listener: TcpListener,
    proxy: Proxy,
    settings: ListenerSettings,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let accepting = accept::accepting(listener, accept::slots(settings.max_connections));
    if settings.threads == 0 {
        serve_accepted(accepting, proxy, settings, tls, shutdown).await;
        return Ok(());
    }
    threads::serve(accepting, proxy, settings, tls, shutdown).await
}

/// Handshakes (TLS, or none) and serves `connections` on the current
/// runtime.
async fn serve_accepted(
    connections: impl Stream<Item = accept::Raw> + Send + 'static,
    proxy: Proxy,
    settings: ListenerSettings,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()>,
) {
    match tls {
        None => {
            let incoming = accept::handshaking(connections, accept::plain);
            serve_incoming(incoming, "http", proxy, settings, shutdown).await;
        }
        Some(tls) => {
            let handshake = accept::tls(tls, "proxy", settings.header_read_timeout);
            let incoming = accept::handshaking(connections, handshake);
            serve_incoming(incoming, "https", proxy, settings, shutdown).await;
        }
    }
}

async fn serve_incoming<S>(
    incoming: impl Stream<Item = Accepted<S>>,
    scheme: &'static str,
    proxy: Proxy,
    settings: ListenerSettings,
    shutdown: impl Future<Output = ()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = Arc::new(builder(&settings));
    let connections = TaskTracker::new();
    let sweeper = Arc::new(Sweeper::default());
    let sweeping = CancellationToken::new();
    // The sweeper stops with this function, however it ends.
    let _sweeping = sweeping.clone().drop_guard();
    {
        let (sweeper, stop) = (Arc::clone(&sweeper), sweeping.clone());
        let (idle, header) = (settings.idle_timeout, settings.header_read_timeout);
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = sweeper.run(idle, header) => {}
            }
        });
    }
    let open = metrics::gauge!("fluxgate_open_connections");
    // Owned, so that dropping it stops accepting before the drain.
    let mut incoming = Box::pin(incoming.take_until(shutdown));
    while let Some(accepted) = incoming.next().await {
        let (stream, addr, slot) = accepted.into_parts();
        let connection = Connection {
            proxy: proxy.clone(),
            builder: Arc::clone(&builder),
            sweeper: Arc::clone(&sweeper),
        };
        let open = open.clone();
        connections.spawn(async move {
            open.increment(1.0);
            connection.run(stream, addr, scheme).await;
            open.decrement(1.0);
            drop(slot);
        });
    }
    // Stop accepting (the accept task ends with the stream).
    drop(incoming);
    sweeper.close_all();
    connections.close();
    connections.wait().await;
}

/// What one connection needs from the listener.
struct Connection {
    proxy: Proxy,
    builder: Arc<Builder<TokioExecutor>>,
    sweeper: Arc<Sweeper>,
}

impl Connection {
    /// Serves requests on `stream` (plain or decrypted) until the client
    /// closes it, it stays idle too long, or the listener shuts down.
    async fn run<S>(self, stream: S, addr: std::net::SocketAddr, scheme: &'static str)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (stream, framing) = FramingWatch::new(stream);
        let peer = Peer::new(addr, scheme, framing);
        let activity = Arc::new(Activity::new(stream.progress()));
        let served = Arc::new(Served {
            proxy: self.proxy.clone(),
            peer,
            activity: Arc::clone(&activity),
        });
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let in_flight = InFlight::new(Arc::clone(&served));
            async move {
                let Served { proxy, peer, .. } = &*in_flight.0;
                let response = proxy.handle(request, peer).await;
                Ok::<_, Infallible>(response.map(|body| Counted {
                    body,
                    _in_flight: in_flight,
                }))
            }
        });
        let _watched = self.sweeper.watch(&activity);
        let connection = self.builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let mut draining = false;
        let ended = std::future::poll_fn(|cx| {
            activity.waker.register(cx.waker());
            match activity.signal.load(Ordering::Acquire) {
                CLOSE => return Poll::Ready(None),
                // Graceful: a response still streaming is finished first.
                DRAIN if !draining => {
                    connection.as_mut().graceful_shutdown();
                    draining = true;
                }
                _ => {}
            }
            connection.as_mut().poll(cx).map(Some)
        })
        .await;
        match ended {
            None => {
                tracing::debug!(client = %addr, "no request head within the header timeout; closing");
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, client = %addr, "connection ended with an error");
            }
            Some(Ok(())) => {}
        }
    }
}

#[cfg(test)]
mod tests;
