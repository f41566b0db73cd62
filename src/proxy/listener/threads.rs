//! Listener threads: one single-threaded runtime per thread, each serving
//! the connections the one accept loop hands it in turn (see the module
//! above for why).

use std::future::Future;
use std::io;

use futures_util::StreamExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{ListenerSettings, serve_accepted};
use crate::accept::{self, Raw};
use crate::proxy::Proxy;
use crate::tls::ServerTls;

/// Serves what `accepting` accepts on `settings.threads` listener threads
/// until `shutdown`, then stops accepting and lets every thread drain.
pub(super) async fn serve(
    accepting: accept::Accepting,
    proxy: Proxy,
    settings: ListenerSettings,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let stop = CancellationToken::new();
    // The threads stop with this function, however it ends.
    let _stop = stop.clone().drop_guard();
    let mut threads = Vec::with_capacity(settings.threads);
    for index in 0..settings.threads {
        let thread = ListenerThread {
            proxy: proxy.with_own_pools(),
            settings: settings.clone(),
            tls: tls.clone(),
            stop: stop.clone(),
        };
        threads.push(thread.start(index)?);
    }
    for thread in &mut threads {
        (&mut thread.started)
            .await
            .unwrap_or_else(|_| Err(io::Error::other("a listener thread ended early")))?;
    }
    let handed_out = hand_out(accepting, &threads, shutdown).await;
    stop.cancel();
    for thread in threads {
        // Resolves (closed) when the thread has drained and ended.
        let _ = thread.ended.await;
    }
    handed_out
}

/// Hands each accepted connection to the next listener thread in turn
/// until `shutdown`, then stops accepting. Fails when no thread is left to
/// take connections. (With every thread accepting on the socket itself,
/// the thread that happened to be awake took a whole burst of connections
/// and the others idled.)
async fn hand_out(
    mut accepting: accept::Accepting,
    threads: &[Started],
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut next = 0;
    let mut result = Ok(());
    let mut until = Box::pin((&mut accepting).take_until(shutdown));
    while let Some(raw) = until.next().await {
        // Leaves this runtime's reactor; the thread's takes it up.
        let raw = match raw.into_std() {
            Ok(raw) => raw,
            Err(e) => {
                tracing::warn!(error = %e, "an accepted connection could not be handed to a listener thread");
                continue;
            }
        };
        // A thread that has ended (it cannot, short of a bug) is passed
        // over; with none left, nothing more is accepted.
        let mut raw = Some(raw);
        for _ in 0..threads.len() {
            let thread = &threads[next % threads.len()];
            next = next.wrapping_add(1);
            match raw.take().map(|raw| thread.connections.send(raw)) {
                Some(Err(unsent)) => {
                    tracing::warn!("a listener thread has ended; its share goes to the others");
                    raw = Some(unsent.0);
                }
                _ => break,
            }
        }
        if raw.is_some() {
            result = Err(io::Error::other("every listener thread has ended"));
            break;
        }
    }
    drop(until);
    accepting.close().await;
    result
}

/// What one listener thread serves with.
struct ListenerThread {
    proxy: Proxy,
    settings: ListenerSettings,
    tls: Option<ServerTls>,
    stop: CancellationToken,
}

/// A started listener thread: where its connections go, whether it could
/// start, and its end.
struct Started {
    connections: mpsc::UnboundedSender<Raw<std::net::TcpStream>>,
    started: oneshot::Receiver<io::Result<()>>,
    ended: oneshot::Receiver<()>,
}

impl ListenerThread {
    /// Starts the thread serving the connections it is handed.
    fn start(self, index: usize) -> io::Result<Started> {
        let (connections, handed) = mpsc::unbounded_channel();
        let (started_tx, started) = oneshot::channel();
        let (ended_tx, ended) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("fluxgate-listener-{index}"))
            .spawn(move || {
                // Dropped when the thread ends, which is what `ended` waits for.
                let _ended = ended_tx;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let runtime = match runtime {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                let _ = started_tx.send(Ok(()));
                runtime.block_on(async move {
                    let connections = UnboundedReceiverStream::new(handed)
                        .filter_map(|raw| std::future::ready(taken_up(raw)));
                    let stop = self.stop.clone();
                    serve_accepted(
                        connections,
                        self.proxy,
                        self.settings,
                        self.tls,
                        stop.cancelled_owned(),
                    )
                    .await;
                });
            })?;
        Ok(Started {
            connections,
            started,
            ended,
        })
    }
}

/// A handed-over connection on this thread's reactor; `None` (logged) when
/// it cannot join it.
fn taken_up(raw: Raw<std::net::TcpStream>) -> Option<Raw> {
    raw.into_tokio()
        .map_err(|e| tracing::warn!(error = %e, "a listener thread could not take up a connection"))
        .ok()
}
