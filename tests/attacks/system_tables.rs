//! F4: InfluxDB 3 SQL is not confined to the request's database.
//!
//! The proxy authorizes `/api/v3/query_sql` (and SQL Flight tickets) as a
//! read of the request's database only ("InfluxDB 3 SQL cannot reach
//! across databases"). But every database's `system` schema in InfluxDB 3
//! (influxdb3_system_tables/src/lib.rs, `AllSystemSchemaTablesProvider`)
//! holds server-wide tables: `system.queries` is the one query log of the
//! whole server (influxdb3_query_executor: `Arc::clone(&self.query_log)`
//! for every namespace; no database column, no filter), and
//! `system.processing_engine_logs` the one event store of every trigger. A
//! token for `x` reads the text of every query run against every database
//! (with the literal values in their WHERE clauses) and every plugin's log.

use crate::common::proxy::{request, send};

use super::support::Env;

const QUERIES: &[&str] = &[
    "SELECT query_text FROM system.queries",
    "select * from SYSTEM.QUERIES",
    "SELECT query_text FROM \"system\".\"queries\" WHERE query_text LIKE '%secret%'",
    "SELECT * FROM system.processing_engine_logs",
    "SELECT 1 AS a UNION ALL SELECT count(*) FROM system . queries",
    // sqlparser reads a string in quotes as a name where it expects one
    // (`Parser::parse_identifier`), and DataFusion keeps it as written.
    "SELECT query_text FROM 'system'.queries",
    "SELECT query_text FROM 'system'.'queries'",
    // Escape and Unicode strings spell the name without its letters; no
    // identifier to sqlparser 0.59, refused all the same.
    "SELECT query_text FROM E'\\x73ystem'.queries",
    "SELECT query_text FROM U&'\\0073ystem'.queries",
];

#[tokio::test]
async fn sql_over_the_http_api_cannot_read_the_server_wide_system_tables() {
    let env = Env::start(None).await;
    let auth = format!("Token {}", env.x);
    for q in QUERIES {
        let encoded: String = form_urlencoded::byte_serialize(q.as_bytes()).collect();
        let get = send(request(
            "GET",
            &env.proxy
                .url(&format!("/api/v3/query_sql?db=x&q={encoded}")),
            &[("authorization", auth.as_str())],
            "",
        ))
        .await;
        let body = serde_json::json!({"db": "x", "q": q}).to_string();
        let post = send(request(
            "POST",
            &env.proxy.url("/api/v3/query_sql"),
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            body,
        ))
        .await;
        assert_eq!(
            env.upstream.count(),
            0,
            "{q:?} with a token reading x only was forwarded (GET {}, POST {}): InfluxDB 3 answers it with every database's queries or plugin logs",
            get.status,
            post.status
        );
    }
}

#[tokio::test]
async fn sql_flight_tickets_cannot_read_the_server_wide_system_tables() {
    let env = Env::start(None).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", env.proxy.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = arrow_flight::FlightClient::new(channel);
    client
        .add_header("authorization", &format!("Bearer {}", env.x))
        .unwrap();
    let ticket = serde_json::json!({
        "database": "x",
        "sql_query": "SELECT query_text FROM system.queries",
        "query_type": "sql",
    })
    .to_string();
    // The capturing upstream answers no Flight data; what matters is
    // whether the ticket reached it.
    let _ = client
        .do_get(arrow_flight::Ticket::new(ticket))
        .await
        .map(|_| ());
    assert_eq!(
        env.upstream.count(),
        0,
        "a SQL ticket reading system.queries was forwarded for a token reading x only"
    );
}
