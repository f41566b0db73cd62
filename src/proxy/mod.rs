//! The authorizing reverse proxy: one listener for HTTP/1.1, h2c and gRPC;
//! HTTP requests go through [`service::ProxyService`], gRPC (Flight) through
//! the Flight path.

pub mod body;
pub mod classify;
pub mod credentials;
pub mod flight;
pub mod forward;
pub mod framing;
pub mod listener;
pub mod reject;
pub mod service;
pub mod show_databases;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body::Body;

use self::body::{BoxError, ProxyBody};
use self::flight::FlightService;
use self::reject::grpc_status;
use self::service::{Peer, ProxyService};

/// Everything the listener dispatches to.
#[derive(Debug, Clone)]
pub struct Proxy {
    http: ProxyService,
    flight: Option<FlightService>,
}

impl Proxy {
    /// A proxy serving HTTP through `http`.
    pub fn new(http: ProxyService) -> Self {
        Self { http, flight: None }
    }

    /// Also serves gRPC (Arrow Flight) through `flight`; without it gRPC
    /// calls are answered UNIMPLEMENTED.
    pub fn with_flight(mut self, flight: FlightService) -> Self {
        self.flight = Some(flight);
        self
    }

    /// Dispatches one request by protocol.
    pub async fn handle<B>(&self, request: Request<B>, peer: Peer) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
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
