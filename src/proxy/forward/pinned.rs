//! Who a request comes from, as forwarding needs it: the `X-Forwarded-*`
//! values, made once per connection, and the upstream HTTP/1.1 connection
//! kept for the caller's connection.
//!
//! Why keep one: an HTTP/1.1 caller sends its requests one after another,
//! and hyper reads the next request head only once the previous response is
//! written. So the upstream connection that carried one request is free
//! again when the next arrives, and reusing it directly spares every
//! request the shared pool's checkout and return (a lock, a hashed key, a
//! waiter list). The first request of a connection still goes through the
//! pool, so a caller that sends one request per connection never costs an
//! upstream connection of its own; HTTP/2 callers, whose requests overlap,
//! always use the pool. The kept connection closes with the caller's; an
//! upstream pool keeps at most so many at once and opens at most so many a
//! second ([`KeptCount`]), and only authorized requests are sent on them.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::HeaderValue;
use hyper::client::conn::http1::SendRequest;
use parking_lot::Mutex;
use tokio::time::Sleep;

use super::super::body::ProxyBody;

/// The caller's connection, for forwarding.
#[derive(Debug)]
pub struct Origin {
    /// The caller's IP address, as `X-Forwarded-For` names it.
    pub(super) forwarded_for: HeaderValue,
    /// `http` or `https` (`X-Forwarded-Proto`).
    pub(super) proto: &'static str,
    pub(super) pinned: Pinned,
}

impl Origin {
    /// A caller at `addr`, connected over `proto` (`http` or `https`).
    pub fn new(addr: SocketAddr, proto: &'static str) -> Self {
        // An IP address is always a valid header value.
        let forwarded_for =
            HeaderValue::from_maybe_shared(bytes::Bytes::from(addr.ip().to_string()))
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            forwarded_for,
            proto,
            pinned: Pinned::default(),
        }
    }
}

/// Tells upstreams apart, so a connection kept for one is never used for
/// another.
static UPSTREAM_IDS: AtomicU64 = AtomicU64::new(1);

/// A new upstream identity.
pub(super) fn upstream_id() -> u64 {
    UPSTREAM_IDS.fetch_add(1, Ordering::Relaxed)
}

/// The upstream connection kept for one caller connection, and the timer
/// its requests' responses are timed with.
#[derive(Debug, Default)]
pub(super) struct Pinned {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    slot: Slot,
    /// Moved on to each request's deadline (a later one, which tokio does
    /// without touching its timer wheel), where a timer per request would
    /// be armed and cleared each time. It belongs to the runtime the
    /// connection's first request ran on: the listener serves a connection
    /// on one runtime to its end.
    timer: Option<Pin<Box<Sleep>>>,
}

#[derive(Debug, Default)]
enum Slot {
    /// No request forwarded yet.
    #[default]
    Fresh,
    /// A request was forwarded; none kept now (the first request went
    /// through the pool, or the kept connection is in use or was lost).
    Used,
    /// A connection to upstream `.0`, free for the next request.
    Kept(u64, SendRequest<ProxyBody>),
}

/// What a request to upstream `id` goes over.
pub(super) enum Take {
    /// The shared pool.
    Pool,
    /// A connection of the caller's own, to be opened.
    Open,
    /// The caller's kept connection.
    Kept(SendRequest<ProxyBody>),
}

