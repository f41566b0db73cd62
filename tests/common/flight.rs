//! A real Arrow Flight server (arrow-flight's `FlightService`) on
//! 127.0.0.1:0 to stand behind the proxy, recording every call it gets.
//!
//! - `DoGet` answers `rows=N` rows (N read from the ticket text, default 3)
//!   of one Int64 column `value`, in batches of 10,000.
//! - `GetFlightInfo` answers one endpoint whose ticket is an Any-wrapped
//!   ReadInfo (`FLIGHT_SQL_MESSAGE`) for the `database` metadata, as
//!   InfluxDB 3 does.
//! - `Handshake` echoes the payload; `ListFlights` answers nothing; `DoPut`
//!   drains the stream and answers one `PutResult`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use fluxgate::proxy::flight::ticket::{READ_INFO_TYPE_URL, ReadInfo, query_type};
use futures_util::stream::{self, BoxStream, StreamExt as _, TryStreamExt as _};
use parking_lot::Mutex;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// One call the upstream received.
#[derive(Debug, Clone)]
pub struct FlightCall {
    pub method: &'static str,
    pub metadata: http::HeaderMap,
    /// DoGet: the ticket bytes.
    pub ticket: Option<Bytes>,
}

type Calls = Arc<Mutex<Vec<FlightCall>>>;

/// The Flight server.
pub struct FlightUpstream {
    pub addr: SocketAddr,
    calls: Calls,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FlightUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let calls = Calls::default();
        let service = Recorder {
            calls: Arc::clone(&calls),
        };
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(FlightServiceServer::new(service))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                )
                .await
                .expect("flight upstream");
        });
        Self {
            addr,
            calls,
            shutdown,
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> Vec<FlightCall> {
        self.calls.lock().clone()
    }

    pub fn last(&self) -> FlightCall {
        self.calls().pop().expect("the upstream received no call")
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for FlightUpstream {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The schema of every DoGet answer.
pub fn rows_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![Field::new(
        "value",
        DataType::Int64,
        false,
    )]))
}

/// `rows=N` in the ticket text, or 3.
fn rows_asked(ticket: &[u8]) -> usize {
    let text = String::from_utf8_lossy(ticket);
    text.find("rows=")
        .map(|i| {
            text[i + 5..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(3)
}

struct Recorder {
    calls: Calls,
}

impl Recorder {
    fn record<T>(&self, method: &'static str, request: &Request<T>, ticket: Option<Bytes>) {
        self.calls.lock().push(FlightCall {
            method,
            metadata: request.metadata().clone().into_headers(),
            ticket,
        });
    }
}

type Stream<T> = Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FlightService for Recorder {
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
        self.record("Handshake", &request, None);
        let mut incoming = request.into_inner();
        let payload = match incoming.message().await? {
            Some(m) => m.payload,
            None => Bytes::new(),
        };
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload,
        };
        Ok(Response::new(Box::pin(stream::iter([Ok(answer)]))))
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.record("ListFlights", &request, None);
        Ok(Response::new(Box::pin(stream::empty())))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.record("GetFlightInfo", &request, None);
        let database = request
            .metadata()
            .get("database")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let descriptor = request.into_inner();
        let read_info = ReadInfo {
            database,
            query_type: query_type::FLIGHT_SQL_MESSAGE,
            flightsql_command: descriptor.cmd.to_vec(),
            ..Default::default()
        };
        let ticket = prost_types::Any {
            type_url: READ_INFO_TYPE_URL.to_owned(),
            value: read_info.encode_to_vec(),
        }
        .encode_to_vec();
        let info = FlightInfo::new()
            .try_with_schema(&rows_schema())
            .map_err(|e| Status::internal(e.to_string()))?
            .with_descriptor(descriptor)
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)));
        Ok(Response::new(info))
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.record("PollFlightInfo", &request, None);
        Err(Status::unimplemented("PollFlightInfo"))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        self.record("GetSchema", &request, None);
        Err(Status::unimplemented("GetSchema"))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = request.get_ref().ticket.clone();
        self.record("DoGet", &request, Some(ticket.clone()));
        let total = rows_asked(&ticket);
        let schema = rows_schema();
        let batches: BoxStream<'static, _> = stream::iter((0..total).step_by(10_000))
            .map(move |start| {
                let end = (start + 10_000).min(total);
                let values: Vec<i64> = (start..end).map(|i| i as i64).collect();
                RecordBatch::try_new(rows_schema(), vec![Arc::new(Int64Array::from(values))])
                    .map_err(Into::into)
            })
            .boxed();
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(|e| Status::internal(e.to_string()));
        Ok(Response::new(Box::pin(encoded)))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.record("DoPut", &request, None);
        let mut incoming = request.into_inner();
        while incoming.message().await?.is_some() {}
        Ok(Response::new(Box::pin(stream::iter([Ok(PutResult {
            app_metadata: Bytes::from_static(b"stored"),
        })]))))
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.record("DoExchange", &request, None);
        Err(Status::unimplemented("DoExchange"))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.record("DoAction", &request, None);
        Err(Status::unimplemented("DoAction"))
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.record("ListActions", &request, None);
        Ok(Response::new(Box::pin(stream::empty())))
    }
}
