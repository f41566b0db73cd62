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
//! always use the pool. The kept connection closes with the caller's.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;
use hyper::client::conn::http1::SendRequest;
use parking_lot::Mutex;

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

/// The upstream connection kept for one caller connection.
#[derive(Debug, Default)]
pub(super) struct Pinned {
    slot: Mutex<Slot>,
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
    /// Takes what a request to upstream `id` goes over; a kept connection
    /// leaves the slot until [`Pinned::keep`] returns it.
    pub(super) fn take(&self, id: u64) -> Take {
        let mut slot = self.slot.lock();
        match std::mem::replace(&mut *slot, Slot::Used) {
            Slot::Fresh => Take::Pool,
            Slot::Kept(kept, sender) if kept == id => Take::Kept(sender),
            // Kept for another upstream: dropped, which closes it.
            Slot::Kept(..) | Slot::Used => Take::Open,
        }
    }

    /// Keeps `sender`, a connection to upstream `id`, for the next request.
    pub(super) fn keep(&self, id: u64, sender: SendRequest<ProxyBody>) {
        *self.slot.lock() = Slot::Kept(id, sender);
    }
}
