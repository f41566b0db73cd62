//! The authorizing reverse proxy: one listener for HTTP/1.1, h2c and gRPC;
//! HTTP requests go through [`http::HttpService`], gRPC (Flight) through
//! [`flight::FlightService`], both through one [`gate::Gate`].
//!
//! - [`listener`] accepts connections and serves HTTP/1.1 and HTTP/2 on them;
//! - [`read`] reads what a request means, strictly, and rebuilds what is
//!   forwarded; [`classify`] turns that into the permissions it needs;
//! - [`gate`] decides, throttles, bounds body reading, and ends every
//!   request (response, log, metrics, audit); [`reject`] is the one mapping
//!   from a refusal to a response;
//! - [`forward`] talks to the database.

pub mod body;
pub mod classify;
pub mod credentials;
pub mod flight;
pub mod forward;
pub mod framing;
pub mod gate;
pub mod http;
pub mod last_query;
pub mod listener;
pub mod listing;
pub mod read;
pub mod reject;
pub mod throttle;

use std::net::SocketAddr;
use std::sync::Arc;

use ::http::{Request, Response, header};
use bytes::Bytes;
use http_body::Body;

use self::body::{BoxError, ProxyBody};
use self::flight::FlightService;
use self::forward::Origin;
use self::framing::AmbiguousFraming;
use self::gate::InFlight;
use self::http::HttpService;
use self::last_query::LastQuery;
use self::reject::grpc_status;
use crate::authz::memo::Memo;

/// Who is connected, as the listener saw it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Raised when the connection sent a request with ambiguous framing.
    pub framing: AmbiguousFraming,
    /// The connection's last decisions, reused while they hold.
    pub memo: Arc<Memo>,
    /// The connection's last `GET /query`, as read.
    pub last_query: Arc<LastQuery>,
    /// The connection as forwarding sees it (`X-Forwarded-*`, the upstream
    /// connection kept for it).
    pub origin: Arc<Origin>,
}

impl Peer {
    /// A peer at `addr` over plain HTTP.
    pub fn plain(addr: SocketAddr) -> Self {
        Self::new(addr, "http", AmbiguousFraming::default())
    }

    /// A peer at `addr` over `scheme` (`http` or `https`), whose framing
    /// is watched by `framing`.
    pub fn new(addr: SocketAddr, scheme: &'static str, framing: AmbiguousFraming) -> Self {
        Self {
            addr,
            scheme,
            framing,
            memo: Arc::default(),
            last_query: Arc::default(),
            origin: Arc::new(Origin::new(addr, scheme)),
        }
    }
}

/// Everything the listener dispatches to.
#[derive(Debug, Clone)]
pub struct Proxy {
    http: HttpService,
    flight: Option<FlightService>,
}

impl Proxy {
    /// A proxy serving HTTP through `http`.
    pub fn new(http: HttpService) -> Self {
        Self { http, flight: None }
    }

    /// Also serves gRPC (Arrow Flight) through `flight`; without it gRPC
    /// calls are answered UNIMPLEMENTED.
    pub fn with_flight(mut self, flight: FlightService) -> Self {
        self.flight = Some(flight);
        self
    }

    /// The same proxy over upstream connections of its own: one per
    /// listener thread.
    pub fn with_own_pools(&self) -> Self {
        Self {
            http: self.http.with_own_pool(),
            flight: self.flight.as_ref().map(FlightService::with_own_pool),
        }
    }

    /// Dispatches one request by protocol.
    pub async fn handle<B>(&self, request: Request<B>, peer: &Peer) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let _in_flight = InFlight::enter();
        let request = request.map(ProxyBody::new);
        if is_grpc(&request) {
            return match &self.flight {
                Some(flight) => flight.handle(request, peer).await,
                None => grpc_status(
                    tonic::Code::Unimplemented,
                    "gRPC is not served by this proxy",
                ),
            };
        }
        self.http.handle(request, peer).await
    }
}

/// True for gRPC requests (`content-type: application/grpc…`).
pub fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