impl Pinned {
    /// Takes what a request to upstream `id` goes over, and the response
    /// timer set to `deadline`. Both leave the caller's connection until
    /// [`Pinned::keep`] returns them: should two requests ever overlap, the
    /// second opens a connection and gets a timer of its own.
    pub(super) fn take(&self, id: u64, deadline: tokio::time::Instant) -> (Take, Pin<Box<Sleep>>) {
        let (slot, timer) = {
            let mut state = self.state.lock();
            (
                std::mem::replace(&mut state.slot, Slot::Used),
                state.timer.take(),
            )
        };
        let take = match slot {
            Slot::Fresh => Take::Pool,
            Slot::Kept(kept, sender) if kept == id => Take::Kept(sender),
            // Kept for another upstream: dropped, which closes it.
            Slot::Kept(..) | Slot::Used => Take::Open,
        };
        let timer = match timer {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        (take, timer)
    }

    /// Keeps `timer`, and `sender`, a connection to upstream `.0` that
    /// answered, for the next request.
    pub(super) fn keep(
        &self,
        sender: Option<(u64, SendRequest<ProxyBody>)>,
        timer: Pin<Box<Sleep>>,
    ) {
        let mut state = self.state.lock();
        if let Some((id, sender)) = sender {
            state.slot = Slot::Kept(id, sender);
        }
        state.timer = Some(timer);
    }
}

/// How many connections kept for callers are open, and how many were
/// opened lately, against [`Limits`].
#[derive(Debug, Clone, Default)]
pub(super) struct KeptCount(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    open: AtomicUsize,
    /// Opened in the current one-second window, and when it began.
    opened: Mutex<Option<(Instant, u32)>>,
}

/// What [`KeptCount::reserve`] allows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Open at once.
    pub(super) open: usize,
    /// Opened per second.
    pub(super) opens_per_second: u32,
}

/// One open kept connection, counted until dropped.
#[derive(Debug)]
pub(super) struct KeptPermit(Arc<Counts>);

impl KeptCount {
    /// Counts one more connection opened at `now`, unless `limits` say no.
    pub(super) fn reserve(&self, limits: Limits, now: Instant) -> Option<KeptPermit> {
        let counts = &self.0;
        {
            let mut opened = counts.opened.lock();
            let in_window = match *opened {
                Some((since, n))
                    if now.saturating_duration_since(since) < Duration::from_secs(1) =>
                {
                    (since, n)
                }
                _ => (now, 0),
            };
            if in_window.1 >= limits.opens_per_second {
                return None;
            }
            if counts
                .open
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                    (open < limits.open).then_some(open + 1)
                })
                .is_err()
            {
                return None;
            }
            *opened = Some((in_window.0, in_window.1 + 1));
        }
        Some(KeptPermit(Arc::clone(counts)))
    }
}

impl Drop for KeptPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_connections_are_counted_against_the_limits() {
        let now = Instant::now();
        let open_two = Limits {
            open: 2,
            opens_per_second: 100,
        };
        let kept = KeptCount::default();
        let first = kept.reserve(open_two, now).expect("room");
        let second = kept.reserve(open_two, now).expect("room");
        assert!(kept.reserve(open_two, now).is_none());
        drop(first);
        let third = kept.reserve(open_two, now).expect("room again");
        assert!(kept.reserve(open_two, now).is_none());
        drop((second, third));

        // However few are open, no more than so many are opened a second.
        let two_a_second = Limits {
            open: 100,
            opens_per_second: 2,
        };
        let kept = KeptCount::default();
        drop(kept.reserve(two_a_second, now).expect("room"));
        drop(kept.reserve(two_a_second, now).expect("room"));
        let soon = now + Duration::from_millis(999);
        assert!(kept.reserve(two_a_second, soon).is_none());
        let next_second = now + Duration::from_secs(1);
        assert!(kept.reserve(two_a_second, next_second).is_some());
    }

    /// A sender over an in-memory stream: no upstream needed.
    async fn sender() -> SendRequest<ProxyBody> {
        let (ours, _theirs) = tokio::io::duplex(64);
        let (sender, _connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(ours))
                .await
                .expect("an HTTP/1 handshake does no I/O");
        sender
    }

    #[tokio::test]
    async fn the_first_request_uses_the_pool_and_a_kept_connection_serves_its_upstream_only() {
        let pinned = Pinned::default();
        let take = |id| {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
            pinned.take(id, deadline)
        };
        let (first, timer) = take(1);
        assert!(matches!(first, Take::Pool));
        pinned.keep(None, timer);
        let (second, timer) = take(1);
        assert!(matches!(second, Take::Open));
        pinned.keep(Some((1, sender().await)), timer);
        let (third, timer) = take(1);
        assert!(matches!(third, Take::Kept(_)));
        // Taken: the next request, were one to overlap, opens its own.
        assert!(matches!(take(1).0, Take::Open));
        pinned.keep(Some((1, sender().await)), timer);
        assert!(matches!(take(2).0, Take::Open));
        // The one for upstream 1 was dropped, not kept for later.
        assert!(matches!(take(1).0, Take::Open));
    }
}
