//! The one accept loop every listener uses (the proxy's port, the token
//! service's, the admin port): connections are accepted up to a limit
//! (more wait in the kernel's backlog), Nagle is turned off, accept errors
//! (out of file descriptors, mostly) back off exponentially instead of
//! spinning, and each connection's handshake — TLS, or none — runs in its
//! own task, bounded in time, so a slow or silent client holds up nobody.
//!
//! The loop and the handshakes are separate steps ([`accepting`],
//! [`handshaking`]) so that the proxy can hand accepted connections to the
//! listener threads that handshake and serve them.
//!
//! What comes out is a stream of [`Accepted`] connections, each holding its
//! slot until it is dropped. tonic serves it as it is (an [`Accepted`] is
//! [`Connected`] as its stream is, so client certificates and addresses
//! reach the request); hyper callers take it apart. Dropping the stream
//! stops accepting.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::tls::ServerTls;

/// First pause after a failed accept; doubled on each failure in a row.
const MIN_BACKOFF: Duration = Duration::from_millis(5);
/// Longest pause after failed accepts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A connection that passed its handshake, holding one of its listener's
/// slots until dropped.
#[derive(Debug)]
pub struct Accepted<S> {
    /// The stream, decrypted if the listener speaks TLS.
    pub stream: S,
    /// The client's address.
    pub addr: SocketAddr,
    slot: OwnedSemaphorePermit,
}

impl<S> Accepted<S> {
    /// The stream, its address, and the slot to hold while serving it.
    pub fn into_parts(self) -> (S, SocketAddr, OwnedSemaphorePermit) {
        (self.stream, self.addr, self.slot)
    }
}

/// Accepts connections on `listener`, at most `max_connections` open at once
/// (counting those still handshaking), and yields each once `handshake` has
/// turned it into an `S` (`None`: it failed, and said why).
pub fn incoming<S, H, F>(
    listener: TcpListener,
    max_connections: usize,
    handshake: H,
) -> impl Stream<Item = Accepted<S>> + Send + 'static
where
    H: Fn(TcpStream, SocketAddr) -> F + Send + 'static,
    F: Future<Output = Option<S>> + Send + 'static,
    S: Send + 'static,
{
    handshaking(accepting(listener, slots(max_connections)), handshake)
}

/// The slots of a listener allowing `max_connections` at once.
pub fn slots(max_connections: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(max_connections.max(1)))
}

/// A connection accepted and not yet handshaken, holding its slot. As a
/// standard-library stream ([`Raw::into_std`]) it can be handed to another
/// runtime, which takes it up with [`Raw::into_tokio`].
#[derive(Debug)]
pub struct Raw<T = TcpStream> {
    stream: T,
    addr: SocketAddr,
    slot: OwnedSemaphorePermit,
}

impl Raw {
    /// Leaves this runtime's reactor, to be taken up by another's.
    pub fn into_std(self) -> io::Result<Raw<std::net::TcpStream>> {
        Ok(Raw {
            stream: self.stream.into_std()?,
            addr: self.addr,
            slot: self.slot,
        })
    }
}

impl Raw<std::net::TcpStream> {
    /// Joins the current runtime's reactor.
    pub fn into_tokio(self) -> io::Result<Raw> {
        Ok(Raw {
            stream: TcpStream::from_std(self.stream)?,
            addr: self.addr,
            slot: self.slot,
        })
    }
}

/// The accept loop: connections on `listener` as they come, each with one
/// of `slots` (none free: the next waits in the kernel's backlog).
#[derive(Debug)]
pub struct Accepting {
    connections: ReceiverStream<Raw>,
    task: JoinHandle<()>,
}

impl Accepting {
    /// Stops accepting, and returns once the listening socket is closed.
    pub async fn close(self) {
        drop(self.connections);
        let _ = self.task.await;
    }
}

impl Stream for Accepting {
    type Item = Raw;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Raw>> {
        Pin::new(&mut self.connections).poll_next(cx)
    }
}

