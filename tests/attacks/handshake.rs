//! F1: Flight `Handshake` and the upstream credential.
//!
//! InfluxDB 3's Flight service (core/service_grpc_flight, `handshake`)
//! answers every Handshake with response metadata `authorization: Bearer
//! <the token it was called with>`: "IOx ignores the username and returns
//! the password itself as the token to use for subsequent requests". The
//! proxy forwards Handshake unchecked, replaces the caller's credential with
//! the upstream one (`--upstream-token-file`), and passes the response
//! metadata back. So whoever calls Handshake through the proxy, with or
//! without a token, must never receive the upstream credential.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::stream;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::support::{Env, UPSTREAM_SECRET};

type Stream<T> = Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The token of an `authorization` value as `authz::extract_token` reads
/// it (`Token`/`Bearer` value, or the password of `Basic`).
fn extract_token(metadata: &MetadataMap) -> Option<Vec<u8>> {
    let value = metadata.get("authorization")?.as_bytes().to_vec();
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    let rest = &rest[1..];
    let token = match scheme {
        b"Token" | b"Bearer" => rest.to_vec(),
        b"Basic" => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            let colon = decoded.iter().position(|b| *b == b':')?;
            decoded[colon + 1..].to_vec()
        }
        _ => return None,
    };
    (!token.is_empty()).then_some(token)
}

/// A Flight server whose Handshake is InfluxDB 3's; it counts the calls
/// it gets. Every other method is unimplemented.
#[derive(Clone, Default)]
struct Iox {
    handshakes: Arc<Mutex<usize>>,
}

#[tonic::async_trait]
impl FlightService for Iox {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoExchangeStream = Stream<FlightData>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        *self.handshakes.lock() += 1;
        let authz_token = extract_token(request.metadata());
        let request = request
            .into_inner()
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no handshake message"))?;
        let header = authz_token.map(|mut v| {
            let mut nv = b"Bearer ".to_vec();
            nv.append(&mut v);
            nv
        });
        let answer = HandshakeResponse {
            protocol_version: request.protocol_version,
            payload: request.payload,
        };
        let mut response =
            Response::new(Box::pin(stream::iter([Ok(answer)])) as Self::HandshakeStream);
        if let Some(header) = header {
            let value = tonic::metadata::AsciiMetadataValue::try_from(header)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("ListFlights"))
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("GetFlightInfo"))
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("PollFlightInfo"))
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("GetSchema"))
    }
    async fn do_get(&self, _: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        Err(Status::unimplemented("DoGet"))
    }
    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("DoPut"))
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("DoExchange"))
    }
    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("DoAction"))
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("ListActions"))
    }
}

struct IoxUpstream {
    addr: SocketAddr,
    service: Iox,
    shutdown: CancellationToken,
}

impl IoxUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = Iox::default();
        let shutdown = CancellationToken::new();
        let (served, stop) = (service.clone(), shutdown.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(FlightServiceServer::new(served))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                )
                .await
                .unwrap();
        });
        Self {
            addr,
            service,
            shutdown,
        }
    }
}

impl Drop for IoxUpstream {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Calls Handshake through the proxy with `authorization` (if any) and
/// returns every header and trailer value of the answer, as text.
async fn handshake(env: &Env, authorization: Option<&str>) -> Vec<String> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", env.proxy.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightServiceClient::new(channel);
    let mut request = Request::new(stream::iter([HandshakeRequest {
        protocol_version: 0,
        payload: Bytes::from_static(b"hello"),
    }]));
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    let mut seen = Vec::new();
    match client.handshake(request).await {
        Ok(response) => {
            seen.extend(
                response
                    .metadata()
                    .clone()
                    .into_headers()
                    .values()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            );
            let mut body = response.into_inner();
            while let Ok(Some(_)) = body.message().await {}
            if let Ok(Some(trailers)) = body.trailers().await {
                seen.extend(
                    trailers
                        .into_headers()
                        .values()
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
                );
            }
        }
        Err(status) => {
            seen.push(status.message().to_owned());
            seen.extend(
                status
                    .metadata()
                    .clone()
                    .into_headers()
                    .values()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            );
        }
    }
    seen
}

#[tokio::test]
async fn an_unauthenticated_handshake_never_returns_the_upstream_credential() {
    let iox = IoxUpstream::start().await;
    let env = Env::start(Some(&format!("http://{}", iox.addr))).await;
    let seen = handshake(&env, None).await;
    assert!(
        !seen.iter().any(|v| v.contains(UPSTREAM_SECRET)),
        "a caller with no token received the upstream credential: {seen:?}"
    );
}

#[tokio::test]
async fn a_database_token_handshake_never_returns_the_upstream_credential() {
    let iox = IoxUpstream::start().await;
    let env = Env::start(Some(&format!("http://{}", iox.addr))).await;
    for scheme in ["Bearer", "Token"] {
        let seen = handshake(&env, Some(&format!("{scheme} {}", env.x))).await;
        assert!(
            !seen.iter().any(|v| v.contains(UPSTREAM_SECRET)),
            "a read/write token for x received the upstream credential ({scheme}): {seen:?}"
        );
    }
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("jdbc:{}", env.x));
    let seen = handshake(&env, Some(&format!("Basic {basic}"))).await;
    assert!(
        !seen.iter().any(|v| v.contains(UPSTREAM_SECRET)),
        "a JDBC-style Basic handshake received the upstream credential: {seen:?}"
    );
}

#[tokio::test]
async fn an_unauthenticated_handshake_does_not_reach_the_upstream_with_its_credential() {
    // The upstream authenticates the call with the proxy's credential, so an
    // anonymous caller acts as the database's admin there: it must not get
    // that far.
    let iox = IoxUpstream::start().await;
    let env = Env::start(Some(&format!("http://{}", iox.addr))).await;
    let _ = handshake(&env, None).await;
    let _ = handshake(&env, Some("Bearer not-a-fluxgate-token")).await;
    assert_eq!(
        *iox.service.handshakes.lock(),
        0,
        "a Handshake without a known token reached the upstream"
    );
}
