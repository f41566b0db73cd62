//! The Flight side of a test: the real token service, a proxy in front of
//! a [`FlightUpstream`], and arrow-flight's own clients, with the ticket
//! forms InfluxDB 3 reads.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::{FlightClient, Ticket};
use bytes::Bytes;
use fluxgate::authz::Authorizer;
use fluxgate::authz::client::AuthzClient;
use fluxgate::proxy::flight::ticket::{READ_INFO_TYPE_URL, ReadInfo};
use futures_util::TryStreamExt as _;
use prost::Message as _;
use tonic::Code;
use tonic::transport::Channel;

use super::TokenServer;
use super::flight::FlightUpstream;
use super::proxy::{ProxyServer, flight_settings};

/// A proxy with a Flight upstream.
pub struct Env {
    pub tokens: TokenServer,
    pub upstream: FlightUpstream,
    pub proxy: ProxyServer,
}

pub async fn env_with(allow: &[&str], credential: Option<&'static str>) -> Env {
    let tokens = TokenServer::start().await;
    let upstream = FlightUpstream::start().await;
    let authorizer: Arc<dyn Authorizer> = Arc::new(AuthzClient::for_uri(
        tokens.url().parse().unwrap(),
        Duration::from_secs(2),
    ));
    let proxy = ProxyServer::start_flight(
        authorizer,
        "http://127.0.0.1:9",
        &upstream.url(),
        flight_settings(allow),
        credential.map(http::HeaderValue::from_static),
    )
    .await;
    Env {
        tokens,
        upstream,
        proxy,
    }
}

pub async fn env() -> Env {
    env_with(&[], None).await
}

pub async fn channel(proxy: &ProxyServer) -> Channel {
    Channel::from_shared(format!("http://{}", proxy.addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub async fn client(proxy: &ProxyServer, token: Option<&str>) -> FlightClient {
    let mut c = FlightClient::new(channel(proxy).await);
    if let Some(t) = token {
        c.add_header("authorization", &format!("Bearer {t}"))
            .unwrap();
    }
    c
}

/// The gRPC code of a failed Flight call.
pub fn code(e: arrow_flight::error::FlightError) -> Code {
    match e {
        arrow_flight::error::FlightError::Tonic(status) => status.code(),
        other => panic!("not a gRPC status: {other:?}"),
    }
}

/// Runs DoGet and counts the rows, or returns the gRPC code.
pub async fn rows(c: &mut FlightClient, ticket: impl Into<Bytes>) -> Result<usize, Code> {
    let stream = c.do_get(Ticket::new(ticket)).await.map_err(code)?;
    let batches: Vec<_> = stream.try_collect().await.map_err(code)?;
    Ok(batches.iter().map(|b| b.num_rows()).sum())
}

pub fn json_ticket(db: &str, query: &str, kind: &str) -> Vec<u8> {
    serde_json::json!({"database": db, "sql_query": query, "query_type": kind})
        .to_string()
        .into_bytes()
}

pub fn read_info(db: &str, query: &str, kind: i32) -> ReadInfo {
    ReadInfo {
        database: db.to_owned(),
        sql_query: query.to_owned(),
        query_type: kind,
        ..Default::default()
    }
}

pub fn any_ticket(info: &ReadInfo) -> Vec<u8> {
    prost_types::Any {
        type_url: READ_INFO_TYPE_URL.to_owned(),
        value: info.encode_to_vec(),
    }
    .encode_to_vec()
}