/// Starts accepting on `listener`; dropping what it returns stops it.
pub fn accepting(listener: TcpListener, slots: Arc<Semaphore>) -> Accepting {
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(async move {
        let mut backoff = MIN_BACKOFF;
        loop {
            let slot = tokio::select! {
                () = tx.closed() => break,
                slot = Arc::clone(&slots).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let (stream, addr) = tokio::select! {
                () = tx.closed() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, pause = ?backoff, "accept failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
            };
            backoff = MIN_BACKOFF;
            // Nagle off: answers are small and latency-bound.
            let _ = stream.set_nodelay(true);
            if tx.send(Raw { stream, addr, slot }).await.is_err() {
                break;
            }
        }
    });
    Accepting {
        connections: ReceiverStream::new(rx),
        task,
    }
}

/// Runs `handshake` on each of `connections` in its own task, and yields
/// those that pass it. Dropping what it returns drops `connections`.
pub fn handshaking<S, H, F>(
    connections: impl Stream<Item = Raw> + Send + 'static,
    handshake: H,
) -> impl Stream<Item = Accepted<S>> + Send + 'static
where
    H: Fn(TcpStream, SocketAddr) -> F + Send + 'static,
    F: Future<Output = Option<S>> + Send + 'static,
    S: Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut connections = Box::pin(connections);
        loop {
            let raw = tokio::select! {
                () = tx.closed() => break,
                raw = connections.next() => match raw {
                    Some(raw) => raw,
                    None => break,
                },
            };
            let Raw { stream, addr, slot } = raw;
            let (shaking, tx) = (handshake(stream, addr), tx.clone());
            tokio::spawn(async move {
                if let Some(stream) = shaking.await {
                    let _ = tx.send(Accepted { stream, addr, slot }).await;
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// No handshake: the TCP stream as it is.
pub fn plain(stream: TcpStream, _: SocketAddr) -> std::future::Ready<Option<TcpStream>> {
    std::future::ready(Some(stream))
}

/// A handshake in progress.
pub type Handshaking<S> = Pin<Box<dyn Future<Output = Option<S>> + Send>>;

/// A TLS handshake with `tls`'s configuration at accept time, bounded by
/// `timeout`; failures are logged and counted under `listener`.
pub fn tls(
    tls: ServerTls,
    listener: &'static str,
    timeout: Duration,
) -> impl Fn(TcpStream, SocketAddr) -> Handshaking<TlsStream<TcpStream>> + Send + 'static {
    move |stream, addr| {
        let acceptor = tls.acceptor();
        Box::pin(async move {
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => Some(stream),
                Ok(Err(e)) => {
                    crate::tls::server::handshake_failed(listener, addr, &e.to_string());
                    None
                }
                Err(_) => {
                    crate::tls::server::handshake_failed(listener, addr, "timed out");
                    None
                }
            }
        })
    }
}

impl<S: Connected> Connected for Accepted<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Accepted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Accepted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;

    #[tokio::test]
    async fn connections_beyond_the_limit_wait_until_a_slot_frees() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = Box::pin(incoming(listener, 1, plain));
        let _a = TcpStream::connect(addr).await.unwrap();
        let first = accepted.next().await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        // The second waits in the backlog while the first holds the slot.
        let waiting = tokio::time::timeout(Duration::from_millis(200), accepted.next()).await;
        assert!(waiting.is_err());
        drop(first);
        assert!(accepted.next().await.is_some());
    }

    #[tokio::test]
    async fn failed_handshakes_are_not_yielded_and_free_their_slot() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refuse_first = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let mut accepted = Box::pin(incoming(listener, 1, move |stream, _| {
            let refuse = refuse_first.swap(false, std::sync::atomic::Ordering::SeqCst);
            std::future::ready((!refuse).then_some(stream))
        }));
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let got = accepted.next().await.unwrap();
        assert_eq!(got.stream.peer_addr().unwrap(), _b.local_addr().unwrap());
    }
}
