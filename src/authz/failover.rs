//! Several token-service replicas behind one client: `--authz
//! https://a:8090,https://b:8090`.
//!
//! [`FailoverChannel`] keeps one lazily connected tonic channel per URL and
//! sends every call to the current one; a call that fails at the transport
//! level (connection refused or reset, TLS failure) moves the current
//! replica to the next, so the next call, or the caller's retry, goes
//! there. Authorize retries such a call at once (it is a read); the change
//! stream reconnects through the same channel and resumes at the revision it
//! had, which every replica of one store shares.
//!
//! Why not tonic's `Channel::balance_list`: its endpoints are connected
//! lazily and report ready even when their connection failed (the error is
//! returned by the call), so the balancer keeps choosing a dead replica for
//! a share of the calls, forever. Here a dead replica costs one failed call.
//!
//! A URL whose host name resolves to several addresses is one channel: its
//! connector tries each address in turn at every (re)connect, the connect
//! timeout split between them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::Service;
use tonic::transport::{Channel, Endpoint};

/// The token service's endpoints, TLS already configured, in order of
/// preference.
#[derive(Debug, Clone)]
pub struct AuthzEndpoints {
    endpoints: Vec<Endpoint>,
}

impl From<Endpoint> for AuthzEndpoints {
    fn from(endpoint: Endpoint) -> Self {
        Self {
            endpoints: vec![endpoint],
        }
    }
}

impl AuthzEndpoints {
    /// `endpoints`, which must not be empty.
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        assert!(!endpoints.is_empty(), "at least one token service endpoint");
        Self { endpoints }
    }

    /// How many replicas.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Never true (see [`AuthzEndpoints::new`]).
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// A channel over every endpoint, each set up by `configure` (timeouts,
    /// keep-alive) and connected lazily.
    pub fn channel(&self, configure: impl Fn(Endpoint) -> Endpoint) -> FailoverChannel {
        let replicas = self
            .endpoints
            .iter()
            .map(|e| Replica {
                name: e.uri().to_string(),
                channel: configure(e.clone()).connect_lazy(),
            })
            .collect();
        FailoverChannel {
            inner: Arc::new(Inner {
                replicas,
                current: AtomicUsize::new(0),
            }),
        }
    }
}

#[derive(Debug)]
struct Replica {
    name: String,
    channel: Channel,
}

#[derive(Debug)]
struct Inner {
    replicas: Vec<Replica>,
    current: AtomicUsize,
}

impl Inner {
    /// The call that went to `index` failed: move on, unless another call
    /// already did.
    fn failed(&self, index: usize) {
        let next = (index + 1) % self.replicas.len();
        if next != index
            && self
                .current
                .compare_exchange(index, next, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            tracing::warn!(
                failed = %self.replicas[index].name,
                next = %self.replicas[next].name,
                "token service replica unreachable; failing over"
            );
            metrics::counter!("fluxgate_authz_failovers_total").increment(1);
        }
    }
}

/// A gRPC channel over several replicas, one in use at a time (see the
/// module documentation). Cheap to clone.
#[derive(Debug, Clone)]
pub struct FailoverChannel {
    inner: Arc<Inner>,
}

impl FailoverChannel {
    /// Which replica calls go to now; it changes when one fails.
    pub fn current(&self) -> usize {
        self.inner.current.load(Ordering::SeqCst)
    }

    /// How many replicas.
    pub fn replicas(&self) -> usize {
        self.inner.replicas.len()
    }
}

impl Service<http::Request<Body>> for FailoverChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call waits for its own channel's readiness.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        let index = inner.current.load(Ordering::SeqCst);
        let mut channel = inner.replicas[index].channel.clone();
        Box::pin(async move {
            let ready = std::future::poll_fn(|cx| channel.poll_ready(cx)).await;
            let result = match ready {
                Ok(()) => channel.call(request).await,
                Err(e) => Err(e),
            };
            if result.is_err() {
                inner.failed(index);
            }
            result
        })
    }
}
