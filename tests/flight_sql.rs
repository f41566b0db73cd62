//! Flight SQL through the proxy (arrow-flight's Flight SQL client, a real
//! arrow-flight server upstream): the database comes from the request
//! metadata, and the SQL a command carries — a statement, or a prepared
//! statement whose handle is the query, as InfluxDB 3 writes it — is
//! decided like any other SQL: InfluxDB 3's server-wide system tables need
//! read on every database, its token table is never readable, and what is
//! forwarded is the command re-encoded.
#![allow(clippy::unwrap_used)]

mod common;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    Any, CommandGetTables, CommandPreparedStatementQuery, CommandStatementQuery, ProstMessageExt,
};
use arrow_flight::{FlightDescriptor, FlightInfo};
use common::flight_client::{any_ticket, channel, client, code, env, rows};
use common::proxy::ProxyServer;
use fluxgate::proxy::flight::sql::{HANDLE_TYPE_URL, PreparedStatementHandle};
use fluxgate::proxy::flight::ticket::{ReadInfo, query_type};
use futures_util::TryStreamExt as _;
use prost::Message as _;
use tonic::Code;
use tonic::transport::Channel;

async fn sql_client(proxy: &ProxyServer, token: &str) -> FlightSqlServiceClient<Channel> {
    let mut c = FlightSqlServiceClient::new(channel(proxy).await);
    c.set_token(token.to_owned());
    c
}

#[tokio::test]
async fn flight_sql_get_flight_info_uses_the_database_metadata() {
    let e = env().await;
    let (_, t) = e.tokens.database_token(&[("mydb", true, false)]).await;
    let mut c = sql_client(&e.proxy, &t).await;
    c.set_header("database", "mydb");
    let info: FlightInfo = c.execute("SELECT 1".to_owned(), None).await.unwrap();
    let call = e.upstream.last();
    assert_eq!(call.method, "GetFlightInfo");
    assert_eq!(call.metadata["database"], "mydb");
    assert!(call.metadata.get("authorization").is_none());
    // The ticket InfluxDB hands out (Any-wrapped ReadInfo) is authorized too.
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<_> = c.do_get(ticket).await.unwrap().try_collect().await.unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);

    let mut c = sql_client(&e.proxy, &t).await;
    c.set_header("bucket-name", "other");
    let err = c.execute("SELECT 1".to_owned(), None).await.unwrap_err();
    assert_eq!(code(err), Code::PermissionDenied);

    let mut c = sql_client(&e.proxy, &t).await;
    c.set_header("database", "mydb");
    c.set_header("iox-namespace-name", "other");
    let err = c.execute("SELECT 1".to_owned(), None).await.unwrap_err();
    assert_eq!(code(err), Code::InvalidArgument);

    let mut c = sql_client(&e.proxy, &t).await;
    let err = c.execute("SELECT 1".to_owned(), None).await.unwrap_err();
    assert_eq!(code(err), Code::InvalidArgument);
    assert_eq!(e.upstream.calls().len(), 2);
}

/// A DoGet ticket carrying a Flight SQL command, as InfluxDB 3's
/// GetFlightInfo hands them out.
fn command_ticket(db: &str, command: &Any) -> Vec<u8> {
    any_ticket(&ReadInfo {
        database: db.to_owned(),
        query_type: query_type::FLIGHT_SQL_MESSAGE,
        flightsql_command: command.encode_to_vec(),
        ..Default::default()
    })
}

fn statement(sql: &str) -> Any {
    CommandStatementQuery {
        query: sql.to_owned(),
        transaction_id: None,
    }
    .as_any()
}

/// A prepared statement written by the caller: InfluxDB keeps no state, the
/// handle is the query.
fn prepared(sql: &str, legacy: bool) -> Any {
    let handle = if legacy {
        sql.as_bytes().to_vec()
    } else {
        prost_types::Any {
            type_url: HANDLE_TYPE_URL.to_owned(),
            value: PreparedStatementHandle {
                query: sql.to_owned(),
                params: None,
            }
            .encode_to_vec(),
        }
        .encode_to_vec()
    };
    CommandPreparedStatementQuery {
        prepared_statement_handle: handle.into(),
    }
    .as_any()
}

/// GetFlightInfo for `descriptor` on database mydb, as a raw Flight call.
async fn descriptor_info(
    proxy: &ProxyServer,
    token: &str,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Code> {
    let mut raw = FlightServiceClient::new(channel(proxy).await);
    let mut request = tonic::Request::new(descriptor);
    request
        .metadata_mut()
        .insert("database", "mydb".parse().unwrap());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    raw.get_flight_info(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| s.code())
}

async fn flight_info(proxy: &ProxyServer, token: &str, command: &Any) -> Result<FlightInfo, Code> {
    descriptor_info(
        proxy,
        token,
        FlightDescriptor::new_cmd(command.encode_to_vec()),
    )
    .await
}

const SERVER_WIDE: [&str; 3] = [
    "SELECT query_text FROM system.queries -- rows=1",
    "select * from SYSTEM . \"queries\" -- rows=1",
    "SELECT * FROM system.processing_engine_logs -- rows=1",
];

#[tokio::test]
async fn server_wide_system_tables_need_every_database_through_every_flight_sql_form() {
    let e = env().await;
    let (_, mydb) = e.tokens.database_token(&[("mydb", true, false)]).await;
    let (_, all) = e.tokens.database_token(&[("*", true, false)]).await;
    for sql in SERVER_WIDE {
        let commands = [statement(sql), prepared(sql, false), prepared(sql, true)];
        for command in &commands {
            let before = e.upstream.calls().len();
            let mut c = client(&e.proxy, Some(&mydb)).await;
            assert_eq!(
                rows(&mut c, command_ticket("mydb", command)).await,
                Err(Code::PermissionDenied),
                "{sql}"
            );
            assert_eq!(
                flight_info(&e.proxy, &mydb, command).await,
                Err(Code::PermissionDenied),
                "{sql}"
            );
            assert_eq!(e.upstream.calls().len(), before, "{sql} was forwarded");

            // A token reading every database reads them.
            let mut c = client(&e.proxy, Some(&all)).await;
            assert_eq!(rows(&mut c, command_ticket("mydb", command)).await, Ok(1));
        }
        let mut c = sql_client(&e.proxy, &mydb).await;
        c.set_header("database", "mydb");
        let err = c.execute(sql.to_owned(), None).await.unwrap_err();
        assert_eq!(code(err), Code::PermissionDenied, "{sql}");
        let mut c = sql_client(&e.proxy, &all).await;
        c.set_header("database", "mydb");
        c.execute(sql.to_owned(), None).await.unwrap();
    }
}

#[tokio::test]
async fn the_upstreams_token_table_is_never_readable() {
    let e = env().await;
    let (_, all) = e.tokens.database_token(&[("*", true, false)]).await;
    let mut c = client(&e.proxy, Some(&all)).await;
    for command in [
        statement("SELECT * FROM system.tokens"),
        prepared("SELECT * FROM system.tokens", true),
    ] {
        assert_eq!(
            rows(&mut c, command_ticket("_internal", &command)).await,
            Err(Code::PermissionDenied)
        );
    }
    assert!(e.upstream.calls().is_empty());
}

#[tokio::test]
async fn commands_are_forwarded_re_encoded_and_unknown_ones_refused() {
    let e = env().await;
    let (_, t) = e.tokens.database_token(&[("mydb", true, false)]).await;
    let mut c = client(&e.proxy, Some(&t)).await;
    // The legacy raw handle goes upstream in the Any form InfluxDB reads the same.
    let sent = command_ticket("mydb", &prepared("SELECT 1 -- rows=2", true));
    assert_eq!(rows(&mut c, sent.clone()).await, Ok(2));
    let forwarded = e.upstream.last().ticket.unwrap();
    assert_eq!(
        &forwarded[..],
        &command_ticket("mydb", &prepared("SELECT 1 -- rows=2", false))[..]
    );
    // Catalog listings carry no SQL.
    let tables = CommandGetTables::default().as_any();
    assert_eq!(rows(&mut c, command_ticket("mydb", &tables)).await, Ok(3));

    let before = e.upstream.calls().len();
    for refused in [
        // Not a Flight SQL command.
        command_ticket(
            "mydb",
            &Any {
                type_url: "type.googleapis.com/x.Y".into(),
                value: Default::default(),
            },
        ),
        // A query text and a command at once (InfluxDB refuses it, then
        // tries the bytes as JSON).
        any_ticket(&ReadInfo {
            database: "mydb".into(),
            sql_query: "SELECT * FROM system.queries".into(),
            query_type: query_type::FLIGHT_SQL_MESSAGE,
            flightsql_command: statement("SELECT 1").encode_to_vec(),
            ..Default::default()
        }),
        any_ticket(&ReadInfo {
            database: "mydb".into(),
            sql_query: "SELECT 1".into(),
            query_type: query_type::SQL,
            flightsql_command: statement("SELECT * FROM system.queries").encode_to_vec(),
            ..Default::default()
        }),
    ] {
        assert_eq!(rows(&mut c, refused).await, Err(Code::InvalidArgument));
    }
    // A GetFlightInfo descriptor that is not a Flight SQL command.
    let raw = FlightDescriptor::new_cmd(b"SELECT 1".to_vec());
    assert_eq!(
        descriptor_info(&e.proxy, &t, raw).await,
        Err(Code::InvalidArgument)
    );
    assert_eq!(e.upstream.calls().len(), before);
}

#[tokio::test]
async fn influxql_planned_by_get_flight_info_is_decided_as_influxql() {
    let e = env().await;
    let (_, t) = e.tokens.database_token(&[("mydb", true, false)]).await;
    let mut c = sql_client(&e.proxy, &t).await;
    c.set_header("database", "mydb");
    c.set_header("x-influxdata-query-language", "InfluxQL");
    let err = c
        .execute("SELECT * FROM other..m".to_owned(), None)
        .await
        .unwrap_err();
    assert_eq!(code(err), Code::PermissionDenied);
    let mut c = sql_client(&e.proxy, &t).await;
    c.set_header("database", "mydb");
    c.set_header("x-influxdata-query-language", "influxql");
    c.execute("SELECT * FROM m".to_owned(), None).await.unwrap();
}
